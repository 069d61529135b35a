/**
 * Consistent, verified backups of a table file while it serves.
 *
 * A point-in-time copy without stopping writes: the log is append-only, and
 * the bytes below `durableLength` never change (write and fsync failures cut
 * the file back to durableLength at the lowest; durableLength only grows; a
 * compaction, which replaces the file, cannot run at the same time: both
 * need the table's maintenance slot). So after `sync()` the backup copies
 * [0, L) for L = durableLength through its own read descriptor while
 * writes go on above L.
 *
 * Layout: `<backupDir>/<table>/<name>.tkt` (the copy) and `<name>.json` (its
 * manifest), with `name = <table>-<YYYYMMDDTHHMMSSmmmZ>-g<generation>`, which
 * sorts by time and is safe in file names (a leftover of the same name, a
 * `.partial` or a data file without a manifest, makes it `-001`, `-002`,
 * ...). The time is never before the newest backup's: a backup taken while
 * the wall clock ran ahead must not stay "newest" after the clock is set
 * back (recovery, restore and retention all take the newest by time), so a
 * backup is timed max(now, newest backup's createdAt + 1 ms). Steps:
 * 1. copy [0, L) into `<name>.tkt.partial` and fdatasync it;
 * 2. verify by reading the copy back: every byte must equal the table's
 *    byte at the same offset (so the copy's sha256, taken of the bytes
 *    copied, is that of the copy), and a full record scan must find every
 *    checksum valid and no damage; the scan counts records and maxSeq.
 *    Damage in the table file itself (a bad record or header in bytes the
 *    copy equals, or found by the worker that checks the table's bytes) is
 *    reported as a TableCorruptError in the BackupFailedError's cause chain,
 *    as compaction does, so that the owner starts the recovery; a copy that
 *    differs from the table is a plain verification failure. The
 *    live keys at L are counted from the table's index (LiveKeysAt), and
 *    also by the scan when it runs in-process, and must agree. On the real
 *    disk a large copy is made in a worker thread that fdatasyncs and reads
 *    back every few megabytes, while another worker checks the records (see
 *    copyAndVerify);
 * 3. rename to `<name>.tkt`, write the manifest (temp, fdatasync, rename),
 *    fsync the directory.
 * A backup that fails anywhere is deleted and reported as BackupFailedError;
 * a manifest exists only for a verified copy, so a crash leaves at most a
 * `.partial`, or a `.tkt` without a manifest, which listBackups ignores and
 * pruneBackups removes.
 */
import { createHash, Hash } from 'node:crypto';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { tableLogger } from './table-logger';
import { BackupFailedError, BadRequestError, TableCorruptError } from './errors';
import { decodeFileHeader, FILE_HEADER_BYTES, FORMAT_VERSION, KIND_PUT } from './format';
import { isErrno, nodeStoreFs, readFully, readWholeFile, StoreFs, writeFileDurably, writeFully } from './file-system';
import { ByteKeySet } from './byte-key-set';
import { checkRangeInWorker, WORKER_MIN_BYTES } from './record-check-worker';
import { copyInWorker } from './copy-worker';
import { RecordCursor } from './record-cursor';
import type { AppendObserver } from './compaction';
import type { TableFile } from './table-file';
import { TimeSlicer } from './time-slicer';

/** What a verified backup holds; stored as `<name>.json` beside `<name>.tkt`. */
export interface BackupManifest {
  table: string;
  /** Base name of the backup's files. */
  name: string;
  /** Generation of the table file that was copied. */
  generation: number;
  /** Bytes copied: the table file's durable length when the backup started. */
  length: number;
  /** Records in the copy (puts and deletes). */
  records: number;
  /** Keys live in the copy. */
  liveKeys: number;
  /** Highest sequence number in the copy (0 when it has no records). */
  maxSeq: number;
  /** sha256 of the copy, hex. */
  sha256: string;
  /** When the backup was taken, ISO 8601. */
  createdAt: string;
  formatVersion: number;
}

/** Options of backupTable. */
export interface BackupOptions {
  /**
   * The wall-clock time of the backup; default now. Its name and createdAt
   * are this or, when that is not after the newest backup of the table, 1 ms
   * after that one (see the module doc).
   */
  now?: Date;
  logger?: Logger;
}

/** Options of the functions that read a backup directory. */
export interface BackupDirOptions {
  /** File system seam; default the real disk. */
  fs?: StoreFs;
  logger?: Logger;
}

/** What verifyBackup found. */
export interface BackupCheck {
  ok: boolean;
  /** Why it is not ok (empty when ok). */
  problems: string[];
}

const COPY_CHUNK_BYTES = 1024 * 1024;
// sha256 runs at ~0.5 GB/s on the event loop: about half a millisecond per piece.
const HASH_PIECE_BYTES = 256 * 1024;
const NAME_PATTERN = /^(.+)-(\d{8}T\d{9}Z)-g(\d+)(?:-\d{3})?$/;

/**
 * Takes a verified point-in-time backup of `file` into `<backupDir>/<table>/`
 * while the table keeps serving; resolves with its manifest. Rejects
 * MaintenanceConflictError when a compaction or backup of the table runs,
 * TableClosedError when it is closed or starts closing before the copy is
 * verified (the backup is then cancelled), and BackupFailedError (cause
 * chained) for anything else, with a TableCorruptError as its cause when the
 * table file itself is damaged; a failed or cancelled backup leaves no files.
 */
export function backupTable(file: TableFile, backupDir: string, opts: BackupOptions = {}): Promise<BackupManifest> {
  const logger = tableLogger(opts.logger, file.table);
  return file.runMaintenance('backup', (signal) => takeBackup(file, backupDir, opts.now ?? new Date(), logger, signal));
}

/** See backupTable. When `signal` is aborted (the table is closing) before the copy is renamed, it deletes what it made and rejects with the signal's reason. */
async function takeBackup(file: TableFile, backupDir: string, clock: Date, logger: Logger, signal: AbortSignal): Promise<BackupManifest> {
  const { table } = file;
  const sfs = file.fileSystem;
  const started = performance.now();
  const dir = path.join(backupDir, table);
  const ours: string[] = [];
  let stage = 'sync';
  // Set before the sync: every record above the length taken after it is appended later, so it is seen.
  const liveAt = new LiveKeysAt(file);
  try {
    await file.sync();
    signal.throwIfAborted();
    // Below this nothing changes any more (see the module doc).
    const length = file.durableLength;
    const liveKeys = liveAt.countAt(length);
    const generation = file.generation;
    stage = 'mkdir';
    await sfs.mkdir(dir);
    // No other backup of the table runs meanwhile (the maintenance slot), so the newest stays the newest.
    const newest = (await listBackups(backupDir, table, { fs: sfs, logger }))[0];
    const now = newest === undefined ? clock : new Date(Math.max(clock.getTime(), Date.parse(newest.createdAt) + 1));
    const name = uniqueName(backupName(table, now, generation), new Set(await sfs.readdir(dir)));
    if (name === undefined) throw new BackupFailedError(table, 'exists', { details: { name: backupName(table, now, generation) } });
    const partial = path.join(dir, `${name}.tkt.partial`);
    const data = path.join(dir, `${name}.tkt`);
    const manifestFile = path.join(dir, `${name}.json`);
    ours.push(partial, data, `${manifestFile}.tmp`, manifestFile);

    stage = 'copy';
    const found = await copyAndVerify(sfs, file.path, partial, length, file.stats().records, signal, (next) => {
      stage = next;
    });
    // From the rename on, the backup is whole and verified: it is finished even if the table is closing.
    signal.throwIfAborted();
    // The in-process read-back counts them too: both must agree.
    if (found.problems.length === 0 && found.liveKeys !== undefined && found.liveKeys !== liveKeys) {
      found.problems.push(`the copy has ${found.liveKeys} live keys, the table's index ${liveKeys}`);
    }
    if (found.problems.length === 0 && found.generation !== generation) found.problems.push(`header generation ${found.generation}, expected ${generation}`);
    if (found.tableDamage !== undefined) {
      // Not a bad copy: the table file is damaged, which the owner must hear about as corruption (it recovers the table).
      const { offset, reason } = found.tableDamage;
      const cause = new TableCorruptError(table, offset, reason, { details: { during: 'backup' } });
      throw new BackupFailedError(table, 'verification', { cause, details: { name, problems: found.problems } });
    }
    if (found.problems.length > 0) {
      throw new BackupFailedError(table, 'verification', { details: { name, problems: found.problems } });
    }
    stage = 'rename';
    await sfs.rename(partial, data);
    const manifest: BackupManifest = {
      table,
      name,
      generation,
      length,
      records: found.records,
      liveKeys,
      maxSeq: found.maxSeq,
      sha256: found.sha256,
      createdAt: now.toISOString(),
      formatVersion: FORMAT_VERSION,
    };
    stage = 'manifest';
    await writeFileDurably(sfs, manifestFile, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
    await sfs.syncDir(dir);
    logger.info({ op: 'backup', backup: name, bytes: length, records: manifest.records, ms: Math.round(performance.now() - started) }, 'backup done');
    return manifest;
  } catch (err) {
    liveAt.stop();
    for (const f of ours) await sfs.unlink(f).catch(() => undefined);
    if (signal.aborted) {
      // Not a failure of the backup: the table is closing (the service is stopping, or recovering the table).
      logger.info({ op: 'backup', stage, ms: Math.round(performance.now() - started) }, 'backup cancelled: the table is closing; nothing was kept');
      throw signal.reason;
    }
    const error = err instanceof BackupFailedError ? err : new BackupFailedError(table, stage, { cause: err });
    logger.error({ err: error, op: 'backup', stage }, 'backup failed; nothing was kept');
    throw error;
  }
}

/**
 * `base`, or `base-<nnn>` (001 to 999, which sort after it and in order) when
 * a backup of the same millisecond and generation exists; undefined when all
 * are taken.
 */
function uniqueName(base: string, existing: Set<string>): string | undefined {
  const taken = (n: string) => existing.has(`${n}.tkt`) || existing.has(`${n}.json`) || existing.has(`${n}.tkt.partial`);
  if (!taken(base)) return base;
  for (let i = 1; i < 1000; i++) {
    const name = `${base}-${String(i).padStart(3, '0')}`;
    if (!taken(name)) return name;
  }
  return undefined;
}

/** `<table>-<YYYYMMDDTHHMMSSmmmZ>-g<generation>`. */
export function backupName(table: string, at: Date, generation: number): string {
  return `${table}-${at.toISOString().replace(/[-:.]/g, '')}-g${generation}`;
}

/**
 * The verified backups of `table` (those with a valid manifest and their
 * data file), newest first. `.partial` files, data files without a manifest
 * and unreadable manifests are ignored.
 */
export async function listBackups(backupDir: string, table: string, opts: BackupDirOptions = {}): Promise<BackupManifest[]> {
  const sfs = opts.fs ?? nodeStoreFs;
  const dir = path.join(backupDir, table);
  let names: string[];
  try {
    names = await sfs.readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
  const present = new Set(names);
  const out: BackupManifest[] = [];
  for (const entry of names) {
    if (!entry.endsWith('.json')) continue;
    const name = entry.slice(0, -'.json'.length);
    if (!present.has(`${name}.tkt`)) continue;
    let text: string;
    try {
      text = (await readWholeFile(sfs, path.join(dir, entry))).toString('utf8');
    } catch (err) {
      opts.logger?.warn({ err, table, file: entry }, 'unreadable backup manifest ignored');
      continue;
    }
    const manifest = parseManifest(text, table, name);
    if (manifest === undefined) opts.logger?.warn({ table, file: entry }, 'invalid backup manifest ignored');
    else out.push(manifest);
  }
  return out.sort(newestFirst);
}

/**
 * Reads a backup again and checks it against its manifest: length, sha256,
 * header, every record's checksum, and the record, live key and maxSeq
 * counts. Resolves `{ ok: false, problems }` for a damaged or missing backup.
 */
export async function verifyBackup(manifest: BackupManifest, backupDir: string, opts: BackupDirOptions = {}): Promise<BackupCheck> {
  const sfs = opts.fs ?? nodeStoreFs;
  const file = path.join(backupDir, manifest.table, `${manifest.name}.tkt`);
  let found: CopyReport;
  try {
    found = await inspectCopy(sfs, file, manifest.length, manifest.liveKeys);
  } catch (err) {
    return { ok: false, problems: [`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`] };
  }
  const problems = found.problems;
  const expect = (what: string, got: unknown, want: unknown): void => {
    if (got !== want) problems.push(`${what} is ${String(got)}, the manifest says ${String(want)}`);
  };
  expect('sha256', found.sha256, manifest.sha256);
  expect('generation', found.generation, manifest.generation);
  expect('records', found.records, manifest.records);
  expect('liveKeys', found.liveKeys, manifest.liveKeys);
  expect('maxSeq', found.maxSeq, manifest.maxSeq);
  return { ok: problems.length === 0, problems };
}

/**
 * Deletes all but the newest `keep` (>= 1) verified backups of `table` and
 * resolves with the manifests it deleted. The newest backup is never
 * deleted, nor any named in `trusted`. With `verify`, backups are re-read
 * (verifyBackup) before they count toward `keep`: a damaged one does not
 * count, and is not deleted either (salvage may still read it). `verify:
 * true` re-reads every backup until `keep` have verified;
 * `'until-verified'` only until one has (the rest count unread), which is
 * enough to guarantee that the newest backup that verifies is never deleted,
 * at the cost of one read in the usual case. A backup in `trusted` (one the
 * caller has just verified) counts as verified without a read. Also removes
 * leftovers older than the newest backup: `.partial` copies, data files
 * without a manifest, manifest temp files; with `idle` (the caller knows
 * that no backup of the table is running: it holds the table's maintenance),
 * leftovers of any time, also those named after the newest backup. Those
 * are left by a backup that was cut short while the clock ran ahead: backups
 * made since the clock was set back are named earlier, so without `idle`
 * such a copy would stay until the clock has caught up with it.
 */
export async function pruneBackups(
  backupDir: string,
  table: string,
  keep: number,
  opts: BackupDirOptions & { verify?: boolean | 'until-verified'; trusted?: string[]; idle?: boolean } = {},
): Promise<BackupManifest[]> {
  if (!Number.isInteger(keep) || keep < 1) throw new BadRequestError(`keep must be an integer >= 1, got ${keep}`);
  const sfs = opts.fs ?? nodeStoreFs;
  const dir = path.join(backupDir, table);
  const backups = await listBackups(backupDir, table, opts);
  if (backups.length === 0) return [];
  const trusted = new Set(opts.trusted ?? []);
  const deleted: BackupManifest[] = [];
  // With no more than `keep` nothing is deleted: no need to read any back.
  const verify = backups.length > keep ? opts.verify : undefined;
  let good = 0;
  let confirmed = false;
  for (const m of backups) {
    if (good < keep || trusted.has(m.name)) {
      if (verify === true || (verify === 'until-verified' && !confirmed)) {
        const check = trusted.has(m.name) ? { ok: true, problems: [] } : await verifyBackup(m, backupDir, opts);
        if (!check.ok) {
          opts.logger?.warn({ table, op: 'prune', backup: m.name, problems: check.problems }, 'damaged backup does not count toward keep');
          continue;
        }
        confirmed = true;
      }
      good++;
      continue;
    }
    // Manifest first: a crash in between leaves a data file without a manifest, which is ignored and removed later.
    await sfs.unlink(path.join(dir, `${m.name}.json`));
    await sfs.unlink(path.join(dir, `${m.name}.tkt`));
    deleted.push(m);
  }
  const removed = await removeLeftovers(sfs, dir, backups, opts.idle === true);
  if (deleted.length > 0 || removed.length > 0) await sfs.syncDir(dir);
  if (deleted.length > 0 || removed.length > 0) opts.logger?.info({ table, op: 'prune', deleted: deleted.map((m) => m.name), removed }, 'backups pruned');
  return deleted;
}

/** Removes partial copies, data files without a manifest and manifest temps older than the newest backup (of any time when `idle`: see pruneBackups). */
async function removeLeftovers(sfs: StoreFs, dir: string, backups: BackupManifest[], idle: boolean): Promise<string[]> {
  const newest = backups[0];
  const newestStamp = NAME_PATTERN.exec(newest.name)?.[2];
  if (newestStamp === undefined) return [];
  const listed = new Set(backups.map((m) => m.name));
  const names = await sfs.readdir(dir);
  const present = new Set(names);
  const removed: string[] = [];
  for (const entry of names) {
    const m = /^(.*?)(\.tkt\.partial|\.json\.tmp|\.tkt)$/.exec(entry);
    if (m === null) continue;
    const [, name, ext] = m;
    if (ext === '.tkt' && (listed.has(name) || present.has(`${name}.json`))) continue;
    const stamp = NAME_PATTERN.exec(name)?.[2];
    if (stamp === undefined || (stamp >= newestStamp && !idle)) continue;
    await sfs.unlink(path.join(dir, entry)).catch(() => undefined);
    removed.push(entry);
  }
  return removed;
}

/**
 * Copies bytes [0, length) of `from` into a new file `to`, makes it durable
 * and verifies it. Through an injected StoreFs, and for small files: copy,
 * then, while the copy's fdatasync runs, read it back and compare it byte for
 * byte with the table's bytes, hash it and scan it (inspectCopy). On the real
 * disk, for large files, in two worker threads at once: one copies, hashes,
 * and reads each window back after its fdatasync (copyInWorker), the other
 * checks every record of the table's bytes (which the copy equals byte for
 * byte); the live keys are counted from the table's index (LiveKeysAt), so
 * the report has no liveKeys then. Rejects when the copy or its fdatasync
 * fails (stage 'copy') or the read-back fails (stage 'verify'); differences
 * are problems in the report, and damage known to be in the table file is
 * also its tableDamage.
 */
async function copyAndVerify(
  sfs: StoreFs,
  from: string,
  to: string,
  length: number,
  keysHint: number,
  signal: AbortSignal,
  setStage: (stage: string) => void,
): Promise<CopyReport> {
  const src = await sfs.open(from, 'r');
  try {
    const dst = await sfs.open(to, 'w+');
    try {
      if (sfs === nodeStoreFs && length >= WORKER_MIN_BYTES) return await copyAndVerifyInWorkers(sfs, src, dst, length, signal, setStage);
      await copyPrefix(sfs, src, dst, length, signal);
      // The copy's bytes are what the read-back sees whether or not they are on disk yet, so the two overlap; the manifest waits for both.
      const syncing = sfs.fdatasync(dst).then(
        () => undefined,
        (err: unknown) => ({ err }),
      );
      setStage('verify');
      const reading = inspectCopy(sfs, to, length, keysHint, src, signal).then(
        (found) => ({ found }),
        (err: unknown) => ({ err }),
      );
      const [synced, read] = await Promise.all([syncing, reading]);
      if (synced !== undefined) {
        setStage('copy');
        throw synced.err;
      }
      if ('err' in read) throw read.err;
      return read.found;
    } finally {
      await sfs.close(dst).catch(() => undefined);
    }
  } finally {
    await sfs.close(src).catch(() => undefined);
  }
}

/** copyAndVerify on the real disk, in two worker threads (see there). */
async function copyAndVerifyInWorkers(sfs: StoreFs, src: number, dst: number, length: number, signal: AbortSignal, setStage: (stage: string) => void): Promise<CopyReport> {
  const report: CopyReport = { sha256: '', generation: undefined, records: 0, liveKeys: undefined, maxSeq: 0, problems: [] };
  const headerBuf = Buffer.alloc(FILE_HEADER_BYTES);
  const got = await readFully(sfs, src, headerBuf, 0, FILE_HEADER_BYTES, 0);
  const header = decodeFileHeader(headerBuf.subarray(0, got));
  if (typeof header === 'string') {
    // Read from the table's own descriptor: the damage is in the table file.
    report.problems.push(`header: ${header}`);
    report.tableDamage = { offset: 0, reason: header };
    return report;
  }
  report.generation = header.generation;
  // Both settle before the descriptors are closed (a closed number may be reused by another open).
  const [copy, records] = await Promise.allSettled([
    copyInWorker({ src, dst, length }, signal),
    checkRangeInWorker({ fd: src, start: FILE_HEADER_BYTES, end: length }, signal),
  ]);
  if (copy.status === 'rejected') {
    setStage((copy.reason as { stage?: string }).stage ?? 'copy');
    throw copy.reason;
  }
  setStage('verify');
  if (records.status === 'rejected') throw records.reason;
  const size = await sfs.size(dst);
  if (size !== length) report.problems.push(`file is ${size} bytes, expected ${length}`);
  const { differs, sha256 } = copy.value;
  if (differs !== undefined) report.problems.push(`copy read back differs from the bytes copied, in [${differs[0]}, ${differs[1]})`);
  const { damage } = records.value;
  if (damage !== undefined) {
    // The worker checked the table's bytes, not the copy's: the damage is in the table file.
    report.problems.push(`damaged record at offset ${damage.offset}: ${damage.reason}`);
    report.tableDamage = { offset: damage.offset, reason: damage.reason };
  }
  report.sha256 = sha256;
  report.records = records.value.records;
  report.maxSeq = records.value.maxSeq;
  return report;
}

/** Copies bytes [0, length) of `src` to `dst`; the read of the next chunk overlaps the write of this one. Stops (rejecting) when `signal` is aborted. */
async function copyPrefix(sfs: StoreFs, src: number, dst: number, length: number, signal: AbortSignal): Promise<void> {
  const bufs = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
  const readAt = async (pos: number, buf: Buffer): Promise<number> => {
    const n = Math.min(COPY_CHUNK_BYTES, length - pos);
    const got = await readFully(sfs, src, buf, 0, n, pos);
    if (got !== n) throw Object.assign(new Error(`table file is shorter than its durable length ${length}`), { code: 'EIO' });
    return n;
  };
  let pos = 0;
  let reading = length > 0 ? readAt(0, bufs[0]) : undefined;
  for (let i = 0; reading !== undefined; i++) {
    const n = await reading;
    const buf = bufs[i % 2];
    const writing = writeFully(sfs, dst, buf, 0, n, pos);
    // Settled below; these keep a failure from being reported as unhandled meanwhile.
    writing.catch(() => undefined);
    pos += n;
    reading = pos < length && !signal.aborted ? readAt(pos, bufs[(i + 1) % 2]) : undefined;
    reading?.catch(() => undefined);
    await writing;
    signal.throwIfAborted();
  }
}

/** What a read-back of a copy found. */
interface CopyReport {
  sha256: string;
  generation: number | undefined;
  records: number;
  /** Counted by the in-process scan; undefined when the workers checked the copy. */
  liveKeys: number | undefined;
  maxSeq: number;
  problems: string[];
  /**
   * Damage that is in the table file, not only in the copy: found in the
   * table's own bytes, or in bytes of the copy that equal them. Also one of
   * the problems.
   */
  tableDamage?: { offset: number; reason: string };
  /** Set once the read-back found a byte that differs from the source's (see sameAsSource; it then compares no more). */
  differsFromSource?: boolean;
}

/**
 * Reads `file` (which must be `length` bytes) once: its sha256, its header,
 * and every record (checksums, damage, counts). Works in time slices;
 * `keysHint` sizes the live key set (no rehash pauses when about right).
 * With `source` (a descriptor of the file it was copied from), also checks
 * that every byte read equals the source's byte at the same offset, and
 * damage found in bytes that do is the report's tableDamage. Rejects
 * with the signal's reason, at its next read, once `signal` is aborted.
 */
async function inspectCopy(sfs: StoreFs, file: string, length: number, keysHint: number, source?: number, signal?: AbortSignal): Promise<CopyReport> {
  const report: CopyReport = { sha256: '', generation: undefined, records: 0, liveKeys: 0, maxSeq: 0, problems: [] };
  const hash = createHash('sha256');
  const compare = source === undefined ? undefined : sameAsSource(sfs, source, report);
  const fd = await sfs.open(file, 'r');
  try {
    const size = await sfs.size(fd);
    if (size !== length) report.problems.push(`file is ${size} bytes, expected ${length}`);
    const headerBuf = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(sfs, fd, headerBuf, 0, Math.min(FILE_HEADER_BYTES, length), 0);
    await compare?.(headerBuf, 0, got, 0);
    hash.update(headerBuf.subarray(0, got));
    const header = decodeFileHeader(headerBuf.subarray(0, got));
    if (typeof header === 'string') {
      // The copy's full header, equal to the table's: the table's header is damaged.
      if (source !== undefined && report.problems.length === 0 && report.differsFromSource !== true) report.tableDamage = { offset: 0, reason: header };
      report.problems.push(`header: ${header}`);
    } else report.generation = header.generation;
    if (report.problems.length === 0 && length > FILE_HEADER_BYTES) await scanCopy(sfs, fd, length, report, hash, keysHint, compare, signal);
  } finally {
    await sfs.close(fd).catch(() => undefined);
  }
  report.sha256 = hash.digest('hex');
  return report;
}

/** Checks buf[start, end) against the source's bytes at `position`; notes the first difference in the report. */
type SourceCompare = (buf: Buffer, start: number, end: number, position: number) => Promise<void>;

function sameAsSource(sfs: StoreFs, source: number, report: CopyReport): SourceCompare {
  let spare = Buffer.allocUnsafe(0);
  return async (buf, start, end, position) => {
    if (report.differsFromSource === true || end <= start) return;
    const n = end - start;
    if (spare.length < n) spare = Buffer.allocUnsafe(n);
    const got = await readFully(sfs, source, spare, 0, n, position);
    if (got !== n || !buf.subarray(start, end).equals(spare.subarray(0, n))) {
      report.differsFromSource = true;
      report.problems.push(`copy read back differs from the bytes copied, in [${position}, ${position + n})`);
    }
  };
}

/**
 * Scans every record after the header: checksums, damage, counts. Each chunk
 * is compared with the source (when given) and hashed as soon as it is read,
 * before its records are scanned.
 */
async function scanCopy(
  sfs: StoreFs,
  fd: number,
  length: number,
  report: CopyReport,
  hash: Hash,
  keysHint: number,
  compare: SourceCompare | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  const keys = new ByteKeySet(Math.min(keysHint, 64 * 1024 * 1024));
  let unhashed: { buf: Buffer; start: number; end: number; position: number } | undefined;
  const cursor = new RecordCursor(sfs, fd, FILE_HEADER_BYTES, length, COPY_CHUNK_BYTES, {
    onRead: (buf, start, end, position) => {
      unhashed = { buf, start, end, position };
    },
  });
  const slicer = new TimeSlicer();
  const hashRead = async (): Promise<void> => {
    if (unhashed === undefined) return;
    const { buf, start, end, position } = unhashed;
    unhashed = undefined;
    await compare?.(buf, start, end, position);
    await hashInPieces(hash, buf, start, end, slicer);
  };
  for (;;) {
    const step = cursor.step();
    if (step === 'record') {
      const r = cursor.record;
      if (r.kind === KIND_PUT) keys.add(r.buf, r.keyStart, r.keyStart + r.keyBytes);
      else keys.delete(r.buf, r.keyStart, r.keyStart + r.keyBytes);
      if (r.seq > report.maxSeq) report.maxSeq = r.seq;
      report.records++;
      if (slicer.due()) await slicer.yield();
    } else if (step === 'more') {
      signal?.throwIfAborted();
      await cursor.fill();
      await hashRead();
      slicer.restart();
    } else if (step === 'end') {
      break;
    } else {
      const { offset, reason } = cursor.damage;
      report.problems.push(`damaged record at offset ${offset}: ${reason}`);
      // Every byte read so far was compared before its records were scanned: with no difference, the bad record is the table's.
      if (compare !== undefined && report.differsFromSource !== true) report.tableDamage = { offset, reason };
      break;
    }
  }
  report.liveKeys = keys.size;
}

/** hash.update over buf[start, end) in pieces of ~0.5 ms, yielding between them when the slice is used up. */
async function hashInPieces(hash: Hash, buf: Buffer, start: number, end: number, slicer: TimeSlicer): Promise<void> {
  for (let i = start; i < end; i += HASH_PIECE_BYTES) {
    hash.update(buf.subarray(i, Math.min(end, i + HASH_PIECE_BYTES)));
    if (slicer.dueNow()) await slicer.yield();
  }
}

/**
 * The number of keys live at offset L of a table file (put last in [0, L)),
 * from its index, without reading the file. Set up before the sync that
 * makes L durable, so that every record at L or above is appended while it
 * watches; counted as soon as L is known. A key's state at L is that before
 * its first record at or above L (the previous offset that append saw); for
 * every other key it is its state in the index then. A write rolled back in
 * between restores the index, and the appends after it reuse its offsets
 * (each is at or below the one before it, which is how the rollback shows):
 * what was noted for the dropped records is forgotten.
 */
class LiveKeysAt {
  // Appends seen, in order: [key, prevOffset, offset].
  private appends: [string, number, number][] = [];
  private readonly observer: AppendObserver = (key, prevOffset, offset) => {
    this.appends.push([key, prevOffset, offset]);
  };

  constructor(private readonly file: TableFile) {
    file.observeAppends(this.observer);
  }

  /** The keys live at `length`, the durable length after the sync; stops watching. */
  countAt(length: number): number {
    this.stop();
    // Per key with a record at or above length: [its offset before the first one (-1: absent), that record's offset].
    const before = new Map<string, [number, number]>();
    let last = -1;
    for (const [key, prevOffset, offset] of this.appends) {
      if (offset <= last) {
        for (const [k, [, at]] of before) if (at >= offset) before.delete(k);
      }
      last = offset;
      if (offset >= length && !before.has(key)) before.set(key, [prevOffset, offset]);
    }
    this.appends = [];
    let live = this.file.stats().records;
    for (const [key, [prevOffset]] of before) {
      if (this.file.has(key)) live--;
      if (prevOffset >= 0) live++;
    }
    return live;
  }

  stop(): void {
    this.file.observeAppends(undefined);
  }
}

/** The manifest in `text` when it is well-formed and belongs to `table` and `name`. */
function parseManifest(text: string, table: string, name: string): BackupManifest | undefined {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const counts = ['generation', 'length', 'records', 'liveKeys', 'maxSeq', 'formatVersion'] as const;
  if (m.table !== table || m.name !== name) return undefined;
  if (!counts.every((k) => Number.isSafeInteger(m[k]) && (m[k] as number) >= 0)) return undefined;
  if (typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256)) return undefined;
  if (typeof m.createdAt !== 'string' || Number.isNaN(Date.parse(m.createdAt))) return undefined;
  return {
    table,
    name,
    generation: m.generation as number,
    length: m.length as number,
    records: m.records as number,
    liveKeys: m.liveKeys as number,
    maxSeq: m.maxSeq as number,
    sha256: m.sha256,
    createdAt: m.createdAt,
    formatVersion: m.formatVersion as number,
  };
}

function newestFirst(a: BackupManifest, b: BackupManifest): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  if (a.generation !== b.generation) return b.generation - a.generation;
  return a.name < b.name ? 1 : a.name > b.name ? -1 : 0;
}
