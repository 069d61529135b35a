/**
 * How a compaction turns the live index into the new file's index without
 * building a second one: the new file holds the same live keys with the same
 * record lengths, only at other offsets. So the compaction notes, for every
 * put it copies, its old and new offset (OffsetRemap), and before the switch
 * translates every slot's offset into a copy of the index's offset array
 * (IndexTranslation); the switch adopts that array. The key strings, the
 * hash table and the lengths are kept as they are.
 *
 * Building a second index cost a hash and an insert per live key (about a
 * quarter of the compaction's main-thread time at a million keys) and kept a
 * second set of key arrays on the JS heap; the translation is one walk over
 * the slots with an O(1) lookup each.
 *
 * The translation runs beside the writers: the bulk walk is time sliced, and
 * every key written from its start on is noted (by the compaction's append
 * observer) and translated again once the last round has copied its record,
 * with writes paused.
 */
import { InternalError } from './errors';
import { KeyIndex } from './key-index';
import { TimeSlicer } from './time-slicer';

/**
 * A set of record offsets in [start, end): one bit per 8 bytes (records are
 * at least 21 bytes long, so no two record starts share a bit). Once every
 * offset is added and counted (count each word, then counted()), each
 * offset can carry a number (the new-file offset of its copy).
 */
export class LiveOffsets {
  private readonly bits: Int32Array;
  // Offsets in the words before each word; then a value per offset, in offset order.
  private before: Int32Array | undefined;
  private total = 0;
  private values: Float64Array | undefined;

  constructor(
    readonly start: number,
    readonly end: number,
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

  /** True when the record at `offset` is in the range and was added. */
  has(offset: number): boolean {
    if (offset < this.start || offset >= this.end) return false;
    const cell = Math.floor((offset - this.start) / 8);
    return (this.bits[Math.floor(cell / 32)] & (1 << cell % 32)) !== 0;
  }

  /** Counts words [from, to) (call for every word, in order, after the last add). */
  countWords(from: number, to: number): void {
    const before = (this.before ??= new Int32Array(this.bits.length));
    const bits = this.bits;
    let total = this.total;
    for (let word = from; word < to; word++) {
      before[word] = total;
      total += popcount(bits[word]);
    }
    this.total = total;
  }

  /** After every word is counted: makes room for a value per offset, each -1 until set. */
  counted(): void {
    this.values = new Float64Array(this.total).fill(-1);
  }

  /** Notes `value` for an offset in the set (others are ignored). */
  setValue(offset: number, value: number): void {
    if (!this.has(offset)) return;
    this.values![this.rank(offset)] = value;
  }

  /** The value noted for an offset in the set; -1 when none was, or the offset is not in the set. */
  valueAt(offset: number): number {
    if (this.values === undefined || !this.has(offset)) return -1;
    return this.values[this.rank(offset)];
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

/**
 * Old-file offset -> new-file offset of every put record a compaction
 * copied: round one's in a LiveOffsets (its live set, which is exactly what
 * round one copies), later rounds' in sorted arrays (rounds copy in
 * increasing offset order, each above the one before).
 */
export class OffsetRemap {
  private bulk: LiveOffsets | undefined;
  private readonly tailOld: number[] = [];
  private readonly tailNew: number[] = [];

  /** Round one's live set: its puts' new offsets are noted in it (setValue). */
  useBulk(live: LiveOffsets): void {
    this.bulk = live;
  }

  /** Notes a put copied after round one; offsets must increase from call to call. */
  addTail(oldOffset: number, newOffset: number): void {
    const n = this.tailOld.length;
    if (n > 0 && oldOffset <= this.tailOld[n - 1]) throw new InternalError(`compaction copied offset ${oldOffset} after ${this.tailOld[n - 1]}`);
    this.tailOld.push(oldOffset);
    this.tailNew.push(newOffset);
  }

  /** The new offset of the copy of the put at `oldOffset`, or -1 when it was not copied. */
  lookup(oldOffset: number): number {
    const bulk = this.bulk;
    if (bulk !== undefined && oldOffset >= bulk.start && oldOffset < bulk.end) return bulk.valueAt(oldOffset);
    const old = this.tailOld;
    let lo = 0;
    let hi = old.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = old[mid];
      if (at === oldOffset) return this.tailNew[mid];
      if (at < oldOffset) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

/**
 * The live index's offsets, translated to the new file into a copy of its
 * offset array; see the module doc. Keys written from walk() on must be
 * passed to noteWrite (from the append observer).
 */
export class IndexTranslation {
  private shadow: Float64Array | undefined;
  // Slots the walk could not translate yet (their record was not copied yet).
  private readonly pending: number[] = [];
  // Keys written since the walk started; those before `done` are translated.
  private readonly written: string[] = [];
  private done = 0;
  private tracking = false;

  constructor(
    private readonly index: KeyIndex,
    private readonly remap: OffsetRemap,
  ) {}

  /** Notes a write of `key` (a no-op until the walk starts). */
  noteWrite(key: string): void {
    if (this.tracking) this.written.push(key);
  }

  /**
   * Translates every slot whose record is below `copied` (everything there
   * has been copied), in time slices; the others are left for settle().
   */
  async walk(copied: number, pause: (slicer: TimeSlicer) => Promise<void>): Promise<void> {
    const index = this.index;
    this.tracking = true;
    const shadow = (this.shadow = index.blankOffsets());
    const slicer = new TimeSlicer();
    for (let slot = 0; slot < index.slotLimit; slot++) {
      if (index.slotUsed(slot)) {
        const at = index.offsetOf(slot);
        const next = at < copied ? this.remap.lookup(at) : -1;
        if (next >= 0) shadow[slot] = next;
        else this.pending.push(slot);
      }
      if (slicer.due()) await pause(slicer);
    }
  }

  /**
   * Translates what the walk left and every key written since it started
   * (and not yet translated). Records at or after `heldStart` (writes held
   * by the pause, which go to the new file at `newHeldStart`) move by the
   * difference; every other live record must have been copied, or this
   * throws InternalError.
   */
  settle(heldStart: number, newHeldStart: number): void {
    const index = this.index;
    for (const slot of this.pending) if (index.slotUsed(slot)) this.translate(slot, heldStart, newHeldStart);
    this.pending.length = 0;
    for (; this.done < this.written.length; this.done++) {
      const slot = index.slotOf(this.written[this.done]);
      if (slot >= 0) this.translate(slot, heldStart, newHeldStart);
    }
  }

  /** A record offset of the old file in the new one (see settle). */
  offsetIn(at: number, heldStart: number, newHeldStart: number): number {
    if (at >= heldStart) return at - heldStart + newHeldStart;
    const next = this.remap.lookup(at);
    if (next < 0) throw new InternalError(`compaction did not copy the live record at offset ${at}`);
    return next;
  }

  /**
   * The translated offsets, one per slot of the index; call after the last
   * settle(), with nothing written since. Slots made since the walk copied
   * the array and free again (keys created and deleted meanwhile) have no
   * offset to translate, but the index still counts them.
   */
  offsets(): Float64Array {
    let shadow = this.shadow!;
    if (shadow.length < this.index.slotLimit) {
      const grown = new Float64Array(this.index.slotLimit);
      grown.set(shadow);
      shadow = this.shadow = grown;
    }
    return shadow;
  }

  private translate(slot: number, heldStart: number, newHeldStart: number): void {
    let shadow = this.shadow!;
    if (slot >= shadow.length) {
      // A slot made after the walk copied the array.
      const grown = new Float64Array(Math.max(slot + 1, Math.ceil(shadow.length * 1.5)));
      grown.set(shadow);
      shadow = this.shadow = grown;
    }
    shadow[slot] = this.offsetIn(this.index.offsetOf(slot), heldStart, newHeldStart);
  }
}
