import type { Logger } from 'pino';
import type { MaintenanceOutcome, MaintenanceRequest } from '../actors';
import { ERROR_CODES, publishEvent, type BackupEvent, type Bus, type Subjects } from '../bus';
import { corruptionIn, listBackups, pruneBackups, TableUnavailableError, toTablekeeperError, type BackupManifest, type StoreFs } from '../store';
import type { Config } from './config';
import type { HistoryEntry, HistoryStore } from './history';
import type { Clock } from './schedule';
import type { RunRegistry } from './run-registry';
import { finishRecovery, startRecovery, type OwnerControl, type RecoveryDeps, type RecoveryOutcome } from './recovery';
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
  /** Set when deleting old backups failed; the backup itself was kept and verified. */
  pruneError?: { code: string; message: string };
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
  /** File access seam for the backup directory (retention); default the real disk. */
  fs?: StoreFs;
  /** Where recovery runs are noted until they settle (see run-registry.ts). */
  runs?: RunRegistry;
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

/** A recovery or restore queued or running: who waits for its answer, and whether it has started the new owner. */
interface RecoveryEntry {
  replies: ((body: unknown) => void)[];
  run: Promise<RecoveryOutcome>;
  started: boolean;
}

/** A table started empty because nothing usable was left, until an operator clears it. */
export interface DegradedMark {
  since: string;
  reason: string;
  quarantined: string | null;
}

// The run never started: the table was opening, recovering, stopping or busy.
const NOT_RUN_CODES: ReadonlySet<string> = new Set(['TABLE_UNAVAILABLE', 'TABLE_CLOSED', 'MAINTENANCE_CONFLICT']);

function couldNotRun(err: unknown): boolean {
  return NOT_RUN_CODES.has(toTablekeeperError(err).code);
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
  private readonly backupLists = new Map<string, BackupManifest[]>();
  // Recoveries queued or running, by table; later reports join the run.
  // `started`: the run has handed the verified file to a new owner, so a
  // report now is about that owner's file and needs a run of its own.
  private readonly recoveries = new Map<string, RecoveryEntry>();
  // Manual backups, compactions and restores asked for and not started yet, by
  // what they would do: the same run asked for again joins the waiting one (see `joined`).
  private readonly waiting = new Map<string, Promise<unknown>>();

  private stopped = false;

  constructor(private readonly deps: MaintenanceDeps) {}

  /**
   * Starts no more work: each run's next table, and anything queued, is
   * refused as not serving (TABLE_UNAVAILABLE), so a scheduled run counts it
   * as not run. For an actor that crashed: its restarted successor takes
   * over. What is already on an owner finishes there.
   */
  stop(): void {
    this.stopped = true;
  }

  /**
   * Runs `fn` after every earlier maintenance of `table` has settled (unless
   * stopped by then): this one's, and a run a stopped or crashed predecessor
   * left going (noted in `runs`), which goes on to its next owner step and
   * may still be building and renaming the table's files. A run started
   * beside it could have its file renamed over by that one, after serving
   * writes on it.
   */
  private exclusive<T>(table: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(table) ?? this.deps.runs?.current(table) ?? Promise.resolve();
    const guarded = (): Promise<T> => (this.stopped ? Promise.reject(new TableUnavailableError(table, 'not served by this maintenance actor any more (it stopped)')) : fn());
    const run = previous.then(guarded, guarded);
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

  /**
   * Runs `run` unless the same run (kind, tables, options) is already
   * queued and has not started yet: then the caller joins that one and gets
   * its answer. `run` calls `started` (its argument) once its first table's work begins;
   * from then on a new request queues a run of its own (at most one waits
   * per key). A joined request gets a run that starts after it was asked
   * for, which is what it asked for. Without this, every restore, every `tables.<t>.compact`
   * (which any client allowed to publish `tables.>` may send) and every
   * `admin.compact` or `admin.backup` over the bus queued a run of its own:
   * 50,000 of them were 50,000 compactions one after another, with the
   * requests held for the half hour that took and an operator's request
   * behind them all.
   */
  private joined<T>(op: 'backup' | 'compact' | 'restore', tables: string[], options: string, run: (started: () => void) => Promise<T>): Promise<T> {
    const key = `${op}:${options}:${tables.join(',')}`;
    const queued = this.waiting.get(key);
    if (queued !== undefined) {
      this.deps.logger.debug({ op, ...(tables.length === 1 ? { table: tables[0] } : { tables }), options }, 'the same run is already queued; this request joins it');
      return queued as Promise<T>;
    }
    let p: Promise<T> | undefined;
    let begun = false;
    const started = (): void => {
      begun = true;
      if (p !== undefined && this.waiting.get(key) === p) this.waiting.delete(key);
    };
    p = run(started);
    // A run may begin at once (nothing ahead of it): then nothing waits to be joined.
    if (!begun) this.waiting.set(key, p);
    // A run refused before its work began (stopped, not serving) never calls `started`.
    void p.then(started, started);
    return p;
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

  /** The verified backups of `table`, newest first, as last read (at start and after each backup run). */
  backups(table: string): BackupManifest[] {
    return this.backupLists.get(table) ?? [];
  }

  /** Reads every table's backup list once (for `admin.health`, which must not read the disk on every poll). */
  async loadBackupLists(tables: string[]): Promise<void> {
    for (const table of tables) {
      try {
        // Not through the seam: fault-injection tests count the owners' calls from the start.
        this.backupLists.set(table, await listBackups(this.deps.config.backupDir, table, { logger: this.deps.logger }));
      } catch (err) {
        this.deps.logger.warn({ table, op: 'backup', err }, 'cannot list backups');
      }
    }
  }

  /**
   * Deletes the backups of `table` beyond `backup.keep`, after a verified
   * backup (`fresh`). The newest backups are read back until one verifies
   * (`fresh` counts without a read, it was verified moments ago, and is never
   * deleted): a damaged one neither counts toward `keep` nor is deleted, so
   * the last verified backup always survives. No backup of the table runs
   * meanwhile (the caller holds it exclusively), so every leftover goes,
   * whatever its time (`idle`). Never throws: a failure is
   * logged and returned, and the backup stays a success.
   */
  private async prune(table: string, fresh: BackupManifest): Promise<{ pruned: number; pruneError?: { code: string; message: string } }> {
    const { config, logger, fs } = this.deps;
    let pruned = 0;
    let pruneError: { code: string; message: string } | undefined;
    try {
      const deleted = await pruneBackups(config.backupDir, table, config.backup.keep, { verify: 'until-verified', trusted: [fresh.name], idle: true, logger, fs });
      pruned = deleted.length;
    } catch (err) {
      pruneError = errorBody(err);
      logger.error({ table, op: 'prune', err }, 'pruning old backups failed; the new backup is kept');
    }
    try {
      this.backupLists.set(table, await listBackups(config.backupDir, table, { logger, fs }));
    } catch (err) {
      logger.warn({ table, op: 'backup', err }, 'cannot list backups');
    }
    return pruneError ? { pruned, pruneError } : { pruned };
  }

  /**
   * Backs up `tables` one after another; keeps the newest `backup.keep` per
   * table. With `defer`, a table that could not be backed up at all (not
   * serving) is neither recorded nor published but returned in `deferred`,
   * for the schedule to try again.
   */
  backup(tables: string[], trigger: Trigger, opts: { defer?: boolean } = {}): Promise<{ results: BackupResult[]; durationMs: number; deferred?: string[] }> {
    // Scheduled runs (deferring) come one at a time from their schedule.
    if (opts.defer === true) return this.runBackup(tables, trigger, opts, () => undefined);
    return this.joined('backup', tables, trigger, (onStart) => this.runBackup(tables, trigger, opts, onStart));
  }

  private async runBackup(
    tables: string[],
    trigger: Trigger,
    opts: { defer?: boolean },
    onStart: () => void,
  ): Promise<{ results: BackupResult[]; durationMs: number; deferred?: string[] }> {
    const { config, clock, logger } = this.deps;
    const started = clock.now();
    const results: BackupResult[] = [];
    const deferred: string[] = [];
    for (const table of tables) {
      // Only the work counts, not the wait behind the table's other maintenance.
      let durationMs = 0;
      try {
        // Pruning holds the table's slot too, so it never deletes a file a recovery or restore is reading.
        const { manifest: m, pruned, pruneError } = await this.exclusive(table, async () => {
          onStart();
          const t0 = clock.now();
          let outcome: MaintenanceOutcome;
          try {
            outcome = await this.deps.submit(table, { kind: 'backup', backupDir: config.backupDir, at: t0 });
          } finally {
            durationMs = Math.max(0, clock.now() - t0); // a clock set back mid-run counts as no time
          }
          if (outcome.kind !== 'backup') throw new Error('owner answered a backup with another kind of result');
          return { manifest: outcome.manifest, ...(await this.prune(table, outcome.manifest)) };
        });
        const result: BackupResult = { table, status: 'ok', durationMs, bytes: m.length, records: m.liveKeys, file: m.name, pruned, ...(pruneError ? { pruneError } : {}) };
        results.push(result);
        logger.info({ table, op: 'backup', bytes: m.length, ms: durationMs, trigger, pruned }, 'backup verified');
        await this.record({ kind: 'backup', table, result: 'ok', trigger, durationMs, bytes: m.length, detail: { file: m.name, records: m.liveKeys, generation: m.generation, sha256: m.sha256, pruned, pruneError } });
      } catch (err) {
        if (opts.defer === true && couldNotRun(err)) {
          logger.info({ table, op: 'backup', trigger, reason: (err as Error).message }, 'backup deferred: the table is not serving');
          deferred.push(table);
          continue;
        }
        const error = errorBody(err);
        const result: BackupResult = { table, status: 'failed', durationMs, error };
        results.push(result);
        logger.error({ table, op: 'backup', err, trigger }, 'backup failed');
        await this.record({ kind: 'backup', table, result: 'failed', trigger, durationMs, error: error.message });
        this.publish('backup_failed', { table, trigger, error });
      }
    }
    const durationMs = Math.max(0, clock.now() - started);
    const ok = results.filter((r) => r.status === 'ok');
    if (ok.length > 0) {
      this.publish('backup_complete', {
        trigger,
        durationMs,
        bytes: ok.reduce((n, r) => n + (r.bytes ?? 0), 0),
        tables: ok.map(({ table, bytes, durationMs: ms, records, file, pruned, pruneError }) => ({ table, bytes, durationMs: ms, records, file, pruned, ...(pruneError ? { pruneError } : {}) })),
        failed: results.filter((r) => r.status === 'failed').map((r) => r.table),
      });
    }
    return opts.defer === true ? { results, durationMs, deferred } : { results, durationMs };
  }

  /**
   * Compacts `tables` one after another. A table under the threshold is
   * skipped unless `force`; a failed compaction is retried once, then waits
   * for the next run. Delete records newer than the oldest retained backup
   * are kept, so no retained backup can bring a deleted key back. With
   * `defer`, a table that could not be compacted at all (not serving) is
   * returned in `deferred` instead of being retried, recorded or published.
   */
  compact(
    tables: string[],
    opts: { force: boolean; trigger: Trigger; defer?: boolean },
  ): Promise<{ results: CompactionRunResult[]; durationMs: number; deferred?: string[] }> {
    if (opts.defer === true) return this.runCompact(tables, opts, () => undefined);
    return this.joined('compact', tables, `${opts.trigger}:force=${opts.force}`, (onStart) => this.runCompact(tables, opts, onStart));
  }

  private async runCompact(
    tables: string[],
    opts: { force: boolean; trigger: Trigger; defer?: boolean },
    onStart: () => void,
  ): Promise<{ results: CompactionRunResult[]; durationMs: number; deferred?: string[] }> {
    const { config, clock, logger } = this.deps;
    const started = clock.now();
    const results: CompactionRunResult[] = [];
    const deferred: string[] = [];
    for (const table of tables) {
      // Only the work counts (every attempt's), not the wait behind the table's other maintenance.
      let durationMs = 0;
      let attempts = 0;
      let result: CompactionRunResult | undefined;
      while (!result) {
        attempts++;
        try {
          const outcome = await this.exclusive(table, async () => {
            onStart();
            const t0 = clock.now();
            try {
              const backups = await listBackups(config.backupDir, table);
              const keepTombstonesAbove = backups.length === 0 ? undefined : Math.min(...backups.map((b: { maxSeq: number }) => b.maxSeq));
              return await this.deps.submit(table, { kind: 'compact', force: opts.force, threshold: config.compaction.threshold, keepTombstonesAbove });
            } finally {
              durationMs += Math.max(0, clock.now() - t0);
            }
          });
          if (outcome.kind !== 'compact') throw new Error('owner answered a compaction with another kind of result');
          result =
            outcome.status === 'skipped'
              ? { table, status: 'skipped', durationMs, attempts, fragmentation: outcome.fragmentation, reason: outcome.reason }
              : {
                  table,
                  status: 'compacted',
                  durationMs,
                  attempts,
                  bytesBefore: outcome.result.bytesBefore,
                  bytesAfter: outcome.result.bytesAfter,
                  pausedMs: outcome.result.pausedMs,
                  fragmentation: outcome.fragmentationBefore,
                };
        } catch (err) {
          if (opts.defer === true && couldNotRun(err)) {
            logger.info({ table, op: 'compact', reason: (err as Error).message }, 'compaction deferred: the table is not serving');
            break;
          }
          logger.warn({ table, op: 'compact', attempt: attempts, err }, 'compaction failed');
          // A table that could not run it (not serving, closing, busy) is not tried again at once;
          // nor one found damaged: it is being recovered, and the damage is what to report.
          const damage = corruptionIn(err);
          if (attempts >= 2 || couldNotRun(err) || damage !== null) result = { table, status: 'error', durationMs, attempts, error: errorBody(damage ?? err) };
        }
      }
      if (!result) {
        deferred.push(table);
        continue;
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
    const durationMs = Math.max(0, clock.now() - started);
    // A run whose every table was deferred did nothing worth an event.
    if (results.length > 0 || opts.defer !== true) this.publish('compaction_complete', { trigger: opts.trigger, durationMs, results });
    const failed = results.filter((r) => r.status === 'error');
    if (failed.length > 0) this.publish('compaction_failed', { trigger: opts.trigger, results: failed });
    return opts.defer === true ? { results, durationMs, deferred } : { results, durationMs };
  }

  /**
   * Recovers a damaged table (see recovery.ts): publishes
   * `corruption_detected`, then runs the cycle once the table's other
   * maintenance has settled. A report for a table already being recovered
   * joins that run, unless the run has already started the new owner: that
   * report is about the new file, and gets its own run after this one. Resolves with the outcome (also published and recorded);
   * rejects RecoveryFailedError.
   */
  recover(table: string, report: CorruptionReport): Promise<RecoveryOutcome> {
    const pending = this.recoveries.get(table);
    if (pending?.started) {
      const again = (): Promise<RecoveryOutcome> => this.recover(table, report);
      return pending.run.then(again, again);
    }
    if (pending) {
      if (report.reply) pending.replies.push(report.reply);
      return pending.run;
    }
    const detectedAt = this.deps.clock.now();
    this.deps.logger.error({ table, op: 'recover', source: report.source, reason: report.reason, offset: report.offset }, 'corruption detected; recovering');
    this.publish('corruption_detected', { table, source: report.source, reason: report.reason, offset: report.offset });
    const trigger = report.source === 'operator' ? 'manual' : 'auto';
    return this.track(table, trigger, detectedAt, report.reply, (deps) =>
      startRecovery(deps, { table, mode: 'recover', trigger, reason: report.reason, source: report.source }, detectedAt),
    );
  }

  /**
   * Rolls `table` back to its latest verified backup, exactly
   * (`admin.restore.<t>`). A recovery (or restore) of the table already
   * queued or running is let finish first; the rollback then runs on its
   * own, so the answer is always this restore's outcome.
   */
  restore(table: string): Promise<RecoveryOutcome> {
    // Restores asked for while one waits for the table's run under way share
    // it (each used to be a rollback of its own, one after another, each
    // leaving a file in quarantine).
    return this.joined('restore', [table], '', (started) => this.restoreAfterRuns(table, started));
  }

  /** A restore of `table` once no recovery or restore of it is queued or running; calls `started` as it begins. */
  private restoreAfterRuns(table: string, started: () => void): Promise<RecoveryOutcome> {
    const pending = this.recoveries.get(table);
    if (pending) {
      const again = (): Promise<RecoveryOutcome> => this.restoreAfterRuns(table, started);
      return pending.run.then(again, again);
    }
    started();
    const startedAt = this.deps.clock.now();
    return this.track(table, 'manual', startedAt, undefined, (deps) =>
      startRecovery(deps, { table, mode: 'restore', trigger: 'manual', reason: 'operator restore' }, startedAt),
    );
  }

  /**
   * Finishes a run a crash interrupted (its journal was found at start). A
   * recovery publishes `corruption_detected` again (marked `resumed`), so
   * every `recovery_*` event of a recovery follows one.
   */
  resume(journal: RecoveryJournal): Promise<RecoveryOutcome> {
    const startedAt = this.deps.clock.now();
    this.deps.logger.warn({ table: journal.table, op: journal.mode, startedAt: journal.startedAt }, 'finishing an interrupted recovery');
    if (journal.mode === 'recover') {
      this.publish('corruption_detected', { table: journal.table, source: journal.source ?? 'journal', reason: journal.reason, resumed: true });
    }
    return this.track(journal.table, journal.trigger, startedAt, undefined, (deps) => finishRecovery(deps, journal, startedAt));
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
  async scrub(
    tables: string[],
    opts: { defer?: boolean } = {},
  ): Promise<{ results: (ScrubSummary & { table: string; status: 'clean' | 'damaged' | 'skipped'; error?: { code: string; message: string } })[]; deferred?: string[] }> {
    const results = [];
    const deferred: string[] = [];
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
        if (opts.defer === true && couldNotRun(err)) {
          deferred.push(table);
          continue;
        }
        this.deps.logger.warn({ table, op: 'scrub', err }, 'scrub skipped');
        results.push({ table, status: 'skipped' as const, at, records: 0, bytes: 0, damagedRanges: 0, fileMissing: false, durationMs: 0, error: errorBody(err) });
      }
    }
    return opts.defer === true ? { results, deferred } : { results };
  }

  /** What a run needs; starting the owner marks the run's own entry (not whichever entry the table has by then). */
  private recoveryDeps(entry: RecoveryEntry): RecoveryDeps {
    const { owners } = this.deps;
    return {
      dataDir: this.deps.config.dataDir,
      backupDir: this.deps.config.backupDir,
      logger: this.deps.logger,
      owners: {
        stop: (t: string) => owners.stop(t),
        start: (t: string) => {
          entry.started = true;
          return owners.start(t);
        },
      },
      now: () => this.deps.clock.now(),
    };
  }

  /** Runs a recovery or restore exclusively for its table, then publishes, records and answers. */
  private track(
    table: string,
    trigger: 'auto' | 'manual',
    startedAt: number,
    reply: ((body: unknown) => void) | undefined,
    fn: (deps: RecoveryDeps) => Promise<RecoveryOutcome>,
  ): Promise<RecoveryOutcome> {
    const entry: RecoveryEntry = { replies: reply ? [reply] : [], run: undefined as unknown as Promise<RecoveryOutcome>, started: false };
    // The table's entry may be a later run's by the time this one ends (a
    // resumed run queued behind this one): only this run's own is removed.
    const done = (): void => {
      if (this.recoveries.get(table) === entry) this.recoveries.delete(table);
    };
    entry.run = this.exclusive(table, () => fn(this.recoveryDeps(entry))).then(
      async (outcome) => {
        done();
        await this.finished(outcome);
        for (const r of entry.replies) r(outcome);
        return outcome;
      },
      async (err: unknown) => {
        done();
        if (this.stopped) {
          // Cut short by the stop at an owner step: not a failure. The journal
          // (kept unless the verified file was already in place) lets the next start finish it.
          this.deps.logger.warn({ table, op: 'recover', err }, 'recovery cut short: maintenance stopped; it is finished from its journal');
          for (const r of entry.replies) r({ error: { code: 'unavailable', message: 'maintenance stopped (a stop or a restart); the recovery is finished from its journal' } });
          throw err;
        }
        const error = errorBody(err);
        // The owner stays down (requests get `unavailable`) and the damaged file
        // stays in quarantine; an operator can restore from a backup.
        this.deps.logger.error({ table, op: 'recover', err }, 'recovery failed');
        if (error.code !== 'NO_BACKUP') {
          const durationMs = Math.max(0, this.deps.clock.now() - startedAt);
          await this.record({ kind: 'recovery', table, result: 'failed', trigger, durationMs, error: error.message });
          this.publish('recovery_failed', { table, trigger, error, degraded: false, durationMs });
        }
        for (const r of entry.replies) r({ error: { code: ERROR_CODES[error.code as keyof typeof ERROR_CODES]?.wire ?? 'internal', message: error.message } });
        throw err;
      },
    );
    this.recoveries.set(table, entry);
    this.deps.runs?.add(table, entry.run);
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
