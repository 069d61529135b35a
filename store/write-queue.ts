/**
 * The append path of a table file: batching, group commit, the durability
 * policy, and recovery from write and fsync failures.
 *
 * Records are encoded into the pending batch as soon as the caller asks (so
 * they are readable at once, see `locate`). One loop, started on the next
 * setImmediate, writes the whole pending batch with one positional write and,
 * under `always`, covers it with one fdatasync; every caller whose record was
 * in the batch shares one promise. Records appended while a write or fsync is
 * in flight go to the next batch: this is group commit, and it is why 64
 * concurrent writers cost about one fsync per round, not 64.
 *
 * Offsets, in order: durableLength <= writtenEnd <= fileEnd.
 * - [0, durableLength): fsynced; never changes again.
 * - [durableLength, writtenEnd): handed to the OS, not yet fsynced.
 * - [writtenEnd, fileEnd): only in memory, in the in-flight or pending batch.
 *
 * Compaction can pause the queue (appends still land in the pending batch and
 * are readable, but nothing is written) and, once it is idle, move it to a
 * new file (`switchFile`): the pending batch is then written there.
 */
import type { Logger } from 'pino';
import { StoreIoError } from './errors';
import { encodeRecord, RecordKind } from './format';
import { hasWriteSync, StoreFs, writeFully, writeFullySync } from './file-system';
import { WriteBatch } from './write-batch';

/**
 * When an acknowledged write is durable.
 * - `'always'`: fdatasync before the promise resolves (group commit).
 * - `{ intervalMs }`: resolve once written to the OS; fdatasync every intervalMs.
 * - `'none'`: resolve once written to the OS; fdatasync only on sync() and close().
 */
export type SyncPolicy = 'always' | 'none' | { intervalMs: number };

/** What the queue needs from its table file. */
export interface WriteQueueOptions {
  table: string;
  sfs: StoreFs;
  fd: number;
  policy: SyncPolicy;
  logger: Logger;
  /** Current file length: every byte below it is a good record (or the header). */
  end: number;
  /** Restores the index to its state before the batch's records (newest batch first). */
  undo(batch: WriteBatch): void;
  /**
   * Called when the file could not be cut back to `length` after a failed
   * write or fsync: durably records that the next open must cut it (see
   * cut-marker.ts). Resolves false when that failed too.
   */
  keepCut(length: number): Promise<boolean>;
}

interface Waiter {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

const MIN_BATCH_BYTES = 64 * 1024;
/**
 * Batches up to this size are written with a synchronous write on the
 * serving thread, when the StoreFs has one (the real disk does). The write
 * lands in the page cache in tens of microseconds, less than handing it to
 * the thread pool costs: waking a pool thread, which often preempts the
 * serving thread on its own core, then the completion callback. Reads
 * already work this way (StoreFs.readSync). Larger batches, of large
 * values, go to the pool so that one write never holds the event loop long.
 */
const SYNC_WRITE_MAX_BYTES = 256 * 1024;
// A batch buffer larger than this is not kept for reuse after one big record.
const MAX_SPARE_BYTES = 4 * 1024 * 1024;

/** Appends records to the end of one open table file and makes them durable per policy. */
export class WriteQueue {
  /** End of every record appended so far, written or not. */
  fileEnd: number;
  /** End of the bytes the OS has accepted. */
  writtenEnd: number;
  /** End of the bytes known to be fsynced. */
  durableLength: number;
  private pending: WriteBatch | undefined;
  // The most recently created batch; batches settle in order, so its `done` covers every earlier one.
  private newest: WriteBatch | undefined;
  private inflight: WriteBatch | undefined;
  private syncWaiter: Waiter | undefined;
  private looping = false;
  private failure: StoreIoError | undefined;
  // Set when a rollback could not cut the file: the length it must be cut to.
  private uncut: number | undefined;
  private spare: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly always: boolean;
  private fd: number;
  private paused = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: WriteQueueOptions) {
    this.fd = opts.fd;
    this.fileEnd = this.writtenEnd = this.durableLength = opts.end;
    this.always = opts.policy === 'always';
    if (typeof opts.policy === 'object') {
      this.timer = setInterval(() => {
        if (this.writtenEnd > this.durableLength || this.pending !== undefined) {
          // Failures are logged and put the queue in the failed state inside the loop.
          this.sync().catch(() => undefined);
        }
      }, opts.policy.intervalMs);
      this.timer.unref();
    }
  }

  /** The error that put the queue in the failed state, if any: further writes are refused. */
  get failed(): StoreIoError | undefined {
    return this.failure;
  }

  /** Throws the refusal every write gets once the queue has failed (for writes that append nothing, such as a delete of a missing key). */
  checkWritable(): void {
    if (this.failure !== undefined) throw this.refusal();
  }

  /**
   * Encodes a record at the end of the log and returns its batch; the record's
   * file offset is the `fileEnd` read just before the call. The caller records
   * the undo entry and awaits `batch.done`. Throws when the queue has failed.
   */
  append(kind: RecordKind, seq: number, key: string, keyBytes: number, value: Uint8Array | undefined, length: number): WriteBatch {
    this.checkWritable();
    let batch = this.pending;
    if (batch === undefined) {
      const buf = this.spare !== undefined && this.spare.length >= length ? this.spare : Buffer.allocUnsafe(Math.max(MIN_BATCH_BYTES, length));
      this.spare = undefined;
      batch = this.pending = this.newest = new WriteBatch(this.fileEnd, buf);
      this.schedule();
    }
    encodeRecord(batch.reserve(length), batch.len - length, kind, seq, key, keyBytes, value);
    this.fileEnd += length;
    return batch;
  }

  /** The in-memory batch holding the record at `offset`, when it has not been written yet. */
  locate(offset: number): WriteBatch | undefined {
    if (offset < this.writtenEnd) return undefined;
    const inflight = this.inflight;
    if (inflight !== undefined && offset < inflight.base + inflight.len) return inflight;
    return this.pending;
  }

  /**
   * Settles when everything appended so far is durable per policy (rejects if
   * it failed). For answers that depend on earlier, not yet durable writes.
   */
  settledAll(): Promise<void> {
    const newest = this.newest;
    return newest === undefined || newest.settled ? Promise.resolve() : newest.done;
  }

  /** Writes everything appended so far and fdatasyncs it (joins the next fsync). */
  sync(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.refusal());
    if (!this.looping && this.pending === undefined && this.writtenEnd === this.durableLength) return Promise.resolve();
    if (this.syncWaiter === undefined) this.syncWaiter = waiter();
    this.schedule();
    return this.syncWaiter.promise;
  }

  /**
   * Holds writes: appends keep going into the pending batch (readable, not
   * written), sync() waits, and no new write or fsync starts. Resolves once
   * the write and fsync in flight (if any) have finished, so the file no
   * longer changes. Undone by `resume`.
   */
  pause(): Promise<void> {
    this.paused = true;
    if (!this.looping) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Ends a pause: the held batch and any waiting sync go ahead. */
  resume(): void {
    this.paused = false;
    if (this.pending !== undefined || this.syncWaiter !== undefined) this.schedule();
  }

  /** The batch holding the appends made while paused (undefined when there are none). */
  get heldBatch(): WriteBatch | undefined {
    return this.pending;
  }

  /**
   * While paused and idle: continues on another file whose first `end` bytes
   * are durable. The held batch moves to offset `end` of the new file (its
   * records do not contain offsets); the caller fixes the index to match.
   */
  switchFile(fd: number, end: number): void {
    if (!this.paused || this.looping) throw new Error('switchFile needs a paused, idle queue');
    this.fd = fd;
    this.writtenEnd = this.durableLength = end;
    const held = this.pending;
    if (held !== undefined) held.rebase(end);
    this.fileEnd = end + (held === undefined ? 0 : held.len);
  }

  /**
   * Enters the failed state from outside the loop (compaction could not make
   * its switch durable): the held batch is rejected and undone, writes are
   * refused until the file is reopened.
   */
  failWith(error: StoreIoError): void {
    this.fail(error);
  }

  /** Stops the interval timer and makes everything appended durable (unless failed; then retries a rollback cut that failed). */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.failure === undefined) await this.sync();
    else await this.retryCut();
  }

  private schedule(): void {
    if (this.looping || this.paused) return;
    this.looping = true;
    // setImmediate, not a microtask: lets every caller of this tick join the batch.
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        // Paused: leave the pending batch and sync waiter for resume().
        if (this.paused) return;
        const batch = this.pending;
        const syncWaiter = this.syncWaiter;
        // `looping` is cleared in `finally` in this same synchronous step, so an
        // append after this check always schedules a new loop.
        if (batch === undefined && syncWaiter === undefined) return;
        this.pending = undefined;
        this.syncWaiter = undefined;
        let needSync = syncWaiter !== undefined;
        if (batch !== undefined) {
          this.inflight = batch;
          try {
            const sfs = this.opts.sfs;
            if (hasWriteSync(sfs) && batch.len <= SYNC_WRITE_MAX_BYTES) writeFullySync(sfs, this.fd, batch.buf, 0, batch.len, batch.base);
            else await writeFully(sfs, this.fd, batch.buf, 0, batch.len, batch.base);
          } catch (err) {
            await this.recoverFromWrite(err, batch, syncWaiter);
            continue;
          }
          // Both together: a reader never sees the batch neither in memory nor below writtenEnd.
          this.inflight = undefined;
          this.writtenEnd = batch.base + batch.len;
          this.recycle(batch);
          if (this.always) needSync = true;
          else batch.resolve();
        }
        if (needSync) {
          // Only bytes written before the fsync started are covered by it.
          const target = this.writtenEnd;
          try {
            await this.opts.sfs.fdatasync(this.fd);
          } catch (err) {
            await this.recoverFromSync(err, this.always ? batch : undefined, syncWaiter);
            continue;
          }
          this.durableLength = target;
          if (this.always && batch !== undefined) batch.resolve();
          syncWaiter?.resolve();
        }
        // Callers resumed by resolve() append in microtasks; collect them into one batch.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      // Only a bug gets here; fail closed rather than leave callers waiting.
      this.fail(new StoreIoError(this.opts.table, 'commit', { cause: err }), this.inflight);
      this.inflight = undefined;
    } finally {
      this.looping = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /**
   * A write failed (possibly after writing part of the batch). Rejects the
   * batch and every record queued after it (their offsets assumed it), undoes
   * them in the index, and truncates the file back to writtenEnd.
   */
  private async recoverFromWrite(cause: unknown, batch: WriteBatch, syncWaiter: Waiter | undefined): Promise<void> {
    this.opts.logger.error({ err: cause, op: 'write', offset: batch.base, bytes: batch.len }, 'write failed; rolling back');
    this.inflight = undefined;
    const dropped = this.abandon(batch);
    const undone = await this.truncateTo(this.writtenEnd);
    // Rejected only now, so a caller that sees the error finds the file consistent.
    const error = new StoreIoError(this.opts.table, 'write', { cause, details: { offset: batch.base, ...(undone ? {} : { undone }) } });
    for (const b of dropped) b.reject(error);
    syncWaiter?.reject(error);
  }

  /**
   * An fdatasync failed: what it covered is of unknown durability (after a
   * failed fsync Linux may drop the dirty pages). Under `always` nothing past
   * durableLength was acknowledged, so it is all rejected, undone and truncated
   * away. Under the other policies acknowledged writes cannot be taken back:
   * the queue fails and the owner must reopen the file.
   */
  private async recoverFromSync(cause: unknown, batch: WriteBatch | undefined, syncWaiter: Waiter | undefined): Promise<void> {
    const durableLength = this.durableLength;
    if (!this.always) {
      const error = new StoreIoError(this.opts.table, 'fsync', { cause, details: { durableLength } });
      syncWaiter?.reject(error);
      this.fail(error);
      return;
    }
    this.opts.logger.error({ err: cause, op: 'write', bytes: this.fileEnd - durableLength }, 'fsync failed; rolling back');
    // Set first: abandon() moves fileEnd back to writtenEnd.
    this.writtenEnd = durableLength;
    const dropped = this.abandon(batch);
    const undone = await this.truncateTo(durableLength);
    const error = new StoreIoError(this.opts.table, 'fsync', { cause, details: { durableLength, ...(undone ? {} : { undone }) } });
    for (const b of dropped) b.reject(error);
    syncWaiter?.reject(error);
  }

  /**
   * Drops the pending batch and then `older` from the log and undoes them in
   * the index (newest first), at once, so no reader sees them again. Returns
   * them for the caller to reject.
   */
  private abandon(older: WriteBatch | undefined): WriteBatch[] {
    const dropped: WriteBatch[] = [];
    for (const b of [this.pending, older]) {
      if (b === undefined) continue;
      this.opts.undo(b);
      dropped.push(b);
    }
    this.pending = undefined;
    this.fileEnd = this.writtenEnd;
    return dropped;
  }

  /**
   * Cuts the file back to a record boundary and fsyncs the cut. If that
   * fails, the queue fails, and the cut is left to the next open (a cut
   * marker) or, failing that too, to close (`retryCut`). Resolves true when
   * the rejected records are sure to be gone: cut now, or at the next open.
   */
  private async truncateTo(length: number): Promise<boolean> {
    try {
      await this.opts.sfs.truncate(this.fd, length);
      await this.opts.sfs.fdatasync(this.fd);
      // The fsync after the cut covers every byte below it.
      this.durableLength = length;
      return true;
    } catch (err) {
      this.fail(new StoreIoError(this.opts.table, 'truncate', { cause: err, details: { length } }));
      this.uncut = length;
      return this.opts.keepCut(length);
    }
  }

  /**
   * On close of a failed queue whose rollback could not cut the file: tries
   * the cut once more (the failure may have passed). Never throws.
   */
  private async retryCut(): Promise<void> {
    const length = this.uncut;
    if (length === undefined) return;
    try {
      await this.opts.sfs.truncate(this.fd, length);
      await this.opts.sfs.fdatasync(this.fd);
      this.uncut = undefined;
      this.opts.logger.warn({ op: 'rollback', offset: length }, 'cut the rejected writes off the file at close');
    } catch (err) {
      this.opts.logger.error({ err, op: 'rollback', offset: length }, 'could not cut the rejected writes off the file at close either');
    }
  }

  /** Enters the failed state: rejects the pending batch (and `older`, not yet written) and every later write. */
  private fail(error: StoreIoError, older?: WriteBatch): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    this.opts.logger.error({ err: error, op: 'write' }, 'table file failed; writes are refused until it is reopened');
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const b of this.abandon(older)) b.reject(error);
    this.syncWaiter?.reject(error);
    this.syncWaiter = undefined;
  }

  private refusal(): StoreIoError {
    return new StoreIoError(this.opts.table, 'write', { cause: this.failure, details: { failed: true } });
  }

  private recycle(batch: WriteBatch): void {
    if (batch.buf.length <= MAX_SPARE_BYTES) this.spare = batch.buf;
  }
}

function waiter(): Waiter {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
