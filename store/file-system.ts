/**
 * The I/O seam of the table engine: everything the store does to the disk goes
 * through a `StoreFs`, so tests can make a chosen call fail (see
 * test/helpers/store-faulty-fs.ts) and later work (compaction, backup) uses the
 * same operations.
 *
 * Files are addressed by numeric descriptors and positional I/O; the engine
 * never relies on a file position. Only bytes and plain values cross the seam.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * How a file is opened: read-only, read-write, created/truncated read-write,
 * or created read-write only when it does not exist yet (EEXIST otherwise).
 */
export type OpenMode = 'r' | 'r+' | 'w+' | 'wx+';

/** Names of the StoreFs operations (used to target injected faults). */
export type StoreFsOp =
  | 'open'
  | 'read'
  | 'readSync'
  | 'write'
  | 'fdatasync'
  | 'truncate'
  | 'close'
  | 'size'
  | 'rename'
  | 'link'
  | 'unlink'
  | 'syncDir'
  | 'readdir'
  | 'mkdir';

/** Every disk operation the store performs. Errors are thrown as Node errno errors. */
export interface StoreFs {
  /** Opens a file; `w+` creates it or truncates it to zero. ENOENT when `r`/`r+` and missing. */
  open(file: string, mode: OpenMode): Promise<number>;
  /** Reads up to `length` bytes at `position`; returns the count (0 at end of file). */
  read(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** Synchronous positional read, used on the hot read path (served from the page cache). */
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  /** Writes up to `length` bytes at `position`; returns the count (may be short). */
  write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /**
   * Synchronous positional write (`write`'s faults apply to it), used for the
   * small appends of the write path, which go to the page cache. Optional:
   * without it every write goes through `write`.
   */
  writeSync?(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  /** Flushes the file's data (and the metadata needed to read it, such as its size) to stable storage. */
  fdatasync(fd: number): Promise<void>;
  /** Sets the file length. */
  truncate(fd: number, length: number): Promise<void>;
  /** Closes a descriptor. */
  close(fd: number): Promise<void>;
  /** Current length of an open file. */
  size(fd: number): Promise<number>;
  /** Atomically replaces `to` with `from`. */
  rename(from: string, to: string): Promise<void>;
  /** Gives `existing` the second name `newPath`; EEXIST when `newPath` exists (it never replaces a file). */
  link(existing: string, newPath: string): Promise<void>;
  /** Removes a file. */
  unlink(file: string): Promise<void>;
  /** Makes directory entries (create, rename, unlink) in `dir` durable. */
  syncDir(dir: string): Promise<void>;
  /** Names of the entries of a directory. */
  readdir(dir: string): Promise<string[]>;
  /** Creates a directory and its parents; no error when it exists. */
  mkdir(dir: string): Promise<void>;
}

/** The StoreFs of the real disk, on Node's `fs` callback API (no FileHandle objects). */
export class NodeStoreFs implements StoreFs {
  open(file: string, mode: OpenMode): Promise<number> {
    return new Promise((resolve, reject) => fs.open(file, mode, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))));
  }

  read(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) =>
      fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))),
    );
  }

  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    return fs.readSync(fd, buf, offset, length, position);
  }

  write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) =>
      fs.write(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))),
    );
  }

  writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    return fs.writeSync(fd, buf, offset, length, position);
  }

  fdatasync(fd: number): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  }

  truncate(fd: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve())));
  }

  close(fd: number): Promise<void> {
    return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
  }

  size(fd: number): Promise<number> {
    return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st.size))));
  }

  rename(from: string, to: string): Promise<void> {
    return fs.promises.rename(from, to);
  }

  link(existing: string, newPath: string): Promise<void> {
    return fs.promises.link(existing, newPath);
  }

  unlink(file: string): Promise<void> {
    return fs.promises.unlink(file);
  }

  async syncDir(dir: string): Promise<void> {
    const fd = await this.open(dir, 'r');
    try {
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
    } finally {
      await this.close(fd);
    }
  }

  readdir(dir: string): Promise<string[]> {
    return fs.promises.readdir(dir);
  }

  async mkdir(dir: string): Promise<void> {
    await fs.promises.mkdir(dir, { recursive: true });
  }
}

/** The shared default StoreFs (stateless). */
export const nodeStoreFs: StoreFs = new NodeStoreFs();

/** Reads exactly `length` bytes at `position` unless the file ends first; returns the count read. */
export async function readFully(
  sfs: StoreFs,
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await sfs.read(fd, buf, offset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** A StoreFs that has the optional synchronous write. */
export type SyncWriteFs = StoreFs & Required<Pick<StoreFs, 'writeSync'>>;

/** True when `sfs` offers the synchronous write. */
export function hasWriteSync(sfs: StoreFs): sfs is SyncWriteFs {
  return sfs.writeSync !== undefined;
}

/** writeFully with the StoreFs's synchronous write (see StoreFs.writeSync). */
export function writeFullySync(
  sfs: SyncWriteFs,
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): void {
  let done = 0;
  while (done < length) {
    const n = sfs.writeSync(fd, buf, offset + done, length - done, position + done);
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}

/** Writes all `length` bytes at `position`, retrying short writes. */
export async function writeFully(
  sfs: StoreFs,
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await sfs.write(fd, buf, offset + done, length - done, position + done);
    // A zero-byte write would loop forever; the OS reports real failures as errors.
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}

/** Writes `data` to `file` through a temp file: write, fdatasync, rename (the caller fsyncs the directory). */
export async function writeFileDurably(sfs: StoreFs, file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp`;
  const fd = await sfs.open(tmp, 'w+');
  try {
    await writeFully(sfs, fd, data, 0, data.length, 0);
    await sfs.fdatasync(fd);
  } finally {
    await sfs.close(fd).catch(() => undefined);
  }
  await sfs.rename(tmp, file);
}

/** The whole content of `file`. */
export async function readWholeFile(sfs: StoreFs, file: string): Promise<Buffer> {
  const fd = await sfs.open(file, 'r');
  try {
    const size = await sfs.size(fd);
    const buf = Buffer.alloc(size);
    const got = await readFully(sfs, fd, buf, 0, size, 0);
    return buf.subarray(0, got);
  } finally {
    await sfs.close(fd).catch(() => undefined);
  }
}

/**
 * Opens `file` read-only, runs `fn` on the descriptor and closes it;
 * resolves undefined, without calling `fn`, when there is no such file.
 */
export async function withFileIfExists<T>(sfs: StoreFs, file: string, fn: (fd: number) => Promise<T>): Promise<T | undefined> {
  let fd: number;
  try {
    fd = await sfs.open(file, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  try {
    return await fn(fd);
  } finally {
    await sfs.close(fd).catch(() => undefined);
  }
}

/** Identity of a file (device and inode), to tell whether a path still names an open file. */
export interface FileId {
  dev: bigint;
  ino: bigint;
}

/** Device and inode of an open descriptor (fstat, outside the StoreFs seam: metadata only). */
export function fileIdOf(fd: number): Promise<FileId> {
  return new Promise((resolve, reject) =>
    fs.fstat(fd, { bigint: true }, (err, st) => (err ? reject(err) : resolve({ dev: st.dev, ino: st.ino }))),
  );
}

/** True when `err` is a Node errno error with this code. */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** The directory holding `file`, for `syncDir` after creating or renaming it. */
export function parentDir(file: string): string {
  return path.dirname(path.resolve(file));
}
