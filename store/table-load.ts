/**
 * Opening a table file: create it if missing, check the header, scan every
 * record into a fresh index, and cut off a torn tail.
 *
 * The torn-tail rule. The scan stops at the first record that is not valid
 * (header fields out of range, runs past the end of the file, or checksum
 * mismatch) and searches the rest of the file for any valid record:
 * - none follows: the damage is a torn write from a crash (an incomplete
 *   record, or a complete-length last record whose bytes did not all reach
 *   the disk, e.g. zeros). The file is truncated to the end of the last good
 *   record, fsynced, and the cut is logged and reported. Nothing acknowledged
 *   under `always` can be there: an acknowledged record was fsynced whole, and
 *   appends only follow it.
 * - a valid record follows: the damage is corruption (TableCorruptError with
 *   the damaged record's offset); nothing is modified.
 * Searching instead of trusting the length field means that a flipped bit in
 * a length in mid-file is reported as corruption rather than silently
 * truncating everything after it.
 *
 * The cut bytes are never simply dropped: unless they are all zeros (nothing
 * there to read), they are first written to `<table file>.torn-<offset>-<ms>`
 * beside the table file (after a table file header of the same generation,
 * so the offline tools read it as a table file) and fsynced, and the open report names that file.
 * Damage that only looks like a torn write (bit rot in the very last
 * records) so stays salvageable (`tablekeeper salvage`).
 */
import type { Logger } from 'pino';
import { StoreIoError, storeIo, TableCorruptError } from './errors';
import { decodeFileHeader, encodeFileHeader, FILE_HEADER_BYTES, KIND_DELETE, KIND_PUT, readSeq, RECORD_HEADER_BYTES } from './format';
import { isErrno, parentDir, readFully, StoreFs, writeFully } from './file-system';
import { KeyIndex, NOT_ASCII } from './key-index';
import { RecordCursor } from './record-cursor';

/** The state of a table file after it was opened and scanned. */
export interface LoadedTable {
  fd: number;
  generation: number;
  index: KeyIndex;
  /** Highest sequence number in the file (0 when it has no records). */
  seq: number;
  /** Number of valid records (puts and deletes) in the file. */
  records: number;
  /** File length after any torn tail was cut. */
  end: number;
  tornTailBytes: number;
  /** Where the cut bytes were kept (absent when nothing was cut, or they were all zeros). */
  tornTailFile?: string;
}

/** Opens `path` read-write, creating a new empty table file of `generation` when it does not exist. */
export async function openOrCreate(sfs: StoreFs, table: string, path: string, generation: number): Promise<number> {
  try {
    return await sfs.open(path, 'r+');
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new StoreIoError(table, 'open', { cause: err, details: { path } });
  }
  // Build the header under a temporary name and rename it into place: a crash
  // leaves either no table file or one with a whole, fsynced header.
  const tmp = `${path}.creating`;
  try {
    const header = encodeFileHeader(generation);
    const fd = await sfs.open(tmp, 'w+');
    try {
      await writeFully(sfs, fd, header, 0, header.length, 0);
      await sfs.fdatasync(fd);
    } finally {
      await sfs.close(fd);
    }
    await sfs.rename(tmp, path);
    await sfs.syncDir(parentDir(path));
    return await sfs.open(path, 'r+');
  } catch (err) {
    // Best effort: a leftover is harmless (the next create truncates it).
    await sfs.unlink(tmp).catch(() => undefined);
    throw new StoreIoError(table, 'create', { cause: err, details: { path } });
  }
}

/** Deletes a leftover of an interrupted compaction (never data: the table file is whole without it). */
export async function removeLeftover(sfs: StoreFs, file: string, logger: Logger): Promise<void> {
  try {
    await sfs.unlink(file);
    logger.warn({ op: 'open', file }, 'removed the leftover of an interrupted compaction');
  } catch (err) {
    // Harmless if it stays: the next compaction truncates it.
    if (!isErrno(err, 'ENOENT')) logger.warn({ err, op: 'open', file }, 'could not remove the leftover of an interrupted compaction');
  }
}

/** Reads and checks the header, rebuilds the index, truncates a torn tail. Closes nothing. `logger` carries the table binding. */
export async function loadTable(sfs: StoreFs, fd: number, table: string, path: string, logger: Logger): Promise<LoadedTable> {
  const size = await storeIo(table, 'stat', () => sfs.size(fd));
  const headerBuf = Buffer.alloc(FILE_HEADER_BYTES);
  const got = await storeIo(table, 'read', () => readFully(sfs, fd, headerBuf, 0, FILE_HEADER_BYTES, 0));
  const header = decodeFileHeader(headerBuf.subarray(0, got));
  if (typeof header === 'string') throw new TableCorruptError(table, 0, header);

  const index = new KeyIndex();
  const cursor = new RecordCursor(sfs, fd, FILE_HEADER_BYTES, size);
  let seq = 0;
  let records = 0;
  let end = size;
  for (;;) {
    const step = cursor.step();
    if (step === 'record') {
      const r = cursor.record;
      // ASCII keys go into the index as bytes: no string is made for them.
      const keyEnd = r.keyStart + r.keyBytes;
      if (r.kind === KIND_PUT) {
        if (index.setAscii(r.buf, r.keyStart, keyEnd, r.offset, r.length) === NOT_ASCII) index.set(r.buf.toString('utf8', r.keyStart, keyEnd), r.offset, r.length);
      } else if (index.removeAscii(r.buf, r.keyStart, keyEnd) === NOT_ASCII) {
        index.remove(r.buf.toString('utf8', r.keyStart, keyEnd));
      }
      if (r.seq > seq) seq = r.seq;
      records++;
    } else if (step === 'more') {
      await storeIo(table, 'read', () => cursor.fill());
    } else if (step === 'end') {
      break;
    } else {
      const { offset, reason } = cursor.damage;
      const next = await storeIo(table, 'read', () => cursor.resync());
      if (next >= 0) {
        throw new TableCorruptError(table, offset, reason, { details: { nextValidRecord: next } });
      }
      end = offset;
      break;
    }
  }

  const tornTailBytes = size - end;
  let tornTailFile: string | undefined;
  if (tornTailBytes > 0) {
    const cutSeq = await seqOfCutRecord(sfs, fd, table, end, size);
    // A tail that looks torn may be a record that was acknowledged (and even
    // backed up) and then damaged where it lies. Its number is never handed
    // out again: recovery merges by sequence number, and takes one number in
    // a backup and in the file to name the same record.
    if (cutSeq !== undefined && cutSeq > seq && cutSeq - seq <= MAX_SEQ_SKIP) seq = cutSeq;
    tornTailFile = await keepTornTail(sfs, fd, table, path, header.generation, end, size);
    await storeIo(table, 'truncate', () => sfs.truncate(fd, end));
    logger.warn({ op: 'open', bytes: tornTailBytes, offset: end, reason: cursor.damage.reason, keptIn: tornTailFile, seq }, 'torn tail truncated');
  }
  // Also makes durableLength honest: bytes a previous process wrote without
  // fsync (policy none) may still be only in the page cache.
  await storeIo(table, 'fsync', () => sfs.fdatasync(fd));
  return { fd, generation: header.generation, index, seq, records, end, tornTailBytes, tornTailFile };
}

const TAIL_CHUNK_BYTES = 1024 * 1024;
/** The most a cut record's sequence number may be above the last intact one's to be believed (beyond: a damaged header). */
const MAX_SEQ_SKIP = 2 ** 32;

/** The sequence number in the header of the record cut at `end`, when a whole header with a known kind is there. */
async function seqOfCutRecord(sfs: StoreFs, fd: number, table: string, end: number, size: number): Promise<number | undefined> {
  if (size - end < RECORD_HEADER_BYTES) return undefined;
  const head = Buffer.alloc(RECORD_HEADER_BYTES);
  const n = await storeIo(table, 'read', () => readFully(sfs, fd, head, 0, RECORD_HEADER_BYTES, end));
  if (n < RECORD_HEADER_BYTES || (head[4] !== KIND_PUT && head[4] !== KIND_DELETE)) return undefined;
  return readSeq(head, 0);
}

/**
 * Copies bytes [end, size) of the table file to `<path>.torn-<end>-<ms>` (fsynced,
 * directory too) before they are cut; resolves with its name, or undefined
 * when the bytes are all zeros. Fails the open rather than cut bytes it
 * could not keep.
 */
async function keepTornTail(sfs: StoreFs, fd: number, table: string, path: string, generation: number, end: number, size: number): Promise<string | undefined> {
  const buf = Buffer.allocUnsafe(Math.min(TAIL_CHUNK_BYTES, size - end));
  let zeros = true;
  for (let pos = end; pos < size && zeros; pos += buf.length) {
    const n = await storeIo(table, 'read', () => readFully(sfs, fd, buf, 0, Math.min(buf.length, size - pos), pos));
    for (let i = 0; i < n; i++) {
      if (buf[i] !== 0) {
        zeros = false;
        break;
      }
    }
  }
  if (zeros) return undefined;
  // The time keeps a second cut at the same offset (another crash) from overwriting the first.
  const file = `${path}.torn-${end}-${Date.now()}`;
  await storeIo(table, 'keep-torn-tail', async () => {
    const out = await sfs.open(file, 'w+');
    let kept = false;
    try {
      // A table file header first, so the offline tools (dump, verify, salvage) read it like any table file.
      const header = encodeFileHeader(generation);
      await writeFully(sfs, out, header, 0, header.length, 0);
      for (let pos = end; pos < size; pos += buf.length) {
        const n = await readFully(sfs, fd, buf, 0, Math.min(buf.length, size - pos), pos);
        await writeFully(sfs, out, buf, 0, n, header.length + pos - end);
      }
      await sfs.fdatasync(out);
      kept = true;
    } finally {
      await sfs.close(out).catch(() => undefined);
      // A partial copy is no keeper: nothing was cut yet, and the next open tries again.
      if (!kept) await sfs.unlink(file).catch(() => undefined);
    }
    await sfs.syncDir(parentDir(path));
  });
  return file;
}
