import * as path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { TableFile } from '../store';

/** One maintenance run, as kept in history and returned by `admin.history`. */
export interface HistoryEntry {
  /** ISO time the run finished. */
  at: string;
  kind: 'backup' | 'compaction' | 'recovery';
  table: string;
  result: 'ok' | 'skipped' | 'failed';
  trigger: 'scheduled' | 'manual' | 'auto';
  durationMs: number;
  /** Bytes written (backup), or the file size after (compaction). */
  bytes?: number;
  detail?: Record<string, unknown>;
  error?: string;
}

const ENTRY_PREFIX = 'h:';
const STATE_PREFIX = 's:';

/**
 * Maintenance history and schedule state, persisted in an internal table
 * (`<dataDir>/.tablekeeper/history.tkt`, outside the configured tables'
 * name space) so they survive restarts. Keeps the newest `limit` entries.
 */
export class HistoryStore {
  private seq = 0;

  private constructor(
    private readonly file: TableFile,
    private readonly limit: number,
  ) {}

  /** Opens (or creates) the history table. */
  static async open(dataDir: string, opts: { limit?: number; logger?: Logger } = {}): Promise<HistoryStore> {
    const dir = path.join(dataDir, '.tablekeeper');
    await mkdir(dir, { recursive: true });
    const file = await TableFile.open({ table: '_history', path: path.join(dir, 'history.tkt'), logger: opts.logger });
    const store = new HistoryStore(file, opts.limit ?? 1000);
    const newest = store.keys(ENTRY_PREFIX).at(-1);
    store.seq = newest ? Number(newest.slice(newest.lastIndexOf(':') + 1)) + 1 : 0;
    return store;
  }

  private keys(prefix: string): string[] {
    const out: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = this.file.select({ prefix, after, limit: 1000 });
      for (const item of page.items) out.push(item.key);
      if (page.next === undefined) return out;
      after = page.next;
    }
  }

  /** Appends an entry (durably) and trims the oldest beyond the limit. */
  async add(entry: HistoryEntry): Promise<void> {
    // Keys sort by time, then by a counter that survives restarts.
    const key = `${ENTRY_PREFIX}${entry.at}:${String(this.seq++).padStart(12, '0')}`;
    await this.file.put(key, Buffer.from(JSON.stringify(entry)));
    const keys = this.keys(ENTRY_PREFIX);
    for (let i = 0; i < keys.length - this.limit; i++) await this.file.delete(keys[i]);
  }

  /** The newest entries first, optionally filtered. */
  recent(limit: number, filter?: (e: HistoryEntry) => boolean): HistoryEntry[] {
    const keys = this.keys(ENTRY_PREFIX);
    const out: HistoryEntry[] = [];
    for (let i = keys.length - 1; i >= 0 && out.length < limit; i--) {
      const raw = this.file.get(keys[i]);
      if (!raw) continue;
      const entry = JSON.parse(raw.toString('utf8')) as HistoryEntry;
      if (!filter || filter(entry)) out.push(entry);
    }
    return out;
  }

  /** Reads a persisted state value (e.g. a schedule's last run). */
  getState<T>(name: string): T | undefined {
    const raw = this.file.get(`${STATE_PREFIX}${name}`);
    return raw ? (JSON.parse(raw.toString('utf8')) as T) : undefined;
  }

  /** Persists a state value durably. */
  async setState(name: string, value: unknown): Promise<void> {
    await this.file.put(`${STATE_PREFIX}${name}`, Buffer.from(JSON.stringify(value)));
  }

  /** Removes a persisted state value durably (no-op when absent). */
  async deleteState(name: string): Promise<void> {
    await this.file.delete(`${STATE_PREFIX}${name}`);
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
