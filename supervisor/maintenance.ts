import type { Logger } from 'pino';
import type { MaintenanceOutcome, MaintenanceRequest } from '../actors/maintenance-job';
import type { Bus } from '../bus/bus';
import { publishEvent } from '../bus/events';
import type { BackupEvent, Subjects } from '../bus/subjects';
import { ERROR_CODES } from '../bus/error-codes';
import { listBackups, pruneBackups, toTablekeeperError } from '../store';
import type { Config } from './config';
import type { HistoryEntry, HistoryStore } from './history';
import type { Clock } from './schedule';
import { finishRecovery, startRecovery, type OwnerControl, type RecoveryOutcome } from './recovery';
import type { RecoveryJournal } from './recovery-journal';

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
  /** Stops and starts owners for recovery runs. */
  owners: OwnerControl;
}

/** What set a recovery off. */
export interface CorruptionReport {
  reason: string;
  /** Who noticed: read, open, scrub, maintenance, operator. */
  source: string;
  offset?: number;
  /** Answers a `tables.<t>.corruption` request when the run is over. */
  reply?: (body: unknown) => void;
}

/** A table's last scrub, as shown by `admin.health`. */
export interface ScrubSummary {
  at: string;
  records: number;
  bytes: number;
  damagedRanges: number;
  fileMissing: boolean;
  durationMs: number;
}

/** A table started empty because nothing usable was left, until an operator clears it. */
export interface DegradedMark {
  since: string;
  reason: string;
  quarantined: string | null;
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
  // Recoveries queued or running, by table; later reports join the run.
  private readonly recoveries = new Map<string, { replies: ((body: unknown) => void)[]; run: Promise<RecoveryOutcome> }>();

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

  /** True while a recovery or restore of `table` is queued or running. */
  recovering(table: string): boolean {
    return this.recoveries.has(table);
  }

  /** True while any maintenance of `table` is queued or running. */
  busy(table: string): boolean {
    return this.chains.has(table);
  }

  private publish(event: BackupEvent, body: Record<string, unknown>): void {
    const at = new Date(this.deps.clock.now()).toISOString();
    try {
      publishEvent(this.deps.bus, this.deps.subjects, event, { event, at, ...body });
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

  /**
   * Recovers a damaged table (see recovery.ts): publishes
   * `corruption_detected`, then runs the cycle once the table's other
   * maintenance has settled. A report for a table already being recovered
   * joins that run. Resolves with the outcome (also published and recorded);
   * rejects RecoveryFailedError.
   */
  recover(table: string, report: CorruptionReport): Promise<RecoveryOutcome> {
    const pending = this.recoveries.get(table);
    if (pending) {
      if (report.reply) pending.replies.push(report.reply);
      return pending.run;
    }
    const detectedAt = this.deps.clock.now();
    this.deps.logger.error({ table, op: 'recover', source: report.source, reason: report.reason, offset: report.offset }, 'corruption detected; recovering');
    this.publish('corruption_detected', { table, source: report.source, reason: report.reason, offset: report.offset });
    const trigger = report.source === 'operator' ? 'manual' : 'auto';
    return this.track(table, trigger, report.reply, () =>
      startRecovery(this.recoveryDeps(), { table, mode: 'recover', trigger, reason: report.reason }, detectedAt),
    );
  }

  /** Rolls `table` back to its latest verified backup, exactly (`admin.restore.<t>`). */
  restore(table: string): Promise<RecoveryOutcome> {
    const pending = this.recoveries.get(table);
    if (pending) return pending.run;
    const startedAt = this.deps.clock.now();
    return this.track(table, 'manual', undefined, () =>
      startRecovery(this.recoveryDeps(), { table, mode: 'restore', trigger: 'manual', reason: 'operator restore' }, startedAt),
    );
  }

  /** Finishes a run a crash interrupted (its journal was found at start). */
  resume(journal: RecoveryJournal): Promise<RecoveryOutcome> {
    const startedAt = this.deps.clock.now();
    this.deps.logger.warn({ table: journal.table, op: journal.mode, startedAt: journal.startedAt }, 'finishing an interrupted recovery');
    return this.track(journal.table, journal.trigger, undefined, () => finishRecovery(this.recoveryDeps(), journal, startedAt));
  }

  /** The table left degraded by a recovery, if any (until an operator clears it). */
  degraded(table: string): DegradedMark | undefined {
    return this.deps.history.getState<DegradedMark>(`degraded.${table}`);
  }

  /** Clears a table's degraded mark (`admin.clear.<t>`); resolves with what was cleared, or null. */
  async clearDegraded(table: string): Promise<DegradedMark | null> {
    const mark = this.degraded(table);
    if (mark) await this.deps.history.deleteState(`degraded.${table}`);
    this.deps.logger.info({ table, op: 'clear', was: mark ?? null }, 'degraded mark cleared');
    return mark ?? null;
  }

  /** The last scrub of `table`, if any. */
  lastScrub(table: string): ScrubSummary | undefined {
    return this.deps.history.getState<ScrubSummary>(`scrub.${table}`);
  }

  /**
   * Verifies every record of `tables`, one table after another, throttled by
   * the owner so requests keep flowing. Damage makes the owner stop serving
   * the file and report it, which queues a recovery behind the scrub.
   */
  async scrub(tables: string[]): Promise<{ results: (ScrubSummary & { table: string; status: 'clean' | 'damaged' | 'skipped'; error?: { code: string; message: string } })[] }> {
    const results = [];
    for (const table of tables) {
      const at = new Date(this.deps.clock.now()).toISOString();
      try {
        const outcome = await this.exclusive(table, () => this.deps.submit(table, { kind: 'scrub' }));
        if (outcome.kind !== 'scrub') throw new Error('owner answered a scrub with another kind of result');
        const r = outcome.report;
        const summary: ScrubSummary = { at, records: r.records, bytes: r.bytes, damagedRanges: r.damaged.length, fileMissing: r.fileMissing, durationMs: r.durationMs };
        await this.deps.history.setState(`scrub.${table}`, summary).catch((err: unknown) => this.deps.logger.error({ err, table }, 'could not record the scrub'));
        const damaged = outcome.damage !== null;
        this.deps.logger[damaged ? 'error' : 'info']({ table, op: 'scrub', records: r.records, damaged: r.damaged.length, fileMissing: r.fileMissing, ms: r.durationMs }, damaged ? 'scrub found damage' : 'scrub clean');
        results.push({ table, status: damaged ? ('damaged' as const) : ('clean' as const), ...summary });
      } catch (err) {
        this.deps.logger.warn({ table, op: 'scrub', err }, 'scrub skipped');
        results.push({ table, status: 'skipped' as const, at, records: 0, bytes: 0, damagedRanges: 0, fileMissing: false, durationMs: 0, error: errorBody(err) });
      }
    }
    return { results };
  }

  private recoveryDeps() {
    return {
      dataDir: this.deps.config.dataDir,
      backupDir: this.deps.config.backupDir,
      logger: this.deps.logger,
      owners: this.deps.owners,
      now: () => this.deps.clock.now(),
    };
  }

  /** Runs a recovery or restore exclusively for its table, then publishes, records and answers. */
  private track(table: string, trigger: 'auto' | 'manual', reply: ((body: unknown) => void) | undefined, fn: () => Promise<RecoveryOutcome>): Promise<RecoveryOutcome> {
    const entry = { replies: reply ? [reply] : [], run: undefined as unknown as Promise<RecoveryOutcome> };
    entry.run = this.exclusive(table, fn).then(
      async (outcome) => {
        this.recoveries.delete(table);
        await this.finished(outcome);
        for (const r of entry.replies) r(outcome);
        return outcome;
      },
      async (err: unknown) => {
        this.recoveries.delete(table);
        const error = errorBody(err);
        // The owner stays down (requests get `unavailable`) and the damaged file
        // stays in quarantine; an operator can restore from a backup.
        this.deps.logger.error({ table, op: 'recover', err }, 'recovery failed');
        if (error.code !== 'NO_BACKUP') {
          await this.record({ kind: 'recovery', table, result: 'failed', trigger, durationMs: 0, error: error.message });
          this.publish('recovery_failed', { table, trigger, error, degraded: false });
        }
        for (const r of entry.replies) r({ error: { code: ERROR_CODES[error.code as keyof typeof ERROR_CODES]?.wire ?? 'internal', message: error.message } });
        throw err;
      },
    );
    this.recoveries.set(table, entry);
    return entry.run;
  }

  private async finished(outcome: RecoveryOutcome): Promise<void> {
    const { table } = outcome;
    const detail = {
      mode: outcome.mode,
      backupUsed: outcome.backupUsed,
      recordsFromBackup: outcome.recordsFromBackup,
      recordsFromDamaged: outcome.recordsFromDamaged,
      recordsLost: outcome.recordsLost,
      lostKeys: outcome.lostKeys.slice(0, 20),
      damagedRanges: outcome.damagedRanges,
      quarantined: outcome.quarantined,
      reason: outcome.reason,
    };
    if (outcome.status === 'degraded') {
      const mark: DegradedMark = { since: new Date(this.deps.clock.now()).toISOString(), reason: outcome.reason, quarantined: outcome.quarantined };
      await this.deps.history.setState(`degraded.${table}`, mark).catch((err: unknown) => this.deps.logger.error({ err, table }, 'could not record the degraded mark'));
      // pino has no "critical" level: fatal is its most severe, and the table is started empty.
      this.deps.logger.fatal({ table, op: 'recover', severity: 'critical', quarantined: outcome.quarantined, reason: outcome.reason }, 'nothing usable was left: table started empty (degraded)');
      await this.record({ kind: 'recovery', table, result: 'failed', trigger: outcome.trigger, durationMs: outcome.durationMs, detail: { ...detail, degraded: true }, error: 'nothing usable was left; the table was started empty' });
      this.publish('recovery_failed', { ...outcome, degraded: true, error: { code: 'internal', message: 'no verified backup and no intact record: the table was started empty' } });
      return;
    }
    this.deps.logger.info({ table, op: outcome.mode, ms: outcome.durationMs, lost: outcome.recordsLost, backup: outcome.backupUsed }, outcome.mode === 'restore' ? 'table restored' : 'table recovered');
    await this.record({ kind: 'recovery', table, result: 'ok', trigger: outcome.trigger, durationMs: outcome.durationMs, detail });
    this.publish('recovery_complete', { ...outcome });
  }
}
