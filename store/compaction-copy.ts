/**
 * The record-level part of a compaction: which records of the old file go
 * into the new one (see the "live as of" and tombstone rules in
 * compaction.ts), copied round by round in log order, noting where each
 * copied put went (see compaction-remap.ts).
 */
import { TableCorruptError } from './errors';
import { KIND_DELETE, KIND_PUT, recordChecksumOk, recordLengthAt } from './format';
import { nodeStoreFs, readFully } from './file-system';
import { checkRangeInWorker, WORKER_MIN_BYTES, type RangeCheckResult } from './record-check-worker';
import { LiveOffsets, OffsetRemap } from './compaction-remap';
import { RecordCursor, RecordView, type CursorStep } from './record-cursor';
import type { KeyIndex } from './key-index';
import type { CompactionHost } from './compaction';
import { CompactionOutput } from './compaction-output';
import { TimeSlicer } from './time-slicer';

const READ_CHUNK_BYTES = 4 * 1024 * 1024;
/** Slots (or bitmap words) handled between clock reads when finding the live offsets: well under a slice. */
const LIVE_BLOCK = 4096;

/** Adds the location as of target of every key in slots [from, to) (see liveOffsets). */
function addLiveSlots(index: KeyIndex, live: LiveOffsets, from: number, to: number, target: number, firstPrev: Map<string, number>): void {
  for (let slot = from; slot < to; slot++) {
    if (!index.slotUsed(slot)) continue;
    const at = index.offsetOf(slot);
    live.add(at < target ? at : (firstPrev.get(index.keyOf(slot)) ?? -1));
  }
}

/** What a worker's check of a range came to. */
type CheckOutcome = RangeCheckResult | { error: unknown };

/** What the copier needs from the compaction driving it. */
export interface CopyContext {
  readonly host: CompactionHost;
  readonly output: CompactionOutput;
  /** Lets the event loop run; throws when the compaction must give up. */
  yield(slicer: TimeSlicer): Promise<void>;
  /** Runs one file operation, turning an I/O failure into the compaction's error. */
  io<T>(operation: string, fn: () => Promise<T>): Promise<T>;
}

/** Copies the records that stay, range by range; holds where the copied puts went, and the counts. */
export class RecordCopier {
  /** Old-file offset -> new-file offset of every copied put. */
  readonly remap = new OffsetRemap();
  /** Old-file offset up to which records have been processed. */
  copied: number;
  /** Records written to the new file, tombstones included. */
  records = 0;
  /** Delete records written to the new file. */
  tombstones = 0;
  // The record with the highest sequence seen, when it is a delete that was not written.
  private maxSeq = 0;
  private maxTombstone: { offset: number; length: number } | undefined;
  private readonly slicer = new TimeSlicer();
  private pendingCheck: { target: number; result: Promise<CheckOutcome> | undefined } | undefined;

  constructor(
    private readonly ctx: CopyContext,
    /** Old-file offset of the first record. */
    start: number,
    private readonly keepAbove: number,
  ) {
    this.copied = start;
  }

  /**
   * Copies the records of [copied, target) that `asOf` names as their key's
   * location as of target. `first`: round one, whose new file starts empty.
   * Otherwise `atStart` holds, for every key written since `copied` was
   * noted (the previous round's target), its location before the first of
   * those writes (-1: absent): so the new file holds a put of such a key
   * exactly when that location is not -1.
   */
  async copyRange(target: number, first: boolean, asOf: (key: string) => number, liveAt?: LiveOffsets, atStart?: ReadonlyMap<string, number>): Promise<void> {
    if (target <= this.copied) {
      // Nothing to copy (a file of only its header): a check started for this range is not needed.
      await this.dropCheck();
      return;
    }
    const { host } = this.ctx;
    // Checksums of a large range are checked by a worker thread while this
    // pass copies (on the real disk only: the worker reads without the
    // StoreFs). The bytes below target no longer change, so both see the same
    // records; the round counts only if the worker found them all intact.
    const checking = this.takeCheck(target) ?? this.checkInWorker(target);
    let failure: { error: unknown } | undefined;
    try {
      await this.copyPass(target, first, asOf, checking === undefined, liveAt, atStart);
    } catch (err) {
      failure = { error: err };
    }
    if (checking !== undefined) {
      // Always awaited: the worker reads host.fd, which must stay open until it is done.
      const found = await checking;
      // A worker stopped because the table is closing: that is the failure to report.
      if (failure === undefined && host.signal.aborted) failure = { error: host.signal.reason };
      if (failure === undefined) {
        if ('error' in found) await this.ctx.io('read', () => Promise.reject(found.error));
        else if (found.damage !== undefined) {
          throw new TableCorruptError(host.table, found.damage.offset, found.damage.reason, { details: { during: 'compaction' } });
        }
      }
    }
    if (failure !== undefined) throw failure.error;
    this.copied = target;
  }

  /**
   * Starts the worker's check of [copied, target) now (when it would get
   * one), so that it runs while the caller prepares the copy of that range;
   * copyRange(target) then waits for it. The caller must call copyRange
   * or dropCheck next: the worker reads the table's descriptor.
   */
  startCheck(target: number): void {
    this.pendingCheck = { target, result: this.checkInWorker(target) };
  }

  /** Waits for a check started and not used (so the descriptor it reads may be closed after). */
  async dropCheck(): Promise<void> {
    const pending = this.pendingCheck;
    this.pendingCheck = undefined;
    await pending?.result;
  }

  private takeCheck(target: number): Promise<CheckOutcome> | undefined {
    const pending = this.pendingCheck;
    this.pendingCheck = undefined;
    if (pending === undefined) return undefined;
    // Only a check of this very range may stand for it (the caller keeps to that; this is a safety net).
    if (pending.target !== target) throw new Error(`record check started for ${pending.target}, copy up to ${target}`);
    return pending.result;
  }

  /** A worker's check of [copied, target), for a large range on the real disk; undefined otherwise. */
  private checkInWorker(target: number): Promise<CheckOutcome> | undefined {
    const { host } = this.ctx;
    if (host.sfs !== nodeStoreFs || target - this.copied < WORKER_MIN_BYTES) return undefined;
    return checkRangeInWorker({ fd: host.fd, start: this.copied, end: target }, host.signal).then(
      (found) => found,
      (err: unknown) => ({ error: err }),
    );
  }

  /** The copy pass of copyRange; `checksums` false when a worker checks them. */
  private async copyPass(
    target: number,
    first: boolean,
    asOf: (key: string) => number,
    checksums: boolean,
    liveAt: LiveOffsets | undefined,
    atStart: ReadonlyMap<string, number> | undefined,
  ): Promise<void> {
    const { host, output } = this.ctx;
    // In round one only the threshold can keep a delete; no record is above it when it is >= the table's seq.
    const lastDeletes = first && this.keepAbove >= host.seq ? undefined : await this.lastDeletes(target, first);
    const startNotes = first ? undefined : (atStart ?? new Map<string, number>());
    const cursor = new RecordCursor(host.sfs, host.fd, this.copied, target, READ_CHUNK_BYTES, { checksums });
    this.slicer.restart();
    for (;;) {
      const step = this.copySome(cursor, target, asOf, lastDeletes, startNotes, liveAt);
      if (step === 'flush') await output.flush(false);
      else if (step === 'yield') await this.ctx.yield(this.slicer);
      else if (step === 'more') {
        // The cursor's buffer is about to change.
        output.copyRun();
        await this.ctx.io('read', () => cursor.fill());
        this.slicer.restart();
      } else if (step === 'end') {
        output.copyRun();
        return;
      } else {
        throw new TableCorruptError(host.table, cursor.damage.offset, cursor.damage.reason, { details: { during: 'compaction' } });
      }
    }
  }

  /**
   * Takes the cursor's records one after another until the pass must wait:
   * for the write buffer to be flushed, for a yield, or for the cursor to
   * be refilled (or at its end or damage). Synchronous, so that V8
   * optimizes the per-record loop as a plain loop.
   */
  private copySome(
    cursor: RecordCursor,
    target: number,
    asOf: (key: string) => number,
    lastDeletes: Map<string, number> | undefined,
    startNotes: ReadonlyMap<string, number> | undefined,
    liveAt: LiveOffsets | undefined,
  ): Exclude<CursorStep, 'record'> | 'flush' | 'yield' {
    const output = this.ctx.output;
    for (;;) {
      const step = cursor.step();
      if (step !== 'record') return step;
      const r = cursor.record;
      if (liveAt !== undefined && r.kind === KIND_PUT) this.takePut(r, liveAt);
      else this.take(r, target, asOf, lastDeletes, startNotes);
      if (output.full) return 'flush';
      if (this.slicer.due()) return 'yield';
    }
  }

  /**
   * The offsets in [copied, target) of the records that are their key's
   * location as of target, from the live index rather than by looking up
   * each record's key: `firstPrev` holds, for every key written since
   * target was noted, its location before that write (-1: absent). Walks
   * the index in time slices; writes made meanwhile only add to firstPrev.
   * The set becomes the remap's bulk part: round one copies exactly its puts.
   */
  async liveOffsets(target: number, firstPrev: Map<string, number>): Promise<LiveOffsets> {
    const index = this.ctx.host.index;
    const live = new LiveOffsets(this.copied, target);
    // A key whose record is below target is there as of target too: any
    // later write to it was undone (below target nothing changes any more).
    // One written since is at its firstPrev location as of target.
    // (The key is made as a string only then.)
    // In blocks of plain synchronous loops, which V8 optimizes far better
    // than one loop around an await: at 1M keys this took 117-154 ms, now
    // 47-77 ms (with the checksum worker on the other core).
    this.slicer.restart();
    for (let slot = 0; slot < index.slotLimit; slot += LIVE_BLOCK) {
      addLiveSlots(index, live, slot, Math.min(index.slotLimit, slot + LIVE_BLOCK), target, firstPrev);
      if (this.slicer.dueNow()) await this.ctx.yield(this.slicer);
    }
    // Keys removed (and slots reused) since: their location as of target is in firstPrev.
    for (const at of firstPrev.values()) live.add(at);
    // Rank the offsets, so that each can carry the new offset of its copy.
    for (let word = 0; word < live.words; word += LIVE_BLOCK) {
      live.countWords(word, Math.min(live.words, word + LIVE_BLOCK));
      if (this.slicer.dueNow()) await this.ctx.yield(this.slicer);
    }
    live.counted();
    this.remap.useBulk(live);
    return live;
  }

  /** take() for a put in a range whose live offsets are known: copied when it is one of them (no key needed). */
  private takePut(r: RecordView, liveAt: LiveOffsets): void {
    if (!liveAt.has(r.offset)) {
      this.noteSeq(r, false);
      return;
    }
    liveAt.setValue(r.offset, this.ctx.output.append(r));
    this.records++;
    this.noteSeq(r, true);
  }

  /**
   * After the last range: when the old file's highest sequence is carried by
   * a delete that was dropped, appends it, so the sequence survives reopen.
   */
  async keepMaxSeq(): Promise<void> {
    const at = this.maxTombstone;
    if (at === undefined) return;
    const { host } = this.ctx;
    const buf = Buffer.allocUnsafe(at.length);
    const got = await this.ctx.io('read', () => readFully(host.sfs, host.fd, buf, 0, at.length, at.offset));
    if (got !== at.length || !recordChecksumOk(buf, 0, at.length) || recordLengthAt(buf, 0) !== at.length) {
      throw new TableCorruptError(host.table, at.offset, 'record changed under compaction', { details: { during: 'compaction' } });
    }
    this.ctx.output.appendBytes(buf);
    this.records++;
    this.tombstones++;
    this.maxTombstone = undefined;
  }

  /**
   * Decides about one record of the old file and copies it if it stays.
   * `asOf(key)`: the key's location as of `target`. `atStart`: see
   * copyRange; undefined in round one.
   */
  private take(
    r: RecordView,
    target: number,
    asOf: (key: string) => number,
    lastDeletes: Map<string, number> | undefined,
    atStart: ReadonlyMap<string, number> | undefined,
  ): void {
    // Fast path, no string made: when the key's latest record is below
    // target, every later write to it was undone (below target nothing
    // changes any more), so that record is its location as of target too.
    const live = this.ctx.host.index;
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
        this.remap.addTail(r.offset, this.ctx.output.append(r));
        this.records++;
        written = true;
      }
    } else if (location < 0 && (lastDeletes?.get(key) ?? r.offset) === r.offset) {
      // The key's last record in the round: a tombstone is needed if the new
      // file has a put of it, or wanted above the threshold. In round one
      // the new file has none (a put copied there is live as of target, so
      // no delete of its key follows it below target). Later, it has one
      // when the key was live as of the round's start; a key with no note
      // (which cannot be: the delete was written after the start) keeps it.
      const start = atStart?.get(key);
      const inNewFile = atStart !== undefined && (start === undefined || start >= 0);
      if (inNewFile || r.seq > this.keepAbove) {
        this.ctx.output.append(r);
        this.records++;
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
    const { host } = this.ctx;
    // In round one the new file is empty, so only the threshold can keep a delete.
    const minSeq = first ? this.keepAbove : -1;
    const last = new Map<string, number>();
    const cursor = new RecordCursor(host.sfs, host.fd, this.copied, target, READ_CHUNK_BYTES, { checksums: false });
    this.slicer.restart();
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        if (r.kind === KIND_DELETE && r.seq > minSeq) last.set(r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes), r.offset);
        if (this.slicer.due()) await this.ctx.yield(this.slicer);
      } else if (step === 'more') {
        await this.ctx.io('read', () => cursor.fill());
        this.slicer.restart();
      } else {
        // 'end', or damage that the copy pass will report.
        return last;
      }
    }
  }
}
