/**
 * The record-level part of a compaction: which records of the old file go
 * into the new one (see the "live as of" and tombstone rules in
 * compaction.ts), copied round by round in log order, while the new index
 * is built beside the live one.
 */
import { TableCorruptError } from './errors';
import { KIND_DELETE, KIND_PUT, recordChecksumOk, recordLengthAt } from './format';
import { nodeStoreFs, readFully } from './file-system';
import { checkRangeInWorker, WORKER_MIN_BYTES } from './record-check-worker';
import { KeyIndex, QueuedSets } from './key-index';
import { RecordCursor, RecordView } from './record-cursor';
import type { CompactionHost } from './compaction';
import { CompactionOutput } from './compaction-output';
import { TimeSlicer } from './time-slicer';

const READ_CHUNK_BYTES = 4 * 1024 * 1024;

/** What the copier needs from the compaction driving it. */
export interface CopyContext {
  readonly host: CompactionHost;
  readonly output: CompactionOutput;
  /** Lets the event loop run; throws when the compaction must give up. */
  yield(slicer: TimeSlicer): Promise<void>;
  /** Runs one file operation, turning an I/O failure into the compaction's error. */
  io<T>(operation: string, fn: () => Promise<T>): Promise<T>;
}

/** Copies the records that stay, range by range; holds the new index and the counts. */
export class RecordCopier {
  private readonly nextIndex: KeyIndex;
  // The copied puts, on their way into nextIndex (see KeyIndex.setMany).
  private readonly nextSets: QueuedSets;
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

  constructor(
    private readonly ctx: CopyContext,
    /** Old-file offset of the first record. */
    start: number,
    private readonly keepAbove: number,
  ) {
    this.copied = start;
    // Sized for the live keys now, so that building it never rehashes.
    this.nextIndex = new KeyIndex(ctx.host.index.size + 1024);
    this.nextSets = new QueuedSets(this.nextIndex);
  }

  /** The new file's index (key -> new offset and length), with every copied record in it. */
  get next(): KeyIndex {
    this.nextSets.flush();
    return this.nextIndex;
  }

  /**
   * Copies the records of [copied, target) that `asOf` names as their key's
   * location as of target. `first`: round one, whose new file starts empty.
   */
  async copyRange(target: number, first: boolean, asOf: (key: string) => number, liveAt?: LiveOffsets): Promise<void> {
    if (target <= this.copied) return;
    const { host } = this.ctx;
    // Checksums of a large range are checked by a worker thread while this
    // pass copies (on the real disk only: the worker reads without the
    // StoreFs). The bytes below target no longer change, so both see the same
    // records; the round counts only if the worker found them all intact.
    const checking =
      host.sfs === nodeStoreFs && target - this.copied >= WORKER_MIN_BYTES
        ? checkRangeInWorker({ fd: host.fd, start: this.copied, end: target }, host.signal).then(
            (found) => found,
            (err: unknown) => ({ error: err }),
          )
        : undefined;
    let failure: { error: unknown } | undefined;
    try {
      await this.copyPass(target, first, asOf, checking === undefined, liveAt);
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

  /** The copy pass of copyRange; `checksums` false when a worker checks them. */
  private async copyPass(target: number, first: boolean, asOf: (key: string) => number, checksums: boolean, liveAt: LiveOffsets | undefined): Promise<void> {
    const { host, output } = this.ctx;
    // In round one only the threshold can keep a delete; no record is above it when it is >= the table's seq.
    const lastDeletes = first && this.keepAbove >= host.seq ? undefined : await this.lastDeletes(target, first);
    const cursor = new RecordCursor(host.sfs, host.fd, this.copied, target, READ_CHUNK_BYTES, { checksums });
    this.slicer.restart();
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        if (liveAt !== undefined && r.kind === KIND_PUT) this.takePut(r, liveAt);
        else this.take(r, target, asOf, lastDeletes);
        if (output.full) await output.flush(false);
        if (this.slicer.due()) await this.ctx.yield(this.slicer);
      } else if (step === 'more') {
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
   * The offsets in [copied, target) of the records that are their key's
   * location as of target, from the live index rather than by looking up
   * each record's key: `firstPrev` holds, for every key written since
   * target was noted, its location before that write (-1: absent). Walks
   * the index in time slices; writes made meanwhile only add to firstPrev.
   */
  async liveOffsets(target: number, firstPrev: Map<string, number>): Promise<LiveOffsets> {
    const index = this.ctx.host.index;
    const live = new LiveOffsets(this.copied, target);
    // A key whose record is below target is there as of target too: any
    // later write to it was undone (below target nothing changes any more).
    // One written since is at its firstPrev location as of target.
    const locationOf = (slot: number, key: string): number => {
      const at = index.offsetOf(slot);
      return at < target ? at : (firstPrev.get(key) ?? -1);
    };
    this.slicer.restart();
    for (let slot = 0; slot < index.slotLimit; slot++) {
      const key = index.slotKey(slot);
      if (key !== undefined) live.add(locationOf(slot, key));
      if (this.slicer.due()) await this.ctx.yield(this.slicer);
    }
    // Keys removed (and slots reused) since: their location as of target is in firstPrev.
    for (const at of firstPrev.values()) live.add(at);
    // Second walk: note each offset's slot, so that copying its record needs no key lookup.
    for (let word = 0; word < live.words; word++) {
      live.count(word);
      if (this.slicer.due()) await this.ctx.yield(this.slicer);
    }
    live.counted();
    for (let slot = 0; slot < index.slotLimit; slot++) {
      const key = index.slotKey(slot);
      if (key !== undefined) live.setSlot(locationOf(slot, key), slot);
      if (this.slicer.due()) await this.ctx.yield(this.slicer);
    }
    return live;
  }

  /** take() for a put in a range whose live offsets are known: copied when it is one of them. */
  private takePut(r: RecordView, liveAt: LiveOffsets): void {
    if (!liveAt.has(r.offset)) {
      this.noteSeq(r, false);
      return;
    }
    const live = this.ctx.host.index;
    // The slot noted for this offset, unless it has been given to another key since.
    const noted = liveAt.slotAt(r.offset);
    let key = noted < 0 ? undefined : live.slotKey(noted);
    if (key !== undefined && !asciiEquals(key, r.buf, r.keyStart, r.keyBytes)) key = undefined;
    if (key === undefined) {
      const slot = live.slotOfAscii(r.buf, r.keyStart, r.keyStart + r.keyBytes);
      // The live index holds the same string unless the key was removed since (or is not ASCII).
      key = slot >= 0 ? live.keyOf(slot) : r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes);
    }
    this.nextSets.add(key, this.ctx.output.append(r), r.length);
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
   * `asOf(key)`: the key's location as of `target`.
   */
  private take(r: RecordView, target: number, asOf: (key: string) => number, lastDeletes: Map<string, number> | undefined): void {
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
        this.nextSets.add(key, this.ctx.output.append(r), r.length);
        this.records++;
        written = true;
      }
    } else if (location < 0 && (lastDeletes?.get(key) ?? r.offset) === r.offset) {
      // The key's last record in the round: a tombstone is needed if the new
      // file has a put of it, or wanted above the threshold.
      if (this.next.remove(key) || r.seq > this.keepAbove) {
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

/** True when `key` is ASCII and its bytes are buf[start, start + bytes). */
function asciiEquals(key: string, buf: Buffer, start: number, bytes: number): boolean {
  if (key.length !== bytes) return false;
  for (let i = 0; i < bytes; i++) {
    const c = key.charCodeAt(i);
    if (c > 0x7f || c !== buf[start + i]) return false;
  }
  return true;
}

/**
 * A set of record offsets in [start, end): one bit per 8 bytes (records are
 * at least 21 bytes long, so no two record starts share a bit). Once every
 * offset is added and counted (count each word, then counted()), each
 * offset can carry a number (the key index slot of its key).
 */
export class LiveOffsets {
  private readonly bits: Int32Array;
  // Offsets in the words before each word; then a slot per offset, in offset order.
  private before: Int32Array | undefined;
  private total = 0;
  private slots: Int32Array | undefined;

  constructor(
    private readonly start: number,
    private readonly end: number,
  ) {
    this.bits = new Int32Array(Math.ceil((end - start) / 256) + 1);
  }

  /** Number of words to count. */
  get words(): number {
    return this.bits.length;
  }

  /** Adds a record offset; ignores one outside the range (or -1). */
  add(offset: number): void {
    if (offset < this.start || offset >= this.end) return;
    const cell = Math.floor((offset - this.start) / 8);
    this.bits[Math.floor(cell / 32)] |= 1 << cell % 32;
  }

  /** True when the record at `offset` (in the range) was added. */
  has(offset: number): boolean {
    const cell = Math.floor((offset - this.start) / 8);
    return (this.bits[Math.floor(cell / 32)] & (1 << cell % 32)) !== 0;
  }

  /** Counts word `word` (call for each word in order, after the last add). */
  count(word: number): void {
    this.before ??= new Int32Array(this.bits.length);
    this.before[word] = this.total;
    this.total += popcount(this.bits[word]);
  }

  /** After every word is counted: makes room for a slot per offset. */
  counted(): void {
    this.slots = new Int32Array(this.total).fill(-1);
  }

  /** Notes `slot` for an offset in the set (others are ignored). */
  setSlot(offset: number, slot: number): void {
    if (offset < this.start || offset >= this.end || !this.has(offset)) return;
    this.slots![this.rank(offset)] = slot;
  }

  /** The slot noted for an offset in the set, or -1. */
  slotAt(offset: number): number {
    return this.slots === undefined ? -1 : this.slots[this.rank(offset)];
  }

  private rank(offset: number): number {
    const cell = Math.floor((offset - this.start) / 8);
    const word = Math.floor(cell / 32);
    const bit = cell % 32;
    return this.before![word] + (bit === 0 ? 0 : popcount(this.bits[word] & (0xffffffff >>> (32 - bit))));
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}
