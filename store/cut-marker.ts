/**
 * The cut marker: how a rolled-back write stays rolled back when the file
 * cannot be cut.
 *
 * A failed write or fsync under `always` is undone by cutting the file back
 * to the end of the acknowledged records. When that truncate (or its fsync)
 * fails too, the rejected records are still in the file, and the next open
 * would read them back: a write whose caller was told it failed would
 * reappear. So the table writes `<table file>.cut` (temp name, fdatasync,
 * rename, directory fsync) naming the length to cut to and the file it
 * applies to (device and inode), and only then rejects the writes as undone.
 * The next open cuts the file to that length before it reads it, and
 * removes the marker.
 *
 * A marker that names another file (the table file was replaced since: a
 * restore or a recovery renames a new file into place) is stale and removed
 * unused. When the marker cannot be written either, the writes are rejected
 * with `undone: false`: they may be there after the next open.
 */
import { basename } from 'node:path';
import type { Logger } from 'pino';
import { StoreIoError, storeIo } from './errors';
import { fileIdOf, isErrno, parentDir, readWholeFile, StoreFs, withFileIfExists, writeFileDurably } from './file-system';

/** Suffix of the marker file beside the table file. */
export const CUT_SUFFIX = '.cut';

interface CutMarker {
  /** Length the table file must be cut to. */
  length: number;
  /** The table file it applies to (bigints as decimal strings). */
  dev: string;
  ino: string;
}

/**
 * Durably records that the file open at `fd` (the table file at `path`) must
 * be cut to `length` at its next open. Resolves false (after logging why)
 * when the marker could not be made durable.
 */
export async function writeCutMarker(sfs: StoreFs, fd: number, path: string, length: number, logger: Logger): Promise<boolean> {
  const file = path + CUT_SUFFIX;
  try {
    const id = await fileIdOf(fd);
    const marker: CutMarker = { length, dev: String(id.dev), ino: String(id.ino) };
    await writeFileDurably(sfs, file, Buffer.from(`${JSON.stringify(marker)}\n`));
    await sfs.syncDir(parentDir(path));
    logger.warn({ op: 'rollback', length }, 'could not cut the rejected writes off the file; the next open cuts them (marker written)');
    return true;
  } catch (err) {
    await sfs.unlink(`${file}.tmp`).catch(() => undefined);
    logger.error({ err, op: 'rollback', length }, 'could not cut the rejected writes off the file nor write a cut marker; they may be read back at the next open');
    return false;
  }
}

/**
 * At open, before the file is read: applies and removes the cut marker of
 * the table file open at `fd`, if there is one. Rejects StoreIoError when
 * the marker applies but the cut fails (the open must not read the
 * rejected records); a stale or unreadable marker is removed and logged.
 */
export async function applyCutMarker(sfs: StoreFs, fd: number, table: string, path: string, logger: Logger): Promise<void> {
  const file = path + CUT_SUFFIX;
  // A marker that never got its name (the disk failed while it was written) counts for nothing.
  await sfs.unlink(`${file}.tmp`).catch(() => undefined);
  const found = await readCutMarker(sfs, fd, table, file);
  if (found === 'none') return;
  if (found === 'unreadable') {
    logger.warn({ op: 'open', file }, 'removed an unreadable cut marker');
  } else if (found === 'stale') {
    logger.warn({ op: 'open', file }, 'removed a cut marker of a table file that has since been replaced');
  } else {
    const marker = found;
    const size = await storeIo(table, 'stat', () => sfs.size(fd));
    if (size > marker.length) {
      await storeIo(table, 'truncate', () => sfs.truncate(fd, marker.length));
      await storeIo(table, 'fsync', () => sfs.fdatasync(fd));
      logger.warn({ op: 'rollback', bytes: size - marker.length, offset: marker.length }, 'cut the writes rejected before the last close');
    }
  }
  await storeIo(table, 'remove-cut-marker', async () => {
    await sfs.unlink(file);
    await sfs.syncDir(parentDir(path));
  });
}

/**
 * The length the file open at `fd` must be cut to, from the cut marker of
 * the table file at `tablePath`, when that marker names this very file (a
 * quarantined table file is the same file under another name); undefined
 * otherwise. Reads only: for a rebuild of a quarantined file, which must
 * not take the rejected records back in.
 */
async function cutLengthOf(sfs: StoreFs, fd: number, table: string, tablePath: string): Promise<number | undefined> {
  const found = await readCutMarker(sfs, fd, table, tablePath + CUT_SUFFIX);
  return typeof found === 'object' ? found.length : undefined;
}

/**
 * cutLengthOf for the file at `file` (undefined when there is none): for a
 * rebuild of a quarantined file, the marker of the table path it had.
 */
export function cutLengthAt(sfs: StoreFs, table: string, file: string, tablePath: string): Promise<number | undefined> {
  return withFileIfExists(sfs, file, (fd) => cutLengthOf(sfs, fd, table, tablePath));
}

/**
 * For the offline tools: the length the table file at `file` would be cut to
 * at its next open, when a cut marker beside it names it (the bytes after
 * it are writes that were rejected); undefined otherwise.
 */
export function pendingCutOf(file: string, sfs: StoreFs): Promise<number | undefined> {
  return cutLengthAt(sfs, basename(file), file, file);
}

/**
 * When the cut marker of the table file at `tablePath` names the file at
 * `file` (the table file moved into quarantine: the same file under another
 * name), writes the same marker beside `file` (durably), so that the offline
 * tools run on it later leave the rejected writes out too. Resolves whether
 * it wrote one. The table path's marker stays: it is stale once another
 * file is at the table path, and the next open removes it.
 */
export async function keepCutMarkerWith(sfs: StoreFs, table: string, tablePath: string, file: string): Promise<boolean> {
  const found = await withFileIfExists(sfs, file, (fd) => readCutMarker(sfs, fd, table, tablePath + CUT_SUFFIX));
  if (typeof found !== 'object') return false;
  await storeIo(table, 'write-cut-marker', async () => {
    await writeFileDurably(sfs, file + CUT_SUFFIX, Buffer.from(`${JSON.stringify(found)}\n`));
    await sfs.syncDir(parentDir(file));
  });
  return true;
}

/** The marker in `file` when it names the file open at `fd`, or why not. */
async function readCutMarker(sfs: StoreFs, fd: number, table: string, file: string): Promise<CutMarker | 'none' | 'unreadable' | 'stale'> {
  let text: string;
  try {
    text = (await readWholeFile(sfs, file)).toString('utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return 'none';
    throw new StoreIoError(table, 'read-cut-marker', { cause: err, details: { path: file } });
  }
  const marker = parseMarker(text);
  if (marker === undefined) return 'unreadable';
  const id = await fileIdOf(fd).catch((err: unknown) => {
    throw new StoreIoError(table, 'stat', { cause: err });
  });
  return marker.dev === String(id.dev) && marker.ino === String(id.ino) ? marker : 'stale';
}

function parseMarker(text: string): CutMarker | undefined {
  try {
    const m = JSON.parse(text) as Partial<CutMarker>;
    if (Number.isSafeInteger(m.length) && (m.length as number) >= 0 && typeof m.dev === 'string' && typeof m.ino === 'string') {
      return m as CutMarker;
    }
  } catch {
    // Unreadable: the caller removes it.
  }
  return undefined;
}
