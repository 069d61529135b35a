/**
 * Online compaction of a table file: copy the live records into a new file
 * while the table keeps serving, then swap. See TableFile.compact.
 *
 * Phases:
 * 1. No pause. Note O = the end of every record appended so far, wait until
 *    everything below O is stable (written, and fsynced under `always`: a
 *    failed write or fsync cuts the file back and reuses offsets), then copy
 *    the records that are live as of O into `<path>.compact` (generation+1),
 *    reading the old file sequentially and checking every checksum.
 * 2. No pause. Repeat for the records appended after the previous round's end
 *    (puts and deletes, in log order) until the tail is small; fdatasync the
 *    bulk of the new file outside the pause.
 * 3. Pause writes (they are accepted into the held batch, readable, not
 *    written), wait for the write in flight, copy the last tail, fdatasync,
 *    rename over the table path, fsync the directory, then switch the
 *    descriptor, index and generation and resume: the held batch is written
 *    to the new file.
 *
 * "Live as of O" while writes go on: each round watches the appends made
 * after it noted O and keeps, per key, its location before the first of them
 * (`firstPrev`); a key's location as of O is that, or else its location in
 * the live index. The final round, paused, reads the same from the held
 * batch's undo log. A record is copied when it is its key's location as of the
 * round's end, so superseded records are never copied, and the new file keeps
 * the old file's order (sequence numbers stay increasing).
 *
 * Tombstones. A delete record is written to the new file only when it is the
 * last record of its key in the round (a later put or delete of the key in
 * the same round makes it redundant) and
 * - the new file holds an earlier put of the key (without the tombstone that
 *   put would come back on reopen), or
 * - its sequence number is above `keepTombstonesAbove` (a later merge with a
 *   backup taken at that sequence needs it), or
 * - it carries the highest sequence number of the old file (so that the
 *   sequence never goes backwards on reopen).
 * Whether a later delete follows in the round is found by a quick pre-pass
 * over the round's range; it is skipped in round one when no record can
 * qualify for keepTombstonesAbove.
 *
 * Crash safety: the old file is never written. Until the rename a crash
 * leaves the old file whole at the table path (the leftover `.compact` is
 * deleted on open); the new file is fdatasynced before the rename, so after
 * it either name resolves to a whole file holding the same records up to the
 * switch. Writes held during the pause are acknowledged only after the
 * directory fsync, from the new file.
 */
import type { Logger } from 'pino';
import { StoreIoError, TableClosedError, TableCorruptError, TablekeeperError } from './errors';
import { encodeFileHeader, FILE_HEADER_BYTES, KIND_DELETE, KIND_PUT, RECORD_HEADER_BYTES, recordChecksumOk, recordLengthAt } from './format';
import { parentDir, readFully, StoreFs, writeFully } from './file-system';
import { KeyIndex } from './key-index';
import { RecordCursor, RecordView } from './record-cursor';
import { TimeSlicer } from './time-slicer';
import { WriteQueue } from './write-queue';

/** Suffix of the file a compaction builds next to the table file; a leftover is deleted on open. */
export const COMPACT_SUFFIX = '.compact';

/** Points of a compaction where `onStep` is called (and awaited). */
export type CompactionStep =
  /** The new file exists with its header; nothing copied yet. */
  | 'started'
  /** A buffer of copied records reached the new file (called after each write). */
  | 'flushed'
  /** The bulk copy is done and fdatasynced; writes are about to be paused. */
  | 'caught-up'
  /** Writes are held; the last tail is not copied yet. */
  | 'paused'
  /** The new file is complete and fdatasynced, not yet renamed. */
  | 'before-rename'
  /** Renamed over the table path; the directory is not fsynced yet. */
  | 'renamed'
  /** The directory is fsynced; the table still uses the old descriptor. */
  | 'dir-synced'
  /** The table uses the new file and writes have resumed. */
  | 'switched';

/** Options of TableFile.compact. */
export interface CompactOptions {
  /**
   * Delete records with a sequence number above this are kept even though
   * their key is absent (pass the latest verified backup's maxSeq, so that a
   * merge of that backup with this file by sequence cannot resurrect a
   * deleted key). Default: drop every tombstone that is not needed to keep a
   * copied put dead, except the one carrying the table's highest sequence.
   */
  keepTombstonesAbove?: number;
  /** Called at each step, awaited; for crash tests and tracing. Errors before the rename abort the compaction. */
  onStep?: (step: CompactionStep) => void | Promise<void>;
}

/** What a compaction did. */
export interface CompactionResult {
  status: 'compacted';
  /** Length of the old file when it was replaced (writes held at the switch not included). */
  bytesBefore: number;
  /** Length of the new file at the switch. */
  bytesAfter: number;
  /** Records written to the new file, tombstones included. */
  recordsCopied: number;
  /** Delete records written to the new file. */
  tombstonesKept: number;
  /** Generation of the new file. */
  generation: number;
  /** Copy rounds before the pause (phase 1 is round one). */
  rounds: number;
  durationMs: number;
  /** How long writes were held (phase 3). */
  pausedMs: number;
}

/** Called on every append while set, before the index changes: the key and its previous record offset (-1 = absent). */
export type AppendObserver = (key: string, prevOffset: number) => void;

/** The new state a compaction installs in its table file. */
export interface CompactionSwitch {
  fd: number;
  generation: number;
  index: KeyIndex;
  /** Records in the new file plus those in the held batch. */
  fileRecords: number;
}

/** What compaction needs from its table file (internal to store/). */
export interface CompactionHost {
  readonly table: string;
  readonly path: string;
  readonly sfs: StoreFs;
  readonly logger: Logger;
  readonly queue: WriteQueue;
  readonly fd: number;
  readonly generation: number;
  /** Highest sequence number written so far. */
  readonly seq: number;
  /** The live index (changes with every write). */
  readonly index: KeyIndex;
  /** True once close() was called: give up unless already renamed. */
  readonly closeRequested: boolean;
  /** Sets or clears the append observer. */
  observe(observer: AppendObserver | undefined): void;
  /** Switches the table to the new file (synchronously; the queue is already switched). */
  install(next: CompactionSwitch): void;
}

// Below this many bytes appended since the last round, stop catching up and pause.
const SMALL_TAIL_BYTES = 64 * 1024;
// Catch-up rounds before pausing anyway (writers faster than the copy).
const MAX_ROUNDS = 16;
const READ_CHUNK_BYTES = 4 * 1024 * 1024;
const WRITE_BUFFER_BYTES = 1024 * 1024;

/** Runs one compaction of the host's table. The caller holds the table's maintenance slot. */
export function compactTable(host: CompactionHost, opts: CompactOptions): Promise<CompactionResult> {
  return new Compaction(host, opts).run();
}

class Compaction {
  private readonly tmp: string;
  private readonly keepAbove: number;
  private readonly next: KeyIndex;
  private readonly generation: number;
  private out = -1;
  private outBuf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private spareBuf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private outLen = 0;
  // Records to copy that lie back to back in the cursor's buffer: copied in
  // one go (a Buffer.copy per record allocates a view each time).
  private runBuf: Buffer | undefined;
  private runStart = 0;
  private runLen = 0;
  // New-file offset of outBuf[0]: bytes written or being written before it.
  private outEnd = 0;
  private writing: Promise<void> = Promise.resolve();
  // Old-file offset up to which records have been processed.
  private copied = FILE_HEADER_BYTES;
  private records = 0;
  private tombstones = 0;
  private rounds = 0;
  // The record with the highest sequence seen, when it is a delete that was not written.
  private maxSeq = 0;
  private maxTombstone: { offset: number; length: number } | undefined;
  private readonly slicer = new TimeSlicer();

  constructor(
    private readonly host: CompactionHost,
    private readonly opts: CompactOptions,
  ) {
    this.tmp = host.path + COMPACT_SUFFIX;
    this.keepAbove = opts.keepTombstonesAbove ?? Infinity;
    this.generation = host.generation + 1;
    // Sized for the live keys now, so that building it never rehashes.
    this.next = new KeyIndex(host.index.size + 1024);
  }

  async run(): Promise<CompactionResult> {
    const { host } = this;
    const { queue } = host;
    const started = performance.now();
    const oldFd = host.fd;
    let paused = false;
    let pausedAt = 0;
    let renamed = false;
    try {
      this.out = await this.io('open', () => host.sfs.open(this.tmp, 'w+'));
      const header = encodeFileHeader(this.generation);
      await this.io('write', () => writeFully(host.sfs, this.out, header, 0, header.length, 0));
      this.outEnd = header.length;
      await this.step('started');

      // Phases 1 and 2: catch up with the writers without stopping them.
      let synced = this.outEnd;
      do {
        await this.round();
        // What is copied goes to disk outside the pause, so the fdatasync in it is short.
        if (this.outEnd + this.outLen - synced > SMALL_TAIL_BYTES) {
          await this.sync();
          synced = this.outEnd;
        }
      } while (this.rounds < MAX_ROUNDS && queue.fileEnd - this.copied > SMALL_TAIL_BYTES);
      await this.flush(true);
      await this.step('caught-up');

      // Phase 3: hold writes, copy the last tail, swap.
      pausedAt = performance.now();
      paused = true;
      await queue.pause();
      await this.step('paused');
      this.checkLive();
      await this.finalRound();
      await this.sync();
      await this.step('before-rename');
      await this.io('rename', () => host.sfs.rename(this.tmp, host.path));
      renamed = true;
    } catch (err) {
      host.observe(undefined);
      await this.discard();
      if (paused) queue.resume();
      host.logger.warn({ err, ms: Math.round(performance.now() - started) }, 'compaction failed; the table stays on the old file');
      throw err;
    }

    // Renamed: the new file is the table now, whatever happens next.
    let dirError: unknown;
    try {
      await this.step('renamed');
      await host.sfs.syncDir(parentDir(host.path));
      await this.step('dir-synced');
    } catch (err) {
      dirError = err;
    }
    const bytesBefore = queue.writtenEnd;
    this.switchFile();
    if (dirError !== undefined) {
      // The rename may not survive a crash, so nothing may be acknowledged
      // from the new file: fail the table (the held writes are rejected).
      const error = new StoreIoError(host.table, 'compact', { cause: dirError, details: { step: 'syncDir' } });
      queue.failWith(error);
      queue.resume();
      await host.sfs.close(oldFd).catch(() => undefined);
      throw error;
    }
    queue.resume();
    const pausedMs = performance.now() - pausedAt;
    // After resuming: the last close of the replaced file frees its blocks, which can take a while.
    await host.sfs.close(oldFd).catch(() => undefined);
    const result: CompactionResult = {
      status: 'compacted',
      bytesBefore,
      bytesAfter: this.outEnd,
      recordsCopied: this.records,
      tombstonesKept: this.tombstones,
      generation: this.generation,
      rounds: this.rounds,
      durationMs: performance.now() - started,
      pausedMs,
    };
    host.logger.info(
      { bytesBefore, bytesAfter: result.bytesAfter, records: result.recordsCopied, tombstones: result.tombstonesKept, rounds: result.rounds, ms: Math.round(result.durationMs), pausedMs: Math.round(pausedMs * 10) / 10 },
      'compaction done',
    );
    await this.step('switched');
    return result;
  }

  /** One catch-up round: the records in [copied, end of log now), live as of that end. */
  private async round(): Promise<void> {
    const { host } = this;
    const first = this.rounds === 0;
    this.rounds++;
    try {
      for (let attempt = 1; ; attempt++) {
        const target = host.queue.fileEnd;
        const firstPrev = new Map<string, number>();
        host.observe((key, prevOffset) => {
          if (!firstPrev.has(key)) firstPrev.set(key, prevOffset);
        });
        try {
          // Below target everything must be stable before it is read (see the module doc).
          await host.queue.settledAll();
        } catch (err) {
          // A write failed and was rolled back (never below `copied`: the
          // previous round waited for it to be stable). Start the round again.
          if (host.queue.failed !== undefined || attempt === 3) throw err;
          continue;
        }
        this.checkLive();
        const live = host.index;
        await this.copyRange(target, first, (key) => firstPrev.get(key) ?? locationOf(live, key));
        return;
      }
    } finally {
      host.observe(undefined);
    }
  }

  /** The last round, with writes paused and nothing in flight: up to the held batch. */
  private async finalRound(): Promise<void> {
    const { queue } = this.host;
    const live = this.host.index;
    const target = queue.writtenEnd;
    const firstPrev = new Map<string, number>();
    let seen = 0;
    await this.copyRange(target, false, (key) => {
      // Writes made while paused all go to the held batch (at target); its
      // undo log has each key's location before its first record there.
      const held = queue.heldBatch;
      if (held !== undefined) {
        for (; seen < held.count; seen++) {
          const k = held.keys[seen];
          if (!firstPrev.has(k)) firstPrev.set(k, held.prevOffsets[seen]);
        }
      }
      return firstPrev.get(key) ?? locationOf(live, key);
    });
    if (this.maxTombstone !== undefined) await this.writeMaxTombstone(this.maxTombstone);
    await this.flush(true);
  }

  /**
   * Copies the records of [copied, target) that `asOf` names as their key's
   * location. `first`: round one, whose new file starts empty.
   */
  private async copyRange(target: number, first: boolean, asOf: (key: string) => number): Promise<void> {
    if (target <= this.copied) return;
    // In round one only the threshold can keep a delete; no record is above it when it is >= the table's seq.
    const lastDeletes = first && this.keepAbove >= this.host.seq ? undefined : await this.lastDeletes(target, first);
    const cursor = new RecordCursor(this.host.sfs, this.host.fd, this.copied, target, READ_CHUNK_BYTES);
    this.slicer.restart();
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        this.take(cursor.record, target, asOf, lastDeletes);
        if (this.outLen + this.runLen >= WRITE_BUFFER_BYTES) await this.flush(false);
        if (this.slicer.due()) await this.yield();
      } else if (step === 'more') {
        // The cursor's buffer is about to change.
        this.copyRun();
        await this.io('read', () => cursor.fill());
        this.slicer.restart();
      } else if (step === 'end') {
        this.copyRun();
        break;
      } else {
        throw new TableCorruptError(this.host.table, cursor.damage.offset, cursor.damage.reason, { details: { during: 'compaction' } });
      }
    }
    this.copied = target;
  }

  /**
   * Decides about one record of the old file (see the module doc) and copies
   * it if it stays. `asOf(key)`: the key's location as of `target`.
   */
  private take(r: RecordView, target: number, asOf: (key: string) => number, lastDeletes: Map<string, number> | undefined): void {
    // Fast path, no string made: when the key's latest record is below
    // target, every later write to it was undone (below target nothing
    // changes any more), so that record is its location as of target too.
    const live = this.host.index;
    const slot = live.slotOfAscii(r.buf, r.keyStart, r.keyStart + r.keyBytes);
    let key: string;
    let location: number;
    if (slot >= 0 && live.offsetOf(slot) < target) {
      location = live.offsetOf(slot);
      if (location !== r.offset) {
        // Superseded by a later put (whether this is a put or a delete).
        this.noteSeq(r, false);
        return;
      }
      key = live.keyOf(slot);
    } else {
      key = slot >= 0 ? live.keyOf(slot) : r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes);
      location = asOf(key);
    }
    let written = false;
    if (r.kind === KIND_PUT) {
      if (location === r.offset) {
        this.next.set(key, this.append(r), r.length);
        written = true;
      }
    } else if (location < 0 && (lastDeletes?.get(key) ?? r.offset) === r.offset) {
      // The key's last record in the round: a tombstone is needed if the new
      // file has a put of it, or wanted above the threshold.
      if (this.next.remove(key) || r.seq > this.keepAbove) {
        this.append(r);
        this.tombstones++;
        written = true;
      }
    }
    this.noteSeq(r, written);
  }

  /** Tracks the record with the highest sequence, and whether it is a delete left out of the new file. */
  private noteSeq(r: RecordView, written: boolean): void {
    if (r.seq > this.maxSeq) {
      this.maxSeq = r.seq;
      this.maxTombstone = r.kind === KIND_DELETE && !written ? { offset: r.offset, length: r.length } : undefined;
    }
  }

  /**
   * Pre-pass: the offset of the last delete of each key in [copied, target),
   * among those that could be kept. Checksums are checked by the copy pass.
   */
  private async lastDeletes(target: number, first: boolean): Promise<Map<string, number>> {
    // In round one the new file is empty, so only the threshold can keep a delete.
    const minSeq = first ? this.keepAbove : -1;
    const last = new Map<string, number>();
    const cursor = new RecordCursor(this.host.sfs, this.host.fd, this.copied, target, READ_CHUNK_BYTES, false);
    this.slicer.restart();
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        if (r.kind === KIND_DELETE && r.seq > minSeq) last.set(r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes), r.offset);
        if (this.slicer.due()) await this.yield();
      } else if (step === 'more') {
        await this.io('read', () => cursor.fill());
        this.slicer.restart();
      } else {
        // 'end', or damage that the copy pass will report.
        return last;
      }
    }
  }

  /** Appends the highest-sequence record of the old file, a delete that was dropped, so the sequence survives reopen. */
  private async writeMaxTombstone(at: { offset: number; length: number }): Promise<void> {
    const buf = Buffer.allocUnsafe(at.length);
    const got = await this.io('read', () => readFully(this.host.sfs, this.host.fd, buf, 0, at.length, at.offset));
    if (got !== at.length || !recordChecksumOk(buf, 0, at.length) || recordLengthAt(buf, 0) !== at.length) {
      throw new TableCorruptError(this.host.table, at.offset, 'record changed under compaction', { details: { during: 'compaction' } });
    }
    this.copyRun();
    this.reserve(at.length);
    buf.copy(this.outBuf, this.outLen);
    this.outLen += at.length;
    this.records++;
    this.tombstones++;
    this.maxTombstone = undefined;
  }

  /** Adds a record to the bytes to copy into the write buffer; returns its offset in the new file. */
  private append(r: RecordView): number {
    const at = this.outEnd + this.outLen + this.runLen;
    const start = r.keyStart - RECORD_HEADER_BYTES;
    if (this.runLen > 0 && (r.buf !== this.runBuf || start !== this.runStart + this.runLen)) this.copyRun();
    if (this.runLen === 0) {
      this.runBuf = r.buf;
      this.runStart = start;
    }
    this.runLen += r.length;
    this.records++;
    return at;
  }

  /** Copies the pending run of records into the write buffer. */
  private copyRun(): void {
    if (this.runLen === 0) return;
    this.reserve(this.runLen);
    this.runBuf!.copy(this.outBuf, this.outLen, this.runStart, this.runStart + this.runLen);
    this.outLen += this.runLen;
    this.runLen = 0;
    this.runBuf = undefined;
  }

  private reserve(bytes: number): void {
    if (this.outLen + bytes <= this.outBuf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.outLen + bytes, this.outBuf.length * 2));
    this.outBuf.copy(grown, 0, 0, this.outLen);
    this.outBuf = grown;
  }

  /**
   * Starts writing the buffer (after the previous write finished) and swaps
   * in the spare; `wait` also waits for this write. Two buffers: the copy
   * goes on while one is written.
   */
  private async flush(wait: boolean): Promise<void> {
    this.copyRun();
    await this.writing;
    if (this.outLen > 0) {
      const { sfs } = this.host;
      const buf = this.outBuf;
      const len = this.outLen;
      const at = this.outEnd;
      this.outBuf = this.spareBuf.length >= WRITE_BUFFER_BYTES ? this.spareBuf : Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
      this.spareBuf = buf;
      this.outLen = 0;
      this.outEnd += len;
      this.writing = this.io('write', () => writeFully(sfs, this.out, buf, 0, len, at));
      // Awaited by the next flush; this only keeps a failure from being reported as unhandled meanwhile.
      this.writing.catch(() => undefined);
      if (wait) await this.writing;
      await this.step('flushed');
    }
  }

  /** Writes everything copied so far and fdatasyncs the new file. */
  private async sync(): Promise<void> {
    await this.flush(true);
    await this.io('fdatasync', () => this.host.sfs.fdatasync(this.out));
  }

  /** Installs the new file in the queue and the table, in one synchronous step. */
  private switchFile(): void {
    const { host } = this;
    const { queue } = host;
    const index = this.next;
    const end = this.outEnd;
    queue.switchFile(this.out, end);
    const held = queue.heldBatch;
    if (held !== undefined) {
      // Replay the held batch on the new index, and rewrite its undo log in
      // new-file offsets (a failed write of it must restore those).
      for (let i = 0, pos = 0; i < held.count; i++) {
        const key = held.keys[i];
        const length = recordLengthAt(held.buf, pos);
        const slot = index.slotOf(key);
        held.prevOffsets[i] = slot < 0 ? -1 : index.offsetOf(slot);
        held.prevLengths[i] = slot < 0 ? 0 : index.lengthOf(slot);
        if (held.buf[pos + 4] === KIND_PUT) index.set(key, end + pos, length);
        else index.remove(key);
        pos += length;
      }
    }
    host.install({ fd: this.out, generation: this.generation, index, fileRecords: this.records + (held?.count ?? 0) });
  }

  /** After a failure before the rename: closes and deletes the new file (best effort; open deletes a leftover). */
  private async discard(): Promise<void> {
    await this.writing.catch(() => undefined);
    if (this.out >= 0) await this.host.sfs.close(this.out).catch(() => undefined);
    await this.host.sfs.unlink(this.tmp).catch(() => undefined);
  }

  private async step(step: CompactionStep): Promise<void> {
    if (this.opts.onStep !== undefined) await this.opts.onStep(step);
  }

  private async yield(): Promise<void> {
    await this.slicer.yield();
    this.checkLive();
  }

  /** Gives up when the table is closing or its writes have failed. */
  private checkLive(): void {
    if (this.host.closeRequested) throw new TableClosedError(this.host.table, { details: { during: 'compaction' } });
    const failed = this.host.queue.failed;
    if (failed !== undefined) throw failed;
  }

  /** Runs one file operation, turning an I/O failure into StoreIoError. */
  private async io<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TablekeeperError) throw err;
      throw new StoreIoError(this.host.table, 'compact', { cause: err, details: { step: operation } });
    }
  }
}

/** The record offset of `key` in `index`, or -1. */
function locationOf(index: KeyIndex, key: string): number {
  const slot = index.slotOf(key);
  return slot < 0 ? -1 : index.offsetOf(slot);
}
