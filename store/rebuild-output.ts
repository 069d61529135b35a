/**
 * The I/O side of a rebuild: reading chosen records back out of the source
 * files in increasing offset order, and writing the new table file through
 * a temporary name (write, fdatasync, rename, directory fsync).
 */
import { encodeFileHeader } from './format';
import { parentDir, readFully, StoreFs, writeFully } from './file-system';

const READ_CHUNK_BYTES = 1024 * 1024;
const WRITE_BUFFER_BYTES = 1024 * 1024;

/**
 * Forward-only positional reads of one source file, a chunk at a time:
 * `has` is synchronous, so copying many small records costs one await per
 * chunk, not one per record.
 */
export class SourceReader {
  private buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  private bufStart = 0;
  private bufLen = 0;

  constructor(
    private readonly sfs: StoreFs,
    private readonly fd: number,
    /** File length: reads never go past it. */
    private readonly end: number,
  ) {}

  /** True when [offset, offset + length) is in the buffer (then `view` may be called). */
  has(offset: number, length: number): boolean {
    return offset >= this.bufStart && offset + length <= this.bufStart + this.bufLen;
  }

  /** Reads a chunk starting at `offset` that holds at least `length` bytes. */
  async load(offset: number, length: number): Promise<void> {
    const want = Math.min(Math.max(READ_CHUNK_BYTES, length), this.end - offset);
    if (want > this.buf.length) this.buf = Buffer.allocUnsafe(want);
    const got = await readFully(this.sfs, this.fd, this.buf, 0, want, offset);
    if (got < length) throw Object.assign(new Error(`source file shrank while being read (wanted ${length} bytes at ${offset})`), { code: 'EIO' });
    this.bufStart = offset;
    this.bufLen = got;
  }

  /** Copies [start, end) into `writer` when it is all buffered (true); false (nothing copied) otherwise. */
  copySync(writer: TableWriter, start: number, end: number): boolean {
    if (!this.has(start, end - start)) return false;
    writer.append(this.buf, start - this.bufStart, end - this.bufStart);
    return true;
  }

  /** Copies [start, end) into `writer`, a chunk at a time, flushing the writer as it fills. */
  async copy(writer: TableWriter, start: number, end: number): Promise<void> {
    for (let pos = start; pos < end; ) {
      if (!this.has(pos, 1)) await this.load(pos, Math.min(end - pos, READ_CHUNK_BYTES));
      const upTo = Math.min(end, this.bufStart + this.bufLen);
      writer.append(this.buf, pos - this.bufStart, upTo - this.bufStart);
      pos = upTo;
      if (writer.full) await writer.flush();
    }
  }
}

/**
 * A new table file being written under a temporary name. `commit` makes it
 * durable and renames it into place; `abandon` removes the temporary file.
 */
export class TableWriter {
  private buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private len = 0;
  /** Bytes written to the file so far (header included), not counting the buffer. */
  private written = 0;
  private closed = false;

  private constructor(
    private readonly sfs: StoreFs,
    private readonly fd: number,
    private readonly tmpPath: string,
    private readonly outPath: string,
    private readonly noReplace: boolean,
  ) {}

  /**
   * Creates (or truncates) `tmpPath` and writes a header of `generation`.
   * With `noReplace` nothing existing is ever touched: `tmpPath` must not
   * exist (EEXIST, and nothing to abandon) and `commit` fails with EEXIST
   * rather than replace a file at `outPath`.
   */
  static async create(sfs: StoreFs, tmpPath: string, outPath: string, generation: number, opts: { noReplace?: boolean } = {}): Promise<TableWriter> {
    const noReplace = opts.noReplace === true;
    const fd = await sfs.open(tmpPath, noReplace ? 'wx+' : 'w+');
    const writer = new TableWriter(sfs, fd, tmpPath, outPath, noReplace);
    const header = encodeFileHeader(generation);
    writer.append(header, 0, header.length);
    return writer;
  }

  /** Length of the file once everything appended is written. */
  get length(): number {
    return this.written + this.len;
  }

  /** True when the buffer should be flushed before more is appended. */
  get full(): boolean {
    return this.len >= WRITE_BUFFER_BYTES;
  }

  /** Appends src[start, end) to the buffer (growing it when the bytes do not fit). */
  append(src: Buffer, start: number, end: number): void {
    const n = end - start;
    if (this.len + n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(bigger, 0, 0, this.len);
      this.buf = bigger;
    }
    src.copy(this.buf, this.len, start, end);
    this.len += n;
  }

  /** Writes the buffer to the file. */
  async flush(): Promise<void> {
    if (this.len === 0) return;
    await writeFully(this.sfs, this.fd, this.buf, 0, this.len, this.written);
    this.written += this.len;
    this.len = 0;
    if (this.buf.length > WRITE_BUFFER_BYTES) this.buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  }

  /**
   * Flushes, fdatasyncs, closes, renames over the output path and fsyncs its
   * directory. With `noReplace` the output gets its name by a link (which
   * fails when the output exists, with no window between check and rename),
   * then the temporary name is removed.
   */
  async commit(): Promise<void> {
    await this.flush();
    await this.sfs.fdatasync(this.fd);
    this.closed = true;
    await this.sfs.close(this.fd);
    if (this.noReplace) {
      await this.sfs.link(this.tmpPath, this.outPath);
      await this.sfs.unlink(this.tmpPath);
    } else {
      await this.sfs.rename(this.tmpPath, this.outPath);
    }
    await this.sfs.syncDir(parentDir(this.outPath));
  }

  /** Closes and removes the temporary file (best effort; for failure paths). */
  async abandon(): Promise<void> {
    // Never close twice: the descriptor number may belong to another file by now.
    if (!this.closed) {
      this.closed = true;
      await this.sfs.close(this.fd).catch(() => undefined);
    }
    await this.sfs.unlink(this.tmpPath).catch(() => undefined);
  }
}
