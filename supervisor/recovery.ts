/**
 * One recovery (or restore) run of one table: the cycle the supervisor runs
 * when a table file is damaged, or when an operator rolls a table back.
 *
 * 1. journal the run (durably), so a crash at any later step is finished at
 *    the next start (recovery-journal.ts);
 * 2. terminate the table's owner (it closes its file; a file deleted while
 *    open is first rewritten from the open descriptor);
 * 3. move the table file into quarantine under the run's unique name, never
 *    deleting or overwriting a file (quarantine.ts);
 * 4. build the replacement: `recover` merges the latest verified backup with
 *    every intact record of the damaged file (store/recovery.ts); `restore`
 *    copies the latest verified backup exactly;
 * 5. verify the built file before anything serves it: a full traversal that
 *    checks the header and every record's checksum, and a live-key count
 *    that must match what was built;
 * 6. remove the journal, then start the owner on the verified file.
 *
 * Removing the journal before the owner serves is what makes a redo safe: a
 * redo (after a crash or a failure) only ever rebuilds over a file that has
 * served no request, and a table that served writes is never rebuilt from an
 * older quarantined file.
 *
 * The caller (Maintenance) makes sure no backup or compaction of the table
 * runs at the same time.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { tableFilePath, type TableOwnerState } from '../actors';
import { chooseBackup, copyBackupTo, NoBackupError, RecoveryFailedError, rebuildTable, countLiveKeys, tableLogger, type RebuildReport } from '../store';
import { moveToQuarantine } from './quarantine';
import { quarantinePath, removeJournal, writeJournal, type RecoveryJournal } from './recovery-journal';

/** How the recovery reaches the table's owner (through the supervisor). */
export interface OwnerControl {
  /** Terminates the owner; resolves once its file is closed (at once when it is down). */
  stop(table: string): Promise<void>;
  /** Starts the owner; resolves with the state it settles in after opening. */
  start(table: string): Promise<TableOwnerState>;
}

/** What a run needs. */
export interface RecoveryDeps {
  dataDir: string;
  backupDir: string;
  logger: Logger;
  owners: OwnerControl;
  now(): number;
}

/** What a run did; published in `backups.recovery_*` events and kept in history. */
export interface RecoveryOutcome {
  table: string;
  mode: 'recover' | 'restore';
  trigger: 'auto' | 'manual';
  /** `degraded`: nothing usable existed; the table was started empty. */
  status: 'recovered' | 'restored' | 'degraded';
  reason: string;
  durationMs: number;
  /** Name of the backup the run started from, or null. */
  backupUsed: string | null;
  backupsRejected: { name: string; problems: string[] }[];
  recordsFromBackup: number;
  recordsFromDamaged: number;
  recordsLost: number;
  /** Keys whose newest state was lost, when they could be read (at most 100 listed). */
  lostKeys: string[];
  lostKeysTotal: number;
  damagedRanges: number;
  damagedBytes: number;
  unidentifiedRanges: number;
  /** Live keys of the built file, counted by a full traversal before it served. */
  liveKeys: number;
  /** Where the previous table file was kept, or null when there was none. */
  quarantined: string | null;
  verified: boolean;
}

const LOST_KEYS_LISTED = 100;

/** Starts a new run: journals it first. Restore checks for a verified backup before touching anything. */
export async function startRecovery(
  deps: RecoveryDeps,
  run: { table: string; mode: 'recover' | 'restore'; trigger: 'auto' | 'manual'; reason: string; source?: string },
  startedAt: number,
): Promise<RecoveryOutcome> {
  if (run.mode === 'restore') {
    const choice = await chooseBackup(deps.backupDir, run.table);
    if (choice.manifest === undefined) throw new NoBackupError(run.table, { details: { rejected: choice.rejected } });
  }
  const journal: RecoveryJournal = {
    ...run,
    quarantine: quarantinePath(deps.dataDir, run.table, new Date(deps.now())),
    startedAt: new Date(startedAt).toISOString(),
  };
  await writeJournal(deps.dataDir, journal);
  return finishRecovery(deps, journal, startedAt);
}

/**
 * Runs (or, after a crash, finishes) the journaled run. On failure before
 * the built file is verified, the journal and the quarantined file stay:
 * the next start tries again.
 */
export async function finishRecovery(deps: RecoveryDeps, journal: RecoveryJournal, startedAt: number): Promise<RecoveryOutcome> {
  const { table } = journal;
  const log = deps.logger.child({ table, op: journal.mode });
  const tablePath = tableFilePath(deps.dataDir, table);
  try {
    await deps.owners.stop(table);
    const step = await moveToQuarantine(deps.dataDir, tablePath, journal.quarantine, log);
    if (step === 'moved') log.warn({ quarantine: journal.quarantine }, 'table file moved to quarantine');
    const built = await build(deps, journal, tablePath, log);
    const check = await verifyBuilt(table, tablePath);
    if (check.liveKeys !== built.liveKeys) {
      throw new RecoveryFailedError(table, `integrity check failed: built ${built.liveKeys} live keys, the file holds ${check.liveKeys}`);
    }
    // The run is over once the verified file is in place: from here on the
    // table may take writes, so no redo may ever rebuild over it.
    await removeJournal(deps.dataDir, table);
    const state = await deps.owners.start(table);
    if (state !== 'serving') throw new RecoveryFailedError(table, `the rebuilt table did not open (owner is ${state})`);
    const outcome: RecoveryOutcome = {
      table,
      mode: journal.mode,
      trigger: journal.trigger,
      status: built.degraded ? 'degraded' : journal.mode === 'restore' ? 'restored' : 'recovered',
      reason: journal.reason,
      durationMs: Math.max(0, deps.now() - startedAt), // a clock set back mid-run counts as no time
      backupUsed: built.backupUsed,
      backupsRejected: built.backupsRejected,
      recordsFromBackup: built.fromBackup,
      recordsFromDamaged: built.fromDamaged,
      recordsLost: built.lostRecords,
      lostKeys: built.lostKeys.slice(0, LOST_KEYS_LISTED),
      lostKeysTotal: built.lostKeys.length,
      damagedRanges: built.damagedRanges.length,
      damagedBytes: built.damagedBytes,
      unidentifiedRanges: built.unidentifiedRanges,
      liveKeys: check.liveKeys,
      quarantined: existsSync(journal.quarantine) ? journal.quarantine : null,
      verified: true,
    };
    return outcome;
  } catch (err) {
    // The journal stays (unless the file was already verified and handed to
    // the owner), so the next start tries the run again (one attempt per
    // start: never a loop); a restore without a backup has nothing to redo.
    if (err instanceof NoBackupError) {
      await removeJournal(deps.dataDir, table).catch((e: unknown) => log.error({ err: e }, 'could not remove the recovery journal'));
    }
    if (err instanceof RecoveryFailedError || err instanceof NoBackupError) throw err;
    throw new RecoveryFailedError(table, journal.mode === 'restore' ? 'restore' : 'rebuild', { cause: err });
  }
}

/**
 * Reads the built file back in full, before any owner opens it: the header
 * and every record's checksum must hold, and the live keys are counted by
 * replaying the records in order (as an owner's open does).
 */
async function verifyBuilt(table: string, file: string): Promise<{ records: number; liveKeys: number }> {
  const count = await countLiveKeys(file);
  if (count.headerDamage !== undefined) throw new RecoveryFailedError(table, `integrity check failed: the built file's header is not valid (${count.headerDamage})`);
  if (count.damage !== undefined) throw new RecoveryFailedError(table, `integrity check failed: the built file is damaged at ${count.damage.offset} (${count.damage.reason})`);
  return count;
}

/** What the build step produced, in one shape for both modes. */
type Built = Pick<
  RebuildReport,
  'backupUsed' | 'backupsRejected' | 'fromBackup' | 'fromDamaged' | 'lostRecords' | 'lostKeys' | 'damagedRanges' | 'damagedBytes' | 'unidentifiedRanges' | 'liveKeys' | 'degraded'
>;

async function build(deps: RecoveryDeps, journal: RecoveryJournal, tablePath: string, log: Logger): Promise<Built> {
  if (journal.mode === 'restore') {
    const choice = await chooseBackup(deps.backupDir, journal.table);
    if (choice.manifest === undefined) throw new NoBackupError(journal.table, { details: { rejected: choice.rejected } });
    await copyBackupTo(choice.manifest, deps.backupDir, tablePath);
    log.info({ backup: choice.manifest.name, liveKeys: choice.manifest.liveKeys }, 'table rolled back to its latest verified backup');
    return {
      backupUsed: choice.manifest.name,
      backupsRejected: choice.rejected,
      fromBackup: choice.manifest.liveKeys,
      fromDamaged: 0,
      lostRecords: 0,
      lostKeys: [],
      damagedRanges: [],
      damagedBytes: 0,
      unidentifiedRanges: 0,
      liveKeys: choice.manifest.liveKeys,
      degraded: false,
    };
  }
  const report = await rebuildTable({
    table: journal.table,
    damagedPath: existsSync(journal.quarantine) ? journal.quarantine : undefined,
    backupDir: deps.backupDir,
    outPath: tablePath,
    // Writes rejected before the file failed, which its cut marker says to cut, are not rebuilt.
    cutMarkerOf: tablePath,
    // Bound to the table only: the rebuild's lines carry their own `op`.
    logger: tableLogger(deps.logger, journal.table),
  });
  log.info(
    {
      backup: report.backupUsed,
      fromBackup: report.fromBackup,
      fromDamaged: report.fromDamaged,
      lost: report.lostRecords,
      ranges: report.damagedRanges.length,
      ms: report.durationMs,
    },
    'table file rebuilt',
  );
  return report;
}
