import type { Logger } from 'pino';
import type { MaintenanceOutcome, MaintenanceRequest } from '../actors/maintenance-job';
import type { Bus } from '../bus/bus';
import { encodeJson } from '../bus/codec';
import type { BackupEvent, Subjects } from '../bus/subjects';
import { listBackups, pruneBackups, toTablekeeperError } from '../store';
import type { Config } from './config';
import type { HistoryEntry, HistoryStore } from './history';
import type { Clock } from './schedule';

/** Who asked for a run. */
export type Trigger = 'scheduled' | 'manual';

/** One table's part in a backup run. */
export interface BackupResult {
  table: string;
  status: 'ok' | 'failed';
  durationMs: number;
  bytes?: number;
  records?: number;
  file?: string;
  pruned?: number;
  error?: { code: string; message: string };
}

/** One table's part in a compaction run. */
export interface CompactionRunResult {
  table: string;
  status: 'compacted' | 'skipped' | 'error';
  durationMs: number;
  attempts: number;
  bytesBefore?: number;
  bytesAfter?: number;
  pausedMs?: number;
  fragmentation?: number;
  reason?: string;
  error?: { code: string; message: string };
}

/** What the orchestrator needs from around it. */
export interface MaintenanceDeps {
  config: Config;
  bus: Bus;
  subjects: Subjects;
  logger: Logger;
  clock: Clock;
  history: HistoryStore;
  /** Runs a request on the table's owner (rejects `unavailable` if it is not serving). */
  submit(table: string, request: MaintenanceRequest): Promise<MaintenanceOutcome>;
}

function errorBody(err: unknown): { code: string; message: string } {
  const e = toTablekeeperError(err);
  return { code: e.code, message: e.message };
}

/**
 * Runs backups and compactions: serialised per table (a table's backup and
 * compaction never overlap), one table after another within a run, so one
 * table's maintenance never holds up another table's requests. Every run is
 * recorded in history and published on `backups.*`.
 */
export class Maintenance {
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: MaintenanceDeps) {}

  /** Runs `fn` after every earlier maintenance of `table` has settled. */
  private exclusive<T>(table: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(table) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(table, tail);
    void tail.then(() => {
      if (this.chains.get(table) === tail) this.chains.delete(table);
    });
    return run;
  }

  /** True while any maintenance of `table` is queued or running. */
  busy(table: string): boolean {
    return this.chains.has(table);
  }

  private publish(event: BackupEvent, body: Record<string, unknown>): void {
    const at = new Date(this.deps.clock.now()).toISOString();
    try {
      this.deps.bus.publish(this.deps.subjects.backupEvent(event), encodeJson({ event, at, ...body }));
    } catch (err) {
      this.deps.logger.error({ err, event }, 'could not publish event');
    }
  }

  private async record(entry: Omit<HistoryEntry, 'at'>): Promise<void> {
    try {
      await this.deps.history.add({ at: new Date(this.deps.clock.now()).toISOString(), ...entry });
    } catch (err) {
      this.deps.logger.error({ err, table: entry.table, kind: entry.kind }, 'could not record history');
    }
  }

  /** Backs up `tables` one after another; keeps the newest `backup.keep` per table. */
  async backup(tables: string[], trigger: Trigger): Promise<{ results: BackupResult[]; durationMs: number }> {
    const { config, clock, logger } = this.deps;
    const started = clock.now();
    const results: BackupResult[] = [];
    for (const table of tables) {
      const t0 = clock.now();
      try {
        const outcome = await this.exclusive(table, () =>
          this.deps.submit(table, { kind: 'backup', backupDir: config.backupDir }),
        );
        if (outcome.kind !== 'backup') throw new Error('owner answered a backup with another kind of result');
        const m = outcome.manifest;
        const pruned = await pruneBackups(config.backupDir, table, config.backup.keep);
        const result: BackupResult = {
          table,
          status: 'ok',
          durationMs: clock.now() - t0,
          bytes: m.length,
          records: m.liveKeys,
          file: m.name,
          pruned: pruned.length,
        };
        results.push(result);
        logger.info({ table, op: 'backup', bytes: m.length, ms: result.durationMs, trigger }, 'backup verified');
        await this.record({ kind: 'backup', table, result: 'ok', trigger, durationMs: result.durationMs, bytes: m.length, detail: { file: m.name, records: m.liveKeys, generation: m.generation, sha256: m.sha256 } });
      } catch (err) {
        const error = errorBody(err);
        const result: BackupResult = { table, status: 'failed', durationMs: clock.now() - t0, error };
        results.push(result);
        logger.error({ table, op: 'backup', err, trigger }, 'backup failed');
        await this.record({ kind: 'backup', table, result: 'failed', trigger, durationMs: result.durationMs, error: error.message });
        this.publish('backup_failed', { table, trigger, error });
      }
    }
    const durationMs = clock.now() - started;
    const ok = results.filter((r) => r.status === 'ok');
    if (ok.length > 0) {
      this.publish('backup_complete', {
        trigger,
        durationMs,
        bytes: ok.reduce((n, r) => n + (r.bytes ?? 0), 0),
        tables: ok.map(({ table, bytes, durationMs: ms, records, file }) => ({ table, bytes, durationMs: ms, records, file })),
        failed: results.filter((r) => r.status === 'failed').map((r) => r.table),
      });
    }
    return { results, durationMs };
  }

  /**
   * Compacts `tables` one after another. A table under the threshold is
   * skipped unless `force`; a failed compaction is retried once, then waits
   * for the next run. Delete records newer than the oldest retained backup
   * are kept, so no retained backup can bring a deleted key back.
   */
  async compact(tables: string[], opts: { force: boolean; trigger: Trigger }): Promise<{ results: CompactionRunResult[]; durationMs: number }> {
    const { config, clock, logger } = this.deps;
    const started = clock.now();
    const results: CompactionRunResult[] = [];
    for (const table of tables) {
      const t0 = clock.now();
      let attempts = 0;
      let result: CompactionRunResult | undefined;
      while (!result) {
        attempts++;
        try {
          const outcome = await this.exclusive(table, async () => {
            const backups = await listBackups(config.backupDir, table);
            const keepTombstonesAbove = backups.length === 0 ? undefined : Math.min(...backups.map((b: { maxSeq: number }) => b.maxSeq));
            return this.deps.submit(table, { kind: 'compact', force: opts.force, threshold: config.compaction.threshold, keepTombstonesAbove });
          });
          if (outcome.kind !== 'compact') throw new Error('owner answered a compaction with another kind of result');
          result =
            outcome.status === 'skipped'
              ? { table, status: 'skipped', durationMs: clock.now() - t0, attempts, fragmentation: outcome.fragmentation, reason: outcome.reason }
              : {
                  table,
                  status: 'compacted',
                  durationMs: clock.now() - t0,
                  attempts,
                  bytesBefore: outcome.result.bytesBefore,
                  bytesAfter: outcome.result.bytesAfter,
                  pausedMs: outcome.result.pausedMs,
                  fragmentation: outcome.fragmentationBefore,
                };
        } catch (err) {
          logger.warn({ table, op: 'compact', attempt: attempts, err }, 'compaction failed');
          if (attempts >= 2) result = { table, status: 'error', durationMs: clock.now() - t0, attempts, error: errorBody(err) };
        }
      }
      results.push(result);
      if (result.status === 'compacted') {
        logger.info({ table, op: 'compact', before: result.bytesBefore, after: result.bytesAfter, ms: result.durationMs, pausedMs: result.pausedMs }, 'compaction done');
      }
      await this.record({
        kind: 'compaction',
        table,
        result: result.status === 'compacted' ? 'ok' : result.status === 'skipped' ? 'skipped' : 'failed',
        trigger: opts.trigger,
        durationMs: result.durationMs,
        bytes: result.bytesAfter,
        detail: { bytesBefore: result.bytesBefore, fragmentation: result.fragmentation, reason: result.reason, attempts, pausedMs: result.pausedMs },
        error: result.error?.message,
      });
    }
    const durationMs = clock.now() - started;
    this.publish('compaction_complete', { trigger: opts.trigger, durationMs, results });
    const failed = results.filter((r) => r.status === 'error');
    if (failed.length > 0) this.publish('compaction_failed', { trigger: opts.trigger, results: failed });
    return { results, durationMs };
  }
}
