import * as path from 'node:path';
import { mkdir, rename } from 'node:fs/promises';
import type { Logger } from 'pino';
import { TableCorruptError, TableFile, tableLogger } from '../store';
import { ensureQuarantineDir, quarantinePath, syncDir } from './recovery-journal';

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

/** Why the history table was started fresh at open (see HistoryStore.open). */
export interface HistoryReset {
  reason: string;
  /** Where the damaged file was moved, or null when it was left in place. */
  quarantined: string | null;
  /** False when the fresh history is kept in memory only, until the next start. */
  persisted: boolean;
}

/** What the history needs from its table: the history file, or a MemoryTable when no file can be used. */
interface HistoryTable {
  get(key: string): Buffer | undefined;
  put(key: string, value: Buffer): Promise<unknown>;
  delete(key: string): Promise<unknown>;
  select(opts: { prefix?: string; after?: string; limit?: number }): { items: { key: string; value: Buffer }[]; next?: string };
  stats(): HistoryStats;
  compact(): Promise<{ bytesBefore: number; bytesAfter: number }>;
  close(): Promise<void>;
}

/** Space accounting of the history table. */
export interface HistoryStats {
  fileBytes: number;
  deadBytes: number;
  fragmentation: number;
  generation: number;
}

/** A history table in memory, for when the file cannot be opened or replaced: maintenance goes on, unpersisted. */
class MemoryTable implements HistoryTable {
  private readonly map = new Map<string, Buffer>();

  get(key: string): Buffer | undefined {
    return this.map.get(key);
  }

  async put(key: string, value: Buffer): Promise<void> {
    this.map.set(key, value);
  }

  async delete(key: string): Promise<boolean> {
    return this.map.delete(key);
  }

  select(opts: { prefix?: string; after?: string; limit?: number }): { items: { key: string; value: Buffer }[]; next?: string } {
    const prefix = opts.prefix ?? '';
    const limit = opts.limit ?? 1000;
    const keys = [...this.map.keys()].filter((k) => k.startsWith(prefix) && (opts.after === undefined || k > opts.after)).sort();
    const items = keys.slice(0, limit).map((key) => ({ key, value: this.map.get(key) as Buffer }));
    return items.length === limit && keys.length > limit ? { items, next: items[items.length - 1].key } : { items };
  }

  stats(): HistoryStats {
    return { fileBytes: 0, deadBytes: 0, fragmentation: 0, generation: 0 };
  }

  async compact(): Promise<{ bytesBefore: number; bytesAfter: number }> {
    return { bytesBefore: 0, bytesAfter: 0 };
  }

  async close(): Promise<void> {
    this.map.clear();
  }
}

/** When the history table compacts itself. */
export interface HistoryCompaction {
  /** Dead bytes at or above which it compacts (with `fragmentation`). */
  deadBytes: number;
  fragmentation: number;
}

const ENTRY_PREFIX = 'h:';
const STATE_PREFIX = 's:';
// Scrub state alone rewrites ~2 KiB an hour with nine tables: a few days' worth.
const DEFAULT_COMPACTION: HistoryCompaction = { deadBytes: 256 * 1024, fragmentation: 0.5 };

/** The entries of one kind for one table, in the order they were added (oldest first). */
interface Group {
  keys: string[];
  results: HistoryEntry['result'][];
  /** The newest entry (the one under keys.at(-1)). */
  last: HistoryEntry | undefined;
}

/** The counter at the end of an entry key (`h:<at>:<counter>`): the order entries were added in. */
function counterOf(key: string): number {
  return Number(key.slice(key.lastIndexOf(':') + 1));
}

/**
 * Entry keys in the order they were added: by counter, not by the time in
 * front of it, which a clock set back puts before older entries. Files written
 * before the history ordered by counter can hold a counter twice (the counter
 * went on from the key with the latest time, not the highest counter); those
 * go by time.
 */
function byAdded(a: string, b: string): number {
  return counterOf(a) - counterOf(b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** Index of the first element of `list` (sorted by byAdded) that is not before `key`. */
function lowerBound(list: string[], key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (byAdded(list[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// History files being closed in this process, by path: an open waits for
// the close of an earlier store of the same file (a maintenance actor
// restarted after a crash opens it again while the old one still closes;
// two stores would be two writers of one log).
const closingFiles = new Map<string, Promise<void>>();

/** The history's own table, as logs, events and metrics name it (its file is `history.tkt`). */
export const HISTORY_TABLE = '_history';

/**
 * Maintenance history and schedule state, persisted in an internal table
 * (`<dataDir>/.tablekeeper/history.tkt`, outside the configured tables'
 * name space) so they survive restarts. Keeps the newest `limit` entries per
 * kind and table, indexed in memory (loaded once at open), so the last run
 * and the counts of a table cost no file reads; it compacts itself once dead
 * records pass a threshold.
 */
export class HistoryStore {
  private seq = 0;
  // Every entry key, in the order added (see byAdded).
  private readonly entries: string[] = [];
  private readonly groups = new Map<string, Group>();
  private compacting: Promise<void> | undefined;
  private closed = false;

  private constructor(
    private readonly file: HistoryTable,
    private readonly limit: number,
    private readonly compaction: HistoryCompaction,
    private readonly logger: Logger | undefined,
    /** Set when the file could not be opened and was replaced by an empty one. */
    readonly reset: HistoryReset | undefined,
    /** Path of the history file (also when the history is kept in memory). */
    private readonly path: string,
  ) {}

  /**
   * Opens (or creates) the history table. A damaged file is moved to the
   * quarantine folder and an empty history started in its place; a file that
   * cannot be opened for another reason (or moved) is left where it is and
   * the history kept in memory until the next start. Either way maintenance
   * and recovery keep working, and `reset` says what happened. Never rejects.
   */
  static async open(
    dataDir: string,
    opts: { limit?: number; logger?: Logger; now?: () => number; compaction?: HistoryCompaction } = {},
  ): Promise<HistoryStore> {
    const dir = path.join(dataDir, '.tablekeeper');
    const file = path.join(dir, 'history.tkt');
    const logger = opts.logger && tableLogger(opts.logger, HISTORY_TABLE);
    const make = async (table: HistoryTable, reset?: HistoryReset): Promise<HistoryStore> => {
      const store = new HistoryStore(table, opts.limit ?? 1000, opts.compaction ?? DEFAULT_COMPACTION, logger, reset, file);
      await store.load();
      return store;
    };
    await closingFiles.get(file);
    let reason: string;
    let moved: string | null = null;
    try {
      await mkdir(dir, { recursive: true });
      return await make(await TableFile.open({ table: HISTORY_TABLE, path: file, logger }));
    } catch (err) {
      reason = err instanceof Error ? err.message : String(err);
      // Only damage is moved aside: a file that failed to open for another reason (EMFILE, EACCES) may be whole.
      if (err instanceof TableCorruptError) {
        try {
          ensureQuarantineDir(dataDir);
          const to = quarantinePath(dataDir, HISTORY_TABLE, new Date((opts.now ?? Date.now)()));
          await rename(file, to);
          moved = to;
          await syncDir(dir);
          return await make(await TableFile.open({ table: HISTORY_TABLE, path: file, logger }), { reason, quarantined: to, persisted: true });
        } catch (moveErr) {
          logger?.error({ err: moveErr, op: 'open' }, 'could not replace the damaged history table');
        }
      }
    }
    return make(new MemoryTable(), { reason, quarantined: moved, persisted: false });
  }

  /** Reads every entry once to build the in-memory index; trims groups over the limit. */
  private async load(): Promise<void> {
    const loaded: { key: string; entry: HistoryEntry }[] = [];
    let after: string | undefined;
    for (;;) {
      const page = this.file.select({ prefix: ENTRY_PREFIX, after, limit: 1000 });
      for (const item of page.items) {
        try {
          loaded.push({ key: item.key, entry: JSON.parse(item.value.toString('utf8')) as HistoryEntry });
        } catch {
          continue;
        }
      }
      if (page.next === undefined) break;
      after = page.next;
    }
    // The file gives them by key, i.e. by time: put them in the order added.
    loaded.sort((a, b) => byAdded(a.key, b.key));
    let counter = -1;
    for (const { key, entry } of loaded) {
      this.entries.push(key);
      const group = this.group(entry.kind, entry.table);
      group.keys.push(key);
      group.results.push(entry.result);
      group.last = entry;
      // The highest counter, not the last key's: the newest entry of each group is never trimmed, so it survives restarts.
      const n = counterOf(key);
      if (n > counter) counter = n;
    }
    this.seq = counter + 1;
    for (const group of this.groups.values()) await this.trim(group);
    this.maybeCompact();
  }

  private group(kind: string, table: string): Group {
    const name = `${kind}\u0000${table}`;
    let group = this.groups.get(name);
    if (!group) {
      group = { keys: [], results: [], last: undefined };
      this.groups.set(name, group);
    }
    return group;
  }

  /** Deletes a group's oldest entries beyond the limit. */
  private async trim(group: Group): Promise<void> {
    while (group.keys.length > this.limit) {
      const key = group.keys[0];
      await this.file.delete(key);
      group.keys.shift();
      group.results.shift();
      const at = lowerBound(this.entries, key);
      if (this.entries[at] === key) this.entries.splice(at, 1);
    }
  }

  /** Appends an entry (durably) and trims the oldest of its kind and table beyond the limit. */
  async add(entry: HistoryEntry): Promise<void> {
    // Ordered by the counter (it survives restarts), not by the time: after a
    // clock set back, the entry just added is still the newest, the one
    // admin.health shows, and trimming drops the oldest added, not it. The
    // time stays in front so that the key format is the one of older files.
    const key = `${ENTRY_PREFIX}${entry.at}:${String(this.seq++).padStart(12, '0')}`;
    await this.file.put(key, Buffer.from(JSON.stringify(entry)));
    // At the end, but for adds not awaited one by one whose writes finish out of order.
    this.entries.splice(lowerBound(this.entries, key), 0, key);
    const group = this.group(entry.kind, entry.table);
    const at = lowerBound(group.keys, key);
    group.keys.splice(at, 0, key);
    group.results.splice(at, 0, entry.result);
    if (at === group.keys.length - 1) group.last = entry;
    // Written while the store closes: the entry is durable; trimming waits for the next open.
    if (this.closed) return;
    await this.trim(group);
    this.maybeCompact();
  }

  /** The newest entries first, optionally filtered. */
  recent(limit: number, filter?: (e: HistoryEntry) => boolean): HistoryEntry[] {
    const out: HistoryEntry[] = [];
    for (let i = this.entries.length - 1; i >= 0 && out.length < limit; i--) {
      const raw = this.file.get(this.entries[i]);
      if (!raw) continue;
      const entry = JSON.parse(raw.toString('utf8')) as HistoryEntry;
      if (!filter || filter(entry)) out.push(entry);
    }
    return out;
  }

  /** The newest entry of `kind` for `table`, from memory. */
  last(kind: HistoryEntry['kind'], table: string): HistoryEntry | undefined {
    return this.groups.get(`${kind}\u0000${table}`)?.last;
  }

  /** How many entries of `kind` for `table` are kept, and how many of them failed, from memory. */
  count(kind: HistoryEntry['kind'], table: string): { count: number; failed: number } {
    const group = this.groups.get(`${kind}\u0000${table}`);
    if (!group) return { count: 0, failed: 0 };
    return { count: group.keys.length, failed: group.results.filter((r) => r === 'failed').length };
  }

  /** Reads a persisted state value (e.g. a schedule's last run). */
  getState<T>(name: string): T | undefined {
    const raw = this.file.get(`${STATE_PREFIX}${name}`);
    return raw ? (JSON.parse(raw.toString('utf8')) as T) : undefined;
  }

  /** Persists a state value durably. */
  async setState(name: string, value: unknown): Promise<void> {
    await this.file.put(`${STATE_PREFIX}${name}`, Buffer.from(JSON.stringify(value)));
    this.maybeCompact();
  }

  /** Removes a persisted state value durably (no-op when absent). */
  async deleteState(name: string): Promise<void> {
    await this.file.delete(`${STATE_PREFIX}${name}`);
    this.maybeCompact();
  }

  /** Space accounting of the history table. */
  stats(): HistoryStats {
    return this.file.stats();
  }

  /**
   * Starts an online compaction when dead records pass the threshold; writes
   * go on meanwhile. A failure is logged and leaves the old file serving.
   */
  private maybeCompact(): void {
    if (this.compacting || this.closed) return;
    const { deadBytes, fragmentation } = this.file.stats();
    if (deadBytes < this.compaction.deadBytes || fragmentation < this.compaction.fragmentation) return;
    this.compacting = this.file
      .compact()
      .then(
        (r) => this.logger?.info({ op: 'compact', before: r.bytesBefore, after: r.bytesAfter }, 'history compacted'),
        (err: unknown) => this.logger?.warn({ op: 'compact', err }, 'history compaction failed'),
      )
      .finally(() => {
        this.compacting = undefined;
      });
  }

  /** Closes the file (a running compaction gives up first); a later open of the same file waits for this. */
  close(): Promise<void> {
    this.closed = true;
    const done = (async () => {
      try {
        await this.file.close();
      } finally {
        await this.compacting;
      }
    })();
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    closingFiles.set(this.path, settled);
    void settled.then(() => {
      if (closingFiles.get(this.path) === settled) closingFiles.delete(this.path);
    });
    return done;
  }
}
