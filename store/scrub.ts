/**
 * Scrub: a background check of a serving table file. It reads every byte
 * below the durable length through its own read-only descriptor and checks
 * the header and every record's checksum, in time slices, so requests keep
 * being served; and it checks that the path still names the file the table
 * has open (a deleted or replaced file is damage: the data then lives only
 * in the open descriptor, see TableFile.preserveIfMissing).
 *
 * Bytes below the durable length were fsynced whole and never change, so
 * any damaged range there is corruption, including one at the very end, and
 * so is a file shorter than its durable length (a range from its length to
 * the durable length, reason "the file shrank ...").
 * The scrub holds the table's maintenance slot ('scrub'): no compaction can
 * switch files under it, and it does not run beside a backup.
 */
import { FILE_HEADER_BYTES, decodeFileHeader } from './format';
import { StoreIoError, TablekeeperError } from './errors';
import { fileIdOf, isErrno, readFully } from './file-system';
import { RecordCursor } from './record-cursor';
import type { DamagedRange } from './record-scan';
import { TableFile } from './table-file';
import { SLICE_MS, TimeSlicer } from './time-slicer';

const SCRUB_CHUNK_BYTES = 1024 * 1024;

/** Options of scrubTable. */
export interface ScrubOptions {
  /** Synchronous work between yields to the event loop, in ms; default 0.5. */
  sliceMs?: number;
  /** Extra pause after each slice, in ms (throttles the scrub); default 0 (just yield). */
  pauseMs?: number;
  /** Aborts the scrub: it rejects with the signal's reason at its next yield. */
  signal?: AbortSignal;
}

/** What a scrub found. */
export interface ScrubReport {
  /** Records whose checksum was checked and holds. */
  records: number;
  /** Bytes checked: the durable length when the scrub started (header included); 0 when the file is missing. */
  bytes: number;
  /** Damaged ranges below the durable length, in file order; every one is corruption. */
  damaged: DamagedRange[];
  /** The path no longer names the open file: deleted, or replaced by another file. */
  fileMissing: boolean;
  /** Why the header is not valid (or not the open table's generation); absent when it is fine. */
  headerDamage?: string;
  durationMs: number;
}

/**
 * Checks every record of a serving table (see the module doc). Rejects
 * MaintenanceConflictError while a backup or compaction of the table runs,
 * TableClosedError when it is closed or starts closing (the scrub gives up
 * at its next yield), StoreIoError when reading fails, and the signal's
 * reason when aborted.
 */
export function scrubTable(file: TableFile, opts: ScrubOptions = {}): Promise<ScrubReport> {
  return file.runMaintenance('scrub', (closing) => scrub(file, { ...opts, signal: opts.signal === undefined ? closing : AbortSignal.any([opts.signal, closing]) }));
}

async function scrub(file: TableFile, opts: ScrubOptions): Promise<ScrubReport> {
  const started = performance.now();
  const sfs = file.fileSystem;
  opts.signal?.throwIfAborted();
  const report: ScrubReport = { records: 0, bytes: 0, damaged: [], fileMissing: false, durationMs: 0 };
  let fd: number;
  try {
    fd = await sfs.open(file.path, 'r');
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new StoreIoError(file.table, 'scrub', { cause: err });
    report.fileMissing = true;
    report.durationMs = performance.now() - started;
    return report;
  }
  let end = -1;
  try {
    const [ours, theirs] = await Promise.all([fileIdOf(fd), file.openFileId()]);
    if (ours.dev !== theirs.dev || ours.ino !== theirs.ino) {
      report.fileMissing = true;
      return report;
    }
    // Taken after the identity check; the maintenance slot keeps the file from being switched.
    end = file.durableLength;
    report.bytes = end;
    const size = await sfs.size(fd);
    const head = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(sfs, fd, head, 0, FILE_HEADER_BYTES, 0);
    const header = decodeFileHeader(head.subarray(0, got));
    if (typeof header === 'string') report.headerDamage = header;
    else if (header.generation !== file.generation) report.headerDamage = `header generation ${header.generation}, the open table has ${file.generation}`;
    const scanEnd = Math.min(end, size);
    if (scanEnd > FILE_HEADER_BYTES) await scanRecords(fd, file, scanEnd, report, opts);
    if (size < end) report.damaged.push(shrunk(size, end));
  } catch (err) {
    // Aborted (or the table closing): whatever failed meanwhile, the answer is the reason.
    if (opts.signal?.aborted === true) throw opts.signal.reason;
    if (err instanceof TablekeeperError) throw err;
    // Bytes below the durable length never go away: a file that shrank under
    // the scan lost fsynced records, which is damage, not a read failure.
    const size = end < 0 ? undefined : await sfs.size(fd).catch(() => undefined);
    if (size !== undefined && size < end) {
      report.damaged.push(shrunk(size, end));
      return report;
    }
    throw new StoreIoError(file.table, 'scrub', { cause: err });
  } finally {
    await sfs.close(fd).catch(() => undefined);
    report.durationMs = performance.now() - started;
  }
  return report;
}

/** The range a file lost by shrinking below its durable length. */
function shrunk(size: number, end: number): DamagedRange {
  return { type: 'damage', start: size, end, reason: `the file shrank below its durable length (${size} of ${end} bytes)`, tail: true };
}

async function scanRecords(fd: number, file: TableFile, end: number, report: ScrubReport, opts: ScrubOptions): Promise<void> {
  const slicer = new TimeSlicer(opts.sliceMs ?? SLICE_MS);
  const pause = async (): Promise<void> => {
    if (opts.pauseMs !== undefined && opts.pauseMs > 0) {
      await sleep(opts.pauseMs, opts.signal);
      slicer.restart();
    } else {
      await slicer.yield();
    }
    opts.signal?.throwIfAborted();
  };
  const cursor = new RecordCursor(file.fileSystem, fd, FILE_HEADER_BYTES, end, SCRUB_CHUNK_BYTES);
  for (;;) {
    const step = cursor.step();
    if (step === 'record') {
      report.records++;
      if (slicer.due()) await pause();
    } else if (step === 'more') {
      await cursor.fill();
      if (slicer.dueNow()) await pause();
      else opts.signal?.throwIfAborted();
    } else if (step === 'end') {
      return;
    } else {
      const { offset, reason } = cursor.damage;
      const next = await cursor.resync();
      report.damaged.push({ type: 'damage', start: offset, end: next < 0 ? end : next, reason, tail: next < 0 });
      await pause();
    }
  }
}

/** Waits `ms`, or until `signal` is aborted, whichever comes first. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
