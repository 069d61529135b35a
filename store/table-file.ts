/**
 * TableFile: one table as an append-only log of checksummed records with an
 * in-memory index (Bitcask-style). See format.ts for the bytes, table-load.ts
 * for open and the torn-tail rule, write-queue.ts for group commit and
 * failure recovery.
 *
 * Visibility: a put or delete is visible to get/has/select as soon as the
 * call returns its promise, before it is durable; the promise says when it is
 * durable per the sync policy. If the write then fails, the change is undone
 * (the key reads as before) and the promise rejects with StoreIoError.
 *
 * Reads are synchronous: a positional readSync of the one record (normally
 * from the page cache) into a reused buffer, or a copy from the batch in
 * memory when the record has not been written yet. Every read verifies the
 * record's checksum and key, and throws TableCorruptError rather than return
 * a wrong value. Values read from the file pass through a bounded cache
 * (read-cache.ts), so a value read again costs a lookup, not a system call.
 *
 * Maintenance: `compact` (compaction.ts) rewrites the file online and
 * backupTable (backup.ts) copies it; at most one of them runs at a time per
 * table (MaintenanceConflictError).
 */
import { resolve as resolvePath } from 'node:path';
import type { Logger } from 'pino';
import { tableLogger } from './table-logger';
import { BadRequestError, MaintenanceConflictError, StoreIoError, TableClosedError, TableCorruptError, ValueTooLargeError } from './errors';
import { AppendObserver, UndoObserver, COMPACT_SUFFIX, compactTable, CompactionHost, CompactionResult, CompactionSwitch, CompactOptions } from './compaction';
import { FILE_HEADER_BYTES, KIND_DELETE, KIND_PUT, MAX_VALUE_FIELD, RECORD_HEADER_BYTES, recordBytes, recordChecksumOk, u16, u32 } from './format';
import { fileIdOf, FileId, isErrno, nodeStoreFs, parentDir, readFully, StoreFs, writeFully } from './file-system';
import { KeyIndex } from './key-index';
import { validateKey } from './key-rules';
import { SortedKeys } from './key-order';
import { ReadCache, ReadCacheStats } from './read-cache';
import { scanRecords, ScanItem } from './record-scan';
import { LoadedTable, loadTable, openOrCreate, removeLeftover } from './table-load';
import { applyCutMarker, writeCutMarker } from './cut-marker';
import { WriteBatch } from './write-batch';
import { SyncPolicy, WriteQueue } from './write-queue';

/** Default largest value: 1 MiB. */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/** Default `limit` of select. */
export const SELECT_DEFAULT_LIMIT = 100;
/** Largest `limit` of select; larger requests are clamped to it. */
export const SELECT_MAX_LIMIT = 1000;
/**
 * Default bound on the keys and values of one select page, in bytes. Without
 * it a page was `limit` values of up to `maxValueBytes` each (1000 x 1 MiB),
 * all read and copied at once on the serving thread.
 */
export const SELECT_DEFAULT_MAX_BYTES = 4 * 1024 * 1024;
/** Default size of a table's read cache: 8 MiB. */
export const DEFAULT_READ_CACHE_BYTES = 8 * 1024 * 1024;

/** How to open a table file. */
export interface TableFileOptions {
  /** Table name, used in errors and logs. */
  table: string;
  /** File path; the file is created (with its header fsynced) when missing. Its directory must exist. */
  path: string;
  /** Durability policy; default 'always'. */
  sync?: SyncPolicy;
  /** Largest value in bytes; default 1 MiB. */
  maxValueBytes?: number;
  /** File system seam; default the real disk. */
  fs?: StoreFs;
  /** Logger; default silent. */
  logger?: Logger;
  /** Generation written in the header when the file is created; default 1. Ignored when it exists. */
  generation?: number;
  /** Bytes of verified values kept in memory for reads (see read-cache.ts); default 8 MiB, 0 for none. */
  readCacheBytes?: number;
}

/** What open found. */
export interface OpenReport {
  /** Valid records scanned (puts and deletes). */
  records: number;
  /** Bytes cut off the end as a torn write (0 when the file ended cleanly). */
  tornTailBytes: number;
  /** The file beside the table file that keeps the cut bytes, when they were not all zeros. */
  tornTailFile?: string;
  durationMs: number;
}

/** Exact space accounting; every byte count includes records not yet written. */
export interface TableStats {
  /** Live keys. */
  records: number;
  /** Records in the file, live or not (puts and deletes). */
  fileRecords: number;
  /** Header plus every record. */
  fileBytes: number;
  /** Bytes of the put records the index points at. */
  liveBytes: number;
  /** fileBytes - header - liveBytes: superseded puts and every delete record. */
  deadBytes: number;
  /** deadBytes / fileBytes (0 for a file with no dead bytes). */
  fragmentation: number;
  generation: number;
  /** Highest sequence number written so far (0 for a table with no records). */
  seq: number;
  /** The read cache: bytes held, entries, hits and misses since open. */
  readCache: ReadCacheStats;
}

/** Arguments of select. */
export interface SelectOptions {
  /** Only keys starting with this. */
  prefix?: string;
  /** Only keys after this one (exclusive): pass the previous page's `next`. */
  after?: string;
  /** Page size; default 100, at most 1000 (larger values are clamped). */
  limit?: number;
  /**
   * Bytes of keys and values (UTF-8) a page may hold; default 4 MiB. The page
   * stops before the item that would take it past this, with `next` set, but
   * always holds at least one item.
   */
  maxBytes?: number;
}

/** One page of select. */
export interface SelectResult {
  items: { key: string; value: Buffer }[];
  /** Present when more items match: the last returned key, to pass as `after`. */
  next?: string;
}

/** The kinds of maintenance that need a table to themselves. */
export type MaintenanceKind = 'compaction' | 'backup' | 'scrub';

/** Closes in progress, by absolute path of the table file. */
const closingFiles = new Map<string, Promise<void>>();

/** One table file, open for reads and appends. Create with `TableFile.open`. */
export class TableFile {
  /** Path of the file. */
  readonly path: string;
  readonly table: string;
  readonly openReport: OpenReport;
  private readonly sfs: StoreFs;
  private readonly logger: Logger;
  // The next three change together, synchronously, when a compaction switches files.
  private fd: number;
  private index: KeyIndex;
  private gen: number;
  private readonly queue: WriteQueue;
  private readonly maxValueBytes: number;
  // Built on the first select (one sort), then kept in step with the index.
  private order: SortedKeys | undefined;
  private seq: number;
  private fileRecords: number;
  private readBuf = Buffer.allocUnsafe(64 * 1024);
  private readonly cache: ReadCache;
  private closing: Promise<void> | undefined;
  private observer: AppendObserver | undefined;
  private undoObserver: UndoObserver | undefined;
  private maintenance: MaintenanceKind | undefined;
  // The running maintenance run: aborting tells it to give up; `settled` settles when it has.
  private running: { abort: AbortController; settled: Promise<void> } | undefined;

  private constructor(opts: TableFileOptions, fd: number, loaded: LoadedTable, report: OpenReport, logger: Logger) {
    this.path = opts.path;
    this.table = opts.table;
    this.sfs = opts.fs ?? nodeStoreFs;
    this.logger = logger;
    this.fd = fd;
    this.gen = loaded.generation;
    this.index = loaded.index;
    this.seq = loaded.seq;
    this.fileRecords = loaded.records;
    this.maxValueBytes = Math.min(opts.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES, MAX_VALUE_FIELD);
    this.openReport = report;
    this.cache = new ReadCache(opts.readCacheBytes ?? DEFAULT_READ_CACHE_BYTES);
    this.queue = new WriteQueue({
      table: opts.table,
      sfs: this.sfs,
      fd,
      policy: opts.sync ?? 'always',
      logger,
      end: loaded.end,
      undo: (batch) => this.undo(batch),
      keepCut: (length) => writeCutMarker(this.sfs, this.fd, this.path, length, this.logger),
    });
  }

  /**
   * Opens (or creates) a table file, scans it and rebuilds the index.
   * Rejects with TableCorruptError for a bad header or damage before the last
   * record, StoreIoError when the disk fails; a torn tail is cut and reported.
   */
  static async open(opts: TableFileOptions): Promise<TableFile> {
    const started = performance.now();
    const sfs = opts.fs ?? nodeStoreFs;
    const logger = tableLogger(opts.logger, opts.table);
    // A table of the same file that is still closing finishes first: the file is never in two hands.
    await closingFiles.get(resolvePath(opts.path))?.catch(() => undefined);
    await removeLeftover(sfs, opts.path + COMPACT_SUFFIX, logger);
    const fd = await openOrCreate(sfs, opts.table, opts.path, opts.generation ?? 1);
    try {
      // Before the scan: writes rejected before the last close that could not be cut then must not be read.
      await applyCutMarker(sfs, fd, opts.table, opts.path, logger);
      const loaded = await loadTable(sfs, fd, opts.table, opts.path, logger);
      const report: OpenReport = { records: loaded.records, tornTailBytes: loaded.tornTailBytes, durationMs: performance.now() - started };
      if (loaded.tornTailFile !== undefined) report.tornTailFile = loaded.tornTailFile;
      logger.debug({ ...report, keys: loaded.index.size }, 'table file open');
      return new TableFile(opts, fd, loaded, report, logger);
    } catch (err) {
      await sfs.close(fd).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Bytes of the file known to be fsynced; they never change again (backups
   * may copy them). Never decreases, except that a compaction switches to a
   * new, usually shorter, file (with a new generation).
   */
  get durableLength(): number {
    return this.queue.durableLength;
  }

  /** Generation from the file header; a compaction increments it. */
  get generation(): number {
    return this.gen;
  }

  /** The file system seam this table uses (backups and tools go through it too). */
  get fileSystem(): StoreFs {
    return this.sfs;
  }

  /**
   * Set when an I/O failure left the file in a state the engine could not
   * repair (or an fsync failed under a non-`always` policy): writes are then
   * refused with StoreIoError; reads still work. Reopen the file to recover.
   */
  get failed(): StoreIoError | undefined {
    return this.queue.failed;
  }

  /** The value of `key` (a copy), or undefined. Throws TableCorruptError if its record fails its checksum. */
  get(key: string): Buffer | undefined {
    const value = this.peek(key);
    return value === undefined ? undefined : copyOf(value);
  }

  /**
   * As `get`, without the copy: the bytes are the table's own (its read
   * cache's, or a buffer the next read reuses), so the caller reads them at
   * once, before any other call on this table, and never changes them. For
   * the request path, which copies the value straight into its reply.
   */
  peek(key: string): Buffer | undefined {
    this.checkOpen();
    const slot = this.index.slotOf(key);
    if (slot < 0) {
      // A key that breaks the key rules gets the same answer as from a write
      // (a stored key obeys them, so only a miss needs the check).
      validateKey(key);
      return undefined;
    }
    return this.readShared(key, this.index.offsetOf(slot), this.index.lengthOf(slot));
  }

  /** True when `key` exists, including writes not yet durable (from the index; reads nothing). */
  has(key: string): boolean {
    this.checkOpen();
    return this.index.has(key);
  }

  /**
   * Sets `key` to `value` (copied). Visible at once; resolves when durable per
   * policy. Rejects KeyInvalidError, ValueTooLargeError, TableClosedError, or
   * StoreIoError (the write failed and was undone, or the file has failed).
   */
  put(key: string, value: Uint8Array): Promise<void> {
    try {
      this.checkOpen();
      const keyBytes = validateKey(key);
      if (!(value instanceof Uint8Array)) throw new BadRequestError('value must be a Buffer or Uint8Array');
      if (value.length > this.maxValueBytes) throw new ValueTooLargeError(value.length, this.maxValueBytes, { details: { table: this.table, key } });
      return this.append(KIND_PUT, key, keyBytes, value).done;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Deletes `key` by appending a tombstone, only when the key exists. Resolves
   * true once the tombstone is durable per policy. When the key does not
   * exist nothing is written and it resolves false once every earlier write
   * is durable (the key's absence may be due to one of them), or rejects with
   * that write's StoreIoError. On a failed table it is refused like any
   * write, whether or not the key exists (the caller learns that the table
   * takes no writes, not just that there was nothing to delete).
   */
  delete(key: string): Promise<boolean> {
    try {
      this.checkOpen();
      const keyBytes = validateKey(key);
      this.queue.checkWritable();
      if (!this.index.has(key)) return this.queue.settledAll().then(() => false);
      return this.append(KIND_DELETE, key, keyBytes, undefined).done.then(() => true);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * One page of live keys in JS string order, with their values (checksums
   * verified). Cost: O(log n + limit) once the key order exists; the first
   * select after open builds it with one sort of all keys (~0.5 s at 1M
   * keys), later puts and deletes keep it up to date at O(log n + 1024) each.
   */
  select(opts: SelectOptions = {}): SelectResult {
    this.checkOpen();
    const prefix = opts.prefix ?? '';
    const { after } = opts;
    if (typeof prefix !== 'string') throw new BadRequestError('prefix must be a string');
    if (after !== undefined && typeof after !== 'string') throw new BadRequestError('after must be a string');
    const limit = selectLimit(opts.limit);
    const maxBytes = opts.maxBytes ?? SELECT_DEFAULT_MAX_BYTES;
    if (!(maxBytes >= 1)) throw new BadRequestError(`maxBytes must be at least 1, got ${maxBytes}`);
    if (this.order === undefined) this.order = SortedKeys.fromUnsorted(this.index.keys());
    const order = this.order;
    const pos = after !== undefined && after >= prefix ? order.seek(after, true) : order.seek(prefix, false);
    const items: { key: string; value: Buffer }[] = [];
    let bytes = 0;
    for (let key = order.keyAt(pos); key !== undefined && key.startsWith(prefix); key = order.keyAt(order.advance(pos))) {
      if (items.length === limit) return { items, next: items[items.length - 1].key };
      const slot = this.index.slotOf(key);
      const length = this.index.lengthOf(slot);
      // The record's key and value bytes, known from the index before reading
      // anything: a page of large values stops here, not once it is in memory.
      bytes += length - RECORD_HEADER_BYTES;
      if (bytes > maxBytes && items.length > 0) return { items, next: items[items.length - 1].key };
      items.push({ key, value: copyOf(this.readShared(key, this.index.offsetOf(slot), length)) });
    }
    return { items };
  }

  /** Exact space accounting (see TableStats). */
  stats(): TableStats {
    this.checkOpen();
    const fileBytes = this.queue.fileEnd;
    const liveBytes = this.index.liveBytes;
    const deadBytes = fileBytes - FILE_HEADER_BYTES - liveBytes;
    return {
      records: this.index.size,
      fileRecords: this.fileRecords,
      fileBytes,
      liveBytes,
      deadBytes,
      fragmentation: fileBytes === 0 ? 0 : deadBytes / fileBytes,
      generation: this.generation,
      seq: this.seq,
      readCache: this.cache.stats(),
    };
  }

  /**
   * Rewrites the file without dead records while the table keeps serving
   * (see compaction.ts for the phases and the tombstone rule). Writes are
   * held only for the final catch-up and the swap (`pausedMs`); reads never
   * stop. Rejects MaintenanceConflictError when a compaction or backup runs,
   * TableClosedError / StoreIoError for a closed or failed table,
   * TableCorruptError when a record of the old file fails its checksum, and
   * StoreIoError when the file system fails; in every one of those cases the
   * table keeps serving on the old file, unchanged, and the new file is
   * deleted. (Only a failed directory fsync after the rename leaves the table
   * on the new file, in the failed state: see `failed`.)
   */
  compact(opts: CompactOptions = {}): Promise<CompactionResult> {
    try {
      this.checkOpen();
      const keep = opts.keepTombstonesAbove;
      if (keep !== undefined && !(Number.isSafeInteger(keep) && keep >= 0)) {
        throw new BadRequestError(`keepTombstonesAbove must be a non-negative integer, got ${keep}`);
      }
      if (this.queue.failed !== undefined) throw new StoreIoError(this.table, 'compact', { cause: this.queue.failed, details: { failed: true } });
    } catch (err) {
      return Promise.reject(err);
    }
    return this.runMaintenance('compaction', (signal) => compactTable(this.compactionHost(signal), opts));
  }

  /**
   * Runs `fn` while holding the table's maintenance slot (for backupTable and
   * scrubTable); rejects MaintenanceConflictError without running it when a
   * compaction, backup or scrub already runs, TableClosedError when closed.
   * `signal` is aborted, with a TableClosedError as its reason, when the
   * table is about to close (close, preserveIfMissing): `fn` should then give
   * up soon, clean up and reject with that reason; the close waits for it.
   */
  runMaintenance<T>(kind: MaintenanceKind, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    let release: () => void;
    try {
      this.checkOpen();
      release = this.acquire(kind);
    } catch (err) {
      return Promise.reject(err);
    }
    const abort = new AbortController();
    let run: Promise<T>;
    try {
      run = fn(abort.signal);
    } catch (err) {
      run = Promise.reject(err);
    }
    const done = run.finally(() => {
      this.running = undefined;
      release();
    });
    this.running = { abort, settled: done.then(() => undefined, () => undefined) };
    return done;
  }

  /** Asks the running maintenance run (if any) to give up, and waits until it has settled. */
  private async stopMaintenance(): Promise<void> {
    const running = this.running;
    if (running === undefined) return;
    if (!running.abort.signal.aborted) running.abort.abort(new TableClosedError(this.table, { details: { during: this.maintenance } }));
    await running.settled;
  }

  /**
   * Sets (or clears) the observer called on every append, for backupTable
   * while it holds the maintenance slot (compaction, which needs the slot
   * too, uses the same hook).
   */
  observeAppends(observer: AppendObserver | undefined): void {
    this.observer = observer;
  }

  /** Writes and fdatasyncs everything appended so far, whatever the policy. */
  sync(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(new TableClosedError(this.table));
    return this.queue.sync();
  }

  /**
   * Flushes, fsyncs and closes the file. Idempotent (later calls return the
   * same promise); every other method then fails with TableClosedError.
   * Rejects StoreIoError if the final flush fails (the file is closed anyway).
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      const closing = (this.closing = (async () => {
        // A running compaction, backup or scrub gives up at its next step (a
        // compaction past its rename finishes the switch), and cleans up.
        await this.stopMaintenance();
        try {
          await this.queue.close();
        } finally {
          await this.sfs.close(this.fd).catch(() => undefined);
          this.index.clear();
          this.order = undefined;
        }
      })());
      // An open of the same path waits for this close (it may still cut the file, see WriteQueue.close).
      const key = resolvePath(this.path);
      closingFiles.set(key, closing);
      const forget = () => {
        if (closingFiles.get(key) === closing) closingFiles.delete(key);
      };
      closing.then(forget, forget);
    }
    return this.closing;
  }

  /**
   * Iterates the records in [fromOffset, durableLength at the time of the
   * call) in file order, with damaged ranges, through a separate read-only
   * descriptor (for verify, dump and scrubs while the table serves).
   */
  async *scan(fromOffset: number = FILE_HEADER_BYTES): AsyncGenerator<ScanItem> {
    this.checkOpen();
    const end = this.queue.durableLength;
    const fd = await this.sfs.open(this.path, 'r');
    try {
      yield* scanRecords(this.sfs, fd, fromOffset, end);
    } finally {
      await this.sfs.close(fd);
    }
  }

  /**
   * Device and inode of the file the table has open (fstat of its
   * descriptor, outside the StoreFs seam: metadata only). A scrub compares
   * it with the file at `path` to notice a deleted or replaced file.
   */
  openFileId(): Promise<FileId> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return fileIdOf(this.fd).catch((err: unknown) => {
      throw new StoreIoError(this.table, 'stat', { cause: err });
    });
  }

  /**
   * When the file at `path` no longer exists (it was deleted while open),
   * writes the bytes [0, durableLength) from the open descriptor back to
   * `path` (temp name, fdatasync, rename, directory fsync) and resolves
   * true; resolves false when the path exists. Everything appended so far
   * is fsynced first (best effort), so that it is included. Writes after
   * this go to the deleted file: call it right before closing the table.
   * Rejects StoreIoError when the copy fails (the path is then left as it was).
   */
  async preserveIfMissing(): Promise<boolean> {
    this.checkOpen();
    // A running compaction renames its own file over the path, and switches descriptors: it is stopped first.
    await this.stopMaintenance();
    if (await this.pathExists()) return false;
    await this.queue.sync().catch(() => undefined);
    const length = this.queue.durableLength;
    const tmp = `${this.path}.preserve`;
    try {
      const out = await this.sfs.open(tmp, 'w+');
      try {
        const buf = Buffer.allocUnsafe(Math.min(length, 1024 * 1024));
        for (let pos = 0; pos < length; ) {
          const n = await readFully(this.sfs, this.fd, buf, 0, Math.min(buf.length, length - pos), pos);
          if (n === 0) throw Object.assign(new Error(`open file is shorter than its durable length ${length}`), { code: 'EIO' });
          await writeFully(this.sfs, out, buf, 0, n, pos);
          pos += n;
        }
        await this.sfs.fdatasync(out);
      } finally {
        await this.sfs.close(out).catch(() => undefined);
      }
      await this.sfs.rename(tmp, this.path);
      await this.sfs.syncDir(parentDir(this.path));
    } catch (err) {
      await this.sfs.unlink(tmp).catch(() => undefined);
      throw new StoreIoError(this.table, 'preserve', { cause: err, details: { path: this.path } });
    }
    this.logger.warn({ op: 'preserve', bytes: length }, 'table file was deleted while open; rewrote it from the open descriptor');
    return true;
  }

  private async pathExists(): Promise<boolean> {
    try {
      await this.sfs.close(await this.sfs.open(this.path, 'r'));
      return true;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw new StoreIoError(this.table, 'open', { cause: err, details: { path: this.path } });
    }
  }

  private append(kind: typeof KIND_PUT | typeof KIND_DELETE, key: string, keyBytes: number, value: Uint8Array | undefined): WriteBatch {
    const length = recordBytes(keyBytes, value === undefined ? 0 : value.length);
    const offset = this.queue.fileEnd;
    // Throws (before any state changes) when the queue has failed.
    const batch = this.queue.append(kind, this.seq + 1, key, keyBytes, value, length);
    this.seq++;
    this.fileRecords++;
    const slot = this.index.slotOf(key);
    const prevOffset = slot < 0 ? -1 : this.index.offsetOf(slot);
    batch.noteUndo(key, prevOffset, slot < 0 ? 0 : this.index.lengthOf(slot));
    this.observer?.(key, prevOffset, offset);
    if (kind === KIND_PUT) {
      if (this.index.set(key, offset, length)) this.order?.insert(key);
    } else if (this.index.remove(key)) {
      this.order?.remove(key);
    }
    return batch;
  }

  /** Restores the index to before the batch's records, newest first. Sequence numbers are not reused. */
  private undo(batch: WriteBatch): void {
    // The file is cut back and its offsets handed out again: cached values
    // by offset no longer name the records that will be there.
    this.cache.clear();
    for (let i = batch.count - 1; i >= 0; i--) {
      const key = batch.keys[i];
      const prev = batch.prevOffsets[i];
      if (prev < 0) {
        if (this.index.remove(key)) this.order?.remove(key);
      } else if (this.index.set(key, prev, batch.prevLengths[i])) {
        this.order?.insert(key);
      }
      this.undoObserver?.(key);
    }
    this.fileRecords -= batch.count;
  }

  /**
   * Reads and verifies the put record of `key` at `offset`, and returns its
   * value: the read cache's buffer, or a view of the batch or read buffer.
   */
  private readShared(key: string, offset: number, length: number): Buffer {
    const cached = this.cache.get(offset, key);
    if (cached !== undefined) return cached;
    let buf: Buffer;
    let pos: number;
    const batch = this.queue.locate(offset);
    if (batch !== undefined) {
      buf = batch.buf;
      pos = offset - batch.base;
    } else {
      if (length > this.readBuf.length) this.readBuf = Buffer.allocUnsafe(Math.max(length, this.readBuf.length * 2));
      buf = this.readBuf;
      pos = 0;
      let n: number;
      try {
        n = this.sfs.readSync(this.fd, buf, 0, length, offset);
      } catch (err) {
        throw new StoreIoError(this.table, 'read', { cause: err, details: { offset } });
      }
      if (n !== length) throw new TableCorruptError(this.table, offset, `record cut short: read ${n} of ${length} bytes`);
    }
    const reason = checkStoredRecord(buf, pos, length, key);
    if (reason !== undefined) throw new TableCorruptError(this.table, offset, reason, { details: { key } });
    const valueStart = pos + RECORD_HEADER_BYTES + u16(buf, pos + 6);
    const value = buf.subarray(valueStart, pos + length);
    // Only records on disk: one still in a batch may yet be rolled back.
    if (batch === undefined) this.cache.set(offset, key, copyOf(value));
    return value;
  }

  private checkOpen(): void {
    if (this.closing !== undefined) throw new TableClosedError(this.table);
  }

  /** Takes the maintenance slot; returns its release. */
  private acquire(kind: MaintenanceKind): () => void {
    const running = this.maintenance;
    if (running !== undefined) throw new MaintenanceConflictError(this.table, kind, running);
    this.maintenance = kind;
    return () => {
      this.maintenance = undefined;
    };
  }

  /** The view of this table that a compaction works on. */
  private compactionHost(signal: AbortSignal): CompactionHost {
    const self = this;
    return {
      table: this.table,
      path: this.path,
      sfs: this.sfs,
      logger: this.logger,
      queue: this.queue,
      get fd() {
        return self.fd;
      },
      get generation() {
        return self.gen;
      },
      get seq() {
        return self.seq;
      },
      get index() {
        return self.index;
      },
      signal,
      observe(observer, onUndo) {
        self.observer = observer;
        self.undoObserver = observer === undefined ? undefined : onUndo;
      },
      install(next: CompactionSwitch) {
        // The key set is unchanged (same live keys), so the key order stays valid.
        self.fd = next.fd;
        self.index = next.index;
        // Same values, other offsets.
        self.cache.clear();
        self.gen = next.generation;
        self.fileRecords = next.fileRecords;
      },
    };
  }
}

/** Why the bytes at `pos` are not the put record of `key` the index expects, or undefined. */
function checkStoredRecord(buf: Buffer, pos: number, length: number, key: string): string | undefined {
  if (!recordChecksumOk(buf, pos, length)) return 'checksum mismatch';
  // The checksum holds, so these fields are as written; a mismatch means the
  // index points at the wrong bytes.
  if (buf[pos + 4] !== KIND_PUT) return `expected a put record, found kind ${buf[pos + 4]}`;
  const keyBytes = u16(buf, pos + 6);
  if (RECORD_HEADER_BYTES + keyBytes + u32(buf, pos + 8) !== length) return 'record length differs from the index';
  if (buf.toString('utf8', pos + RECORD_HEADER_BYTES, pos + RECORD_HEADER_BYTES + keyBytes) !== key) return 'record key differs from the index';
  return undefined;
}

/** A private copy of `bytes` (small ones from Node's shared pool). */
function copyOf(bytes: Buffer): Buffer {
  const out = Buffer.allocUnsafe(bytes.length);
  bytes.copy(out);
  return out;
}

function selectLimit(limit: number | undefined): number {
  if (limit === undefined) return SELECT_DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw new BadRequestError(`limit must be a positive integer, got ${limit}`);
  return Math.min(limit, SELECT_MAX_LIMIT);
}
