/**
 * Building the replacement of a damaged table file: the store half of the
 * supervisor's recovery cycle (which quarantines the damaged file first,
 * and opens the result afterwards).
 *
 * - rebuildTable merges the newest backup that verifies with every intact
 *   record of the damaged file, by sequence number (see rebuild-merge.ts for
 *   the rules on damaged ranges), and writes a new table file.
 * - copyBackupTo puts a backup in place exactly: an operator's rollback.
 * - chooseBackup finds the newest backup that verifies.
 *
 * The damaged file and the backups are only ever read.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { tableLogger } from './table-logger';
import { BackupManifest, listBackups, verifyBackup } from './backup';
import { BadRequestError, RecoveryFailedError, TablekeeperError } from './errors';
import { nodeStoreFs, parentDir, readFully, StoreFs, writeFully } from './file-system';
import { cutLengthAt } from './cut-marker';
import { DamageSpan, RebuildMerge } from './rebuild-merge';
import { TableWriter } from './rebuild-output';

/** Suffix of the file rebuildTable writes before renaming it into place. */
export const REBUILD_SUFFIX = '.rebuild';
/** Suffix of the file copyBackupTo writes before renaming it into place. */
export const RESTORE_SUFFIX = '.restore';

const COPY_CHUNK_BYTES = 1024 * 1024;
const MAX_GENERATION = 0xffffffff;

/** What rebuildTable needs. */
export interface RebuildOptions {
  table: string;
  /** The damaged (quarantined) file; may be missing (deleted file) or have a damaged header. Never modified. */
  damagedPath: string | undefined;
  /** Directory holding <table>/ backups (see backup.ts). */
  backupDir: string;
  /** Where to write the rebuilt table file (written under a temp name, fsynced, renamed into place, dir fsynced). */
  outPath: string;
  /**
   * The path the damaged file had as the table file, when its cut marker
   * (see cut-marker.ts) may still be there: bytes of the damaged file past
   * the marker's length are writes that were rejected, and are not taken.
   */
  cutMarkerOf?: string;
  fs?: StoreFs;
  logger?: Logger;
}

/** What rebuildTable did. */
export interface RebuildReport {
  /** Name of the backup used (the newest one that verifies), or null. */
  backupUsed: string | null;
  /** Newer backups that failed verification. */
  backupsRejected: { name: string; problems: string[] }[];
  /** Live keys whose surviving record came from the backup. */
  fromBackup: number;
  /** Live keys whose surviving record came from the damaged file (repaired records included). */
  fromDamaged: number;
  /** Live keys in the rebuilt file. */
  liveKeys: number;
  /** Records in the rebuilt file: puts plus kept tombstones. */
  records: number;
  /** Damaged ranges of the damaged file, in file order (a damaged header is [0, 16)). */
  damagedRanges: DamageSpan[];
  damagedBytes: number;
  /** Damaged records with one flipped bit, repaired and kept. */
  repairedRecords: number;
  /**
   * Damaged records whose content is available nowhere: each identified one,
   * plus one per stretch of a damaged range where nothing could be read and
   * whose records may be missing from the backup.
   */
  lostRecords: number;
  /** Keys whose newest state was lost (read from the damaged bytes); they are absent from the rebuilt table. */
  lostKeys: string[];
  /** Damaged ranges holding such an unreadable stretch: a key written there may show its last intact state. */
  unidentifiedRanges: number;
  /** True when `damagedPath` was given but no such file exists (or none was given). */
  damagedFileMissing: boolean;
  /** Generation in the rebuilt file's header: one above the damaged file's and every backup's (rejected ones too). */
  generation: number;
  /** Highest sequence number in the rebuilt file (0 when empty). */
  maxSeq: number;
  durationMs: number;
  /** No usable backup and nothing intact in the damaged file: the rebuilt table is empty. */
  degraded: boolean;
}

/** The newest backup that verifies, and the newer ones that did not. */
export interface BackupChoice {
  manifest: BackupManifest | undefined;
  rejected: { name: string; problems: string[] }[];
}

/** Options of chooseBackup and copyBackupTo. */
export interface RecoveryFsOptions {
  fs?: StoreFs;
  logger?: Logger;
}

/**
 * Builds a new table file at `outPath` from the newest backup that verifies
 * and every intact (or repairable) record of the damaged file; see the
 * README's "Recovery guarantees". Rejects RecoveryFailedError (cause
 * chained) when a file cannot be read or written; the temp file is removed
 * and nothing at `outPath` changes.
 */
export async function rebuildTable(opts: RebuildOptions): Promise<RebuildReport> {
  const started = performance.now();
  const { table } = opts;
  const sfs = opts.fs ?? nodeStoreFs;
  const log = tableLogger(opts.logger, table);
  if (opts.damagedPath !== undefined && path.resolve(opts.damagedPath) === path.resolve(opts.outPath)) {
    throw new BadRequestError('the rebuilt file must not be written over the damaged file');
  }
  const merge = new RebuildMerge(sfs);
  let writer: TableWriter | undefined;
  try {
    const cut = opts.damagedPath !== undefined && opts.cutMarkerOf !== undefined ? await cutLengthAt(sfs, table, opts.damagedPath, opts.cutMarkerOf) : undefined;
    if (cut !== undefined) log.warn({ op: 'rebuild', offset: cut }, 'a cut marker applies to the damaged file: what follows that offset was rejected and is not taken');
    const present = opts.damagedPath !== undefined && (await merge.loadDamaged(opts.damagedPath, cut));
    const backups = await listBackups(opts.backupDir, table, { fs: sfs, logger: log });
    let used: BackupManifest | undefined;
    const rejected: BackupChoice['rejected'] = [];
    for (const m of backups) {
      const problems = await merge.loadBackup(backupFile(opts.backupDir, m), m);
      if (problems.length === 0) {
        used = m;
        break;
      }
      rejected.push({ name: m.name, problems });
      log.warn({ op: 'rebuild', backup: m.name, problems }, 'backup does not verify; trying an older one');
    }
    // Above every backup's generation, the rejected ones' too: a backup rejected
    // now (an open or read that failed this time) may verify in a later rebuild,
    // and a backup of a table file's own generation is taken for a byte copy of
    // that file's start (stretchCovered in rebuild-merge.ts). Sharing a
    // generation with one, this file would have its damage called covered by
    // records the backup does not hold.
    const known = Math.max(merge.damagedHeader?.generation ?? 0, ...backups.map((m) => m.generation));
    const generation = Math.min(known + 1, MAX_GENERATION);
    writer = await TableWriter.create(sfs, opts.outPath + REBUILD_SUFFIX, opts.outPath, generation);
    const result = await merge.finish(writer);
    await writer.commit();
    const report: RebuildReport = {
      backupUsed: used?.name ?? null,
      backupsRejected: rejected,
      fromBackup: result.fromBackup,
      fromDamaged: result.fromDamaged,
      liveKeys: result.liveKeys,
      records: result.records,
      damagedRanges: result.damagedRanges,
      damagedBytes: result.damagedBytes,
      repairedRecords: result.repairedRecords,
      lostRecords: result.lostRecords,
      lostKeys: result.lostKeys,
      unidentifiedRanges: result.unidentifiedRanges,
      damagedFileMissing: !present,
      generation,
      maxSeq: result.maxSeq,
      durationMs: performance.now() - started,
      degraded: used === undefined && result.damagedIntactRecords + result.repairedRecords === 0 && (!present || result.damagedRanges.length > 0),
    };
    if (report.lostRecords > 0) {
      log.warn({ op: 'rebuild', lost: report.lostRecords, lostKeys: report.lostKeys.slice(0, 20), unidentified: report.unidentifiedRanges }, 'records lost in the rebuild');
    }
    log.debug({ op: 'rebuild', backup: report.backupUsed, liveKeys: report.liveKeys, repaired: report.repairedRecords, ms: Math.round(report.durationMs) }, 'table rebuilt');
    return report;
  } catch (err) {
    await writer?.abandon();
    if (err instanceof TablekeeperError) throw err;
    throw new RecoveryFailedError(table, 'rebuild', { cause: err });
  } finally {
    await merge.close();
  }
}

/** The newest backup of `table` that verifies (sha256, manifest, every record), and the newer ones that did not. */
export async function chooseBackup(backupDir: string, table: string, opts: RecoveryFsOptions = {}): Promise<BackupChoice> {
  const rejected: BackupChoice['rejected'] = [];
  for (const m of await listBackups(backupDir, table, opts)) {
    const check = await verifyBackup(m, backupDir, opts);
    if (check.ok) return { manifest: m, rejected };
    rejected.push({ name: m.name, problems: check.problems });
    opts.logger?.warn({ table, op: 'restore', backup: m.name, problems: check.problems }, 'backup does not verify; trying an older one');
  }
  return { manifest: undefined, rejected };
}

/**
 * Puts an exact copy of the backup at `outPath`: copies it under a temp
 * name while hashing it, checks length and sha256 against the manifest,
 * fdatasyncs, renames into place and fsyncs the directory. Rejects
 * RecoveryFailedError (the temp file removed, `outPath` unchanged) when the
 * copy does not match or the file system fails.
 */
export async function copyBackupTo(manifest: BackupManifest, backupDir: string, outPath: string, opts: RecoveryFsOptions = {}): Promise<void> {
  const sfs = opts.fs ?? nodeStoreFs;
  const { table } = manifest;
  const tmp = outPath + RESTORE_SUFFIX;
  let created = false;
  try {
    const src = await sfs.open(backupFile(backupDir, manifest), 'r');
    try {
      const dst = await sfs.open(tmp, 'w+');
      created = true;
      try {
        const hash = createHash('sha256');
        const buf = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
        let pos = 0;
        for (;;) {
          const n = await readFully(sfs, src, buf, 0, buf.length, pos);
          if (n === 0) break;
          hash.update(buf.subarray(0, n));
          await writeFully(sfs, dst, buf, 0, n, pos);
          pos += n;
        }
        const sha256 = hash.digest('hex');
        if (pos !== manifest.length || sha256 !== manifest.sha256) {
          throw new RecoveryFailedError(table, 'the backup does not match its manifest', { details: { backup: manifest.name, bytes: pos, sha256 } });
        }
        await sfs.fdatasync(dst);
      } finally {
        await sfs.close(dst).catch(() => undefined);
      }
    } finally {
      await sfs.close(src).catch(() => undefined);
    }
    await sfs.rename(tmp, outPath);
    created = false;
    await sfs.syncDir(parentDir(outPath));
    opts.logger?.info({ table, op: 'restore', backup: manifest.name, bytes: manifest.length }, 'backup copied into place');
  } catch (err) {
    if (created) await sfs.unlink(tmp).catch(() => undefined);
    if (err instanceof RecoveryFailedError) throw err;
    throw new RecoveryFailedError(table, 'copy of the backup', { cause: err, details: { backup: manifest.name } });
  }
}

function backupFile(backupDir: string, m: BackupManifest): string {
  return path.join(backupDir, m.table, `${m.name}.tkt`);
}
