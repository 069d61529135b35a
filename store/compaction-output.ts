/**
 * The write side of a compaction: the new file's bytes, buffered and
 * written in the background while the copy goes on.
 *
 * Records to copy are first noted as a run (consecutive records in the
 * cursor's buffer are copied with one Buffer.copy: a copy per record
 * allocates a view each time), then copied into the write buffer; a full
 * buffer is written while the next one fills (two buffers).
 *
 * Every BACKGROUND_SYNC_BYTES written, an fdatasync of the file starts
 * behind the writes (one at a time, not waited for), so the new file's
 * dirty pages go to disk while the copy goes on rather than all in the
 * compaction's first sync (~120 ms for 166 MB here), and the table's own
 * fsyncs never have much of them to wait behind (ext4 in data=ordered mode
 * commits them together). Only `sync` counts as durable; a failed
 * background sync fails the next flush or sync.
 */
import type { RecordView } from './record-cursor';
import { RECORD_HEADER_BYTES } from './format';
import { StoreFs, writeFully } from './file-system';

/** Size of each of the two write buffers. */
export const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Bytes written between background fdatasyncs of the new file. */
export const BACKGROUND_SYNC_BYTES = 32 * 1024 * 1024;

/** The new file being built: its descriptor and everything written or buffered so far. */
export class CompactionOutput {
  private outBuf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private spareBuf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private outLen = 0;
  // New-file offset of outBuf[0]: bytes written or being written before it.
  private written = 0;
  private writing: Promise<void> = Promise.resolve();
  // The background fdatasync in flight, where the next one is due, and the first one's failure.
  private syncing: Promise<void> | undefined;
  private nextSyncAt: number;
  private syncFailure: { error: unknown } | undefined;
  private runBuf: Buffer | undefined;
  private runStart = 0;
  private runLen = 0;

  constructor(
    private readonly sfs: StoreFs,
    /** Descriptor of the new file. */
    readonly fd: number,
    /** Wraps each file operation (turns failures into the compaction's errors). */
    private readonly io: <T>(operation: string, fn: () => Promise<T>) => Promise<T>,
    /** Called after each buffer is handed to the file. */
    private readonly onFlushed: () => Promise<void>,
    /** Bytes written between background fdatasyncs. */
    private readonly syncEveryBytes = BACKGROUND_SYNC_BYTES,
  ) {
    this.nextSyncAt = syncEveryBytes;
  }

  /** Length of the new file once everything noted so far is written. */
  get end(): number {
    return this.written + this.outLen + this.runLen;
  }

  /** Bytes written (or being written) to the file, not counting the buffer. */
  get flushedEnd(): number {
    return this.written;
  }

  /** True when the buffer is full enough to be written. */
  get full(): boolean {
    return this.outLen + this.runLen >= WRITE_BUFFER_BYTES;
  }

  /** Writes the file header (before any record). */
  async writeHeader(header: Buffer): Promise<void> {
    await this.io('write', () => writeFully(this.sfs, this.fd, header, 0, header.length, 0));
    this.written = header.length;
  }

  /**
   * Notes a record (valid until the cursor's buffer changes: call copyRun
   * before the next fill) and returns its offset in the new file.
   */
  append(r: RecordView): number {
    const at = this.end;
    const start = r.keyStart - RECORD_HEADER_BYTES;
    if (this.runLen > 0 && (r.buf !== this.runBuf || start !== this.runStart + this.runLen)) this.copyRun();
    if (this.runLen === 0) {
      this.runBuf = r.buf;
      this.runStart = start;
    }
    this.runLen += r.length;
    return at;
  }

  /** Adds bytes of a whole record held elsewhere; returns its offset in the new file. */
  appendBytes(buf: Buffer): number {
    this.copyRun();
    const at = this.end;
    this.reserve(buf.length);
    buf.copy(this.outBuf, this.outLen);
    this.outLen += buf.length;
    return at;
  }

  /** Copies the pending run of records into the write buffer (the cursor's buffer is about to change). */
  copyRun(): void {
    if (this.runLen === 0) return;
    this.reserve(this.runLen);
    this.runBuf!.copy(this.outBuf, this.outLen, this.runStart, this.runStart + this.runLen);
    this.outLen += this.runLen;
    this.runLen = 0;
    this.runBuf = undefined;
  }

  /**
   * Starts writing the buffer (after the previous write finished) and swaps
   * in the spare; `wait` also waits for this write.
   */
  async flush(wait: boolean): Promise<void> {
    this.copyRun();
    await this.writing;
    if (this.syncFailure !== undefined) throw this.syncFailure.error;
    // Not for a waited flush: that ends a phase, and a sync of the file usually follows it.
    if (!wait && this.written >= this.nextSyncAt && this.syncing === undefined) this.syncBehind();
    if (this.outLen === 0) return;
    const buf = this.outBuf;
    const len = this.outLen;
    const at = this.written;
    this.outBuf = this.spareBuf.length >= WRITE_BUFFER_BYTES ? this.spareBuf : Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
    this.spareBuf = buf;
    this.outLen = 0;
    this.written += len;
    this.writing = this.io('write', () => writeFully(this.sfs, this.fd, buf, 0, len, at));
    // Awaited by the next flush; this only keeps a failure from being reported as unhandled meanwhile.
    this.writing.catch(() => undefined);
    if (wait) await this.writing;
    await this.onFlushed();
  }

  /** Writes everything noted so far and fdatasyncs the file. */
  async sync(): Promise<void> {
    await this.flush(true);
    await this.syncing;
    if (this.syncFailure !== undefined) throw this.syncFailure.error;
    await this.io('fdatasync', () => this.sfs.fdatasync(this.fd));
  }

  /** Waits for the write and background sync in flight, ignoring their failures (before closing the file after an error). */
  async settle(): Promise<void> {
    await this.writing.catch(() => undefined);
    await this.syncing;
  }

  /** Starts a background fdatasync of what is written so far (see the class doc). */
  private syncBehind(): void {
    this.nextSyncAt = this.written + this.syncEveryBytes;
    this.syncing = this.io('fdatasync', () => this.sfs.fdatasync(this.fd)).then(
      () => {
        this.syncing = undefined;
      },
      (err: unknown) => {
        this.syncFailure ??= { error: err };
        this.syncing = undefined;
      },
    );
  }

  private reserve(bytes: number): void {
    if (this.outLen + bytes <= this.outBuf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.outLen + bytes, this.outBuf.length * 2));
    this.outBuf.copy(grown, 0, 0, this.outLen);
    this.outBuf = grown;
  }
}
