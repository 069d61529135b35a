/**
 * The in-memory index: key -> location (offset, length) of the key's live put
 * record, and the total of the live records' lengths.
 *
 * Layout, about 60 bytes per key at a million keys, none of it on the JS
 * heap for keys of up to 32 ASCII characters:
 * - slots: each key gets a small integer slot; the slot's data lives in
 *   typed arrays: the key's bytes (up to INLINE_KEY_BYTES, in fixed-size
 *   chunks of 32 bytes a slot, so growth never copies a large array), its
 *   length, a Float64Array offset exact to 2^53, a Uint32Array record
 *   length. A longer or non-ASCII key is kept as a string instead. Slots of
 *   removed keys are reused.
 * - buckets: an open-addressing hash table (linear probing, load <= 3/4) in an
 *   Int32Array of [hash, slot + 1] pairs (0 = empty, so a new table is the
 *   allocator's zeroed memory, with nothing to fill), so a probe compares
 *   hashes without touching the slot arrays; removal shifts later entries
 *   back (no tombstones). The hash is seeded per index (FNV-1a over UTF-16
 *   code units, then a murmur3 finaliser).
 * A JS Map was measured at about 600 ns per insert at a million keys, most of
 * the time of an open; this table is about twice as fast and half the size.
 * Key strings were kept until the garbage collector's marking of a million
 * of them (a full mark of the index: ~50 ms for flat strings, ~150 ms for the
 * concatenated strings callers often pass, against ~5 ms for the bytes) showed
 * up as pauses of the serving thread; keys are made as strings only when
 * asked for (keyOf, keys).
 */
import { randomBytes } from 'node:crypto';

// Bucket value of an empty bucket (occupied ones hold slot + 1).
const EMPTY = 0;
/** slotOfAscii's (and setAscii's, removeAscii's) answer for a key with a non-ASCII byte: use the string methods. */
export const NOT_ASCII = -2;
/** Longest key (in ASCII characters) kept as bytes in its slot; longer ones are kept as strings. */
export const INLINE_KEY_BYTES = 32;
// keyLens value of a slot whose key is a string in longKeys (0 = a free slot).
const LONG_KEY = 255;
const INITIAL_BUCKETS = 1024;
const INITIAL_SLOTS = 1024;
const CHUNK_BITS = 16;
const CHUNK_SIZE = 1 << CHUNK_BITS;
const CHUNK_MASK = CHUNK_SIZE - 1;

/** Key -> (record offset, record length) for every live key. */
export class KeyIndex {
  // buckets[2b] = hash, buckets[2b + 1] = slot + 1, or EMPTY.
  private buckets: Int32Array;
  private mask: number;
  // Key bytes of slot s: keyChunks[s >>> CHUNK_BITS] from (s & CHUNK_MASK) * INLINE_KEY_BYTES, keyLens[s] of them.
  private keyChunks: Buffer[] = [];
  private keyLens: Uint8Array;
  private readonly longKeys = new Map<number, string>();
  private slotCount = 0;
  private offsets: Float64Array;
  private lengths: Uint32Array;
  private readonly free: number[] = [];
  private count = 0;
  private live = 0;
  private readonly seed = randomBytes(4).readInt32LE(0);

  /**
   * `expectedKeys` sizes the table up front, so that filling it to that many
   * keys never rehashes (a rehash at a million keys blocks for tens of ms).
   * Costs nothing until used: the arrays start as zero pages.
   */
  constructor(expectedKeys = 0) {
    let buckets = INITIAL_BUCKETS;
    while (expectedKeys * 4 > buckets * 3) buckets *= 2;
    this.buckets = new Int32Array(buckets * 2);
    this.mask = buckets - 1;
    const slots = Math.max(INITIAL_SLOTS, expectedKeys);
    this.offsets = new Float64Array(slots);
    this.lengths = new Uint32Array(slots);
    this.keyLens = new Uint8Array(slots);
  }

  /** Number of live keys. */
  get size(): number {
    return this.count;
  }

  /** Sum of the lengths of the live put records. */
  get liveBytes(): number {
    return this.live;
  }

  /** Slot of `key`, or -1 when absent. Read its location with offsetOf / lengthOf. */
  slotOf(key: string): number {
    const b = this.find(key, this.hash(key));
    return b < 0 ? -1 : this.buckets[2 * b + 1] - 1;
  }

  /**
   * Slot of the key whose UTF-8 bytes are buf[start, end), without making a
   * string of them: -1 when absent, NOT_ASCII when a byte is not ASCII (then
   * use slotOf). For scans of the whole file, where most keys are only
   * checked, not kept.
   */
  slotOfAscii(buf: Buffer, start: number, end: number): number {
    const h = asciiHash(this.seed, buf, start, end);
    if (h === undefined) return NOT_ASCII;
    const b = this.findBytes(buf, start, end, h);
    return b < 0 ? -1 : this.buckets[2 * b + 1] - 1;
  }

  /** The key stored in a slot returned by slotOf or slotOfAscii (made as a string on each call). */
  keyOf(slot: number): string {
    return this.keyAt(slot)!;
  }

  /** Record offset stored in a slot returned by slotOf. */
  offsetOf(slot: number): number {
    return this.offsets[slot];
  }

  /** Record length stored in a slot returned by slotOf. */
  lengthOf(slot: number): number {
    return this.lengths[slot];
  }

  /** One past the highest slot in use so far: every slot below it may hold a key (see slotUsed). */
  get slotLimit(): number {
    return this.slotCount;
  }

  /** True when `slot` (below slotLimit) holds a key: for walks over every slot. */
  slotUsed(slot: number): boolean {
    return this.keyLens[slot] !== 0;
  }

  /** A zeroed offset array as long as the index's (indexed by slot), to fill for adoptOffsets. */
  blankOffsets(): Float64Array {
    return new Float64Array(this.offsets.length);
  }

  /**
   * Replaces every slot's offset at once (a compaction moves every record
   * and nothing else): `next[slot]` for each slot below slotLimit.
   */
  adoptOffsets(next: Float64Array): void {
    if (next.length < this.slotCount) throw new RangeError(`adoptOffsets needs ${this.slotCount} offsets, got ${next.length}`);
    // The slot arrays grow together (see allocSlot).
    if (next.length !== this.lengths.length) {
      const sized = new Float64Array(this.lengths.length);
      sized.set(next.subarray(0, this.slotCount));
      next = sized;
    }
    this.offsets = next;
  }

  /** True when `key` is in the index. */
  has(key: string): boolean {
    return this.find(key, this.hash(key)) >= 0;
  }

  /**
   * Points `key` at a record and returns true when the key is new. Callers
   * that may need to undo read the old location (slotOf/offsetOf/lengthOf)
   * first.
   */
  set(key: string, offset: number, length: number): boolean {
    const h = this.hash(key);
    const b = this.find(key, h);
    if (b >= 0) {
      this.relocate(this.buckets[2 * b + 1] - 1, offset, length);
      return false;
    }
    const slot = this.allocSlot();
    this.storeKey(slot, key);
    this.insertAt(~b, h, slot, offset, length);
    return true;
  }

  /**
   * set() for the key whose UTF-8 bytes are buf[start, end), without making
   * a string of them (as when building the index from the file): 1 when the
   * key is new, 0 when it was there, NOT_ASCII (nothing done: use set) when
   * a byte is not ASCII.
   */
  setAscii(buf: Buffer, start: number, end: number, offset: number, length: number): number {
    const h = asciiHash(this.seed, buf, start, end);
    if (h === undefined) return NOT_ASCII;
    const b = this.findBytes(buf, start, end, h);
    if (b >= 0) {
      this.relocate(this.buckets[2 * b + 1] - 1, offset, length);
      return 0;
    }
    const slot = this.allocSlot();
    const n = end - start;
    if (n <= INLINE_KEY_BYTES) {
      const chunk = this.keyChunks[slot >>> CHUNK_BITS];
      const at = (slot & CHUNK_MASK) * INLINE_KEY_BYTES;
      for (let i = 0; i < n; i++) chunk[at + i] = buf[start + i];
      this.keyLens[slot] = n;
    } else {
      this.keyLens[slot] = LONG_KEY;
      this.longKeys.set(slot, buf.toString('latin1', start, end));
    }
    this.insertAt(~b, h, slot, offset, length);
    return 1;
  }

  /** Removes `key`; returns false when it was absent. */
  remove(key: string): boolean {
    const b = this.find(key, this.hash(key));
    if (b < 0) return false;
    this.removeAt(b);
    return true;
  }

  /** remove() for the key whose UTF-8 bytes are buf[start, end): 1 when removed, 0 when absent, NOT_ASCII (nothing done: use remove). */
  removeAscii(buf: Buffer, start: number, end: number): number {
    const h = asciiHash(this.seed, buf, start, end);
    if (h === undefined) return NOT_ASCII;
    const b = this.findBytes(buf, start, end, h);
    if (b < 0) return 0;
    this.removeAt(b);
    return 1;
  }

  /** Every live key, in no particular order. */
  keys(): string[] {
    const out: string[] = [];
    for (let slot = 0; slot < this.slotCount; slot++) if (this.keyLens[slot] !== 0) out.push(this.keyAt(slot)!);
    return out;
  }

  /** Removes every key and releases the memory. */
  clear(): void {
    this.buckets = new Int32Array(INITIAL_BUCKETS * 2);
    this.mask = INITIAL_BUCKETS - 1;
    this.keyChunks = [];
    this.keyLens = new Uint8Array(INITIAL_SLOTS);
    this.longKeys.clear();
    this.slotCount = 0;
    this.offsets = new Float64Array(INITIAL_SLOTS);
    this.lengths = new Uint32Array(INITIAL_SLOTS);
    this.free.length = 0;
    this.count = 0;
    this.live = 0;
  }

  private relocate(slot: number, offset: number, length: number): void {
    this.live += length - this.lengths[slot];
    this.offsets[slot] = offset;
    this.lengths[slot] = length;
  }

  /** Fills empty bucket `b` (where find stopped) with a new key's slot. */
  private insertAt(b: number, h: number, slot: number, offset: number, length: number): void {
    this.buckets[2 * b] = h;
    this.buckets[2 * b + 1] = slot + 1;
    this.offsets[slot] = offset;
    this.lengths[slot] = length;
    this.live += length;
    this.count++;
    if (this.count * 4 > (this.mask + 1) * 3) this.resize((this.mask + 1) * 2);
  }

  private removeAt(b: number): void {
    const slot = this.buckets[2 * b + 1] - 1;
    this.live -= this.lengths[slot];
    if (this.keyLens[slot] === LONG_KEY) this.longKeys.delete(slot);
    this.keyLens[slot] = 0;
    this.free.push(slot);
    this.count--;
    this.deleteBucket(b);
  }

  /** Stores a new key's bytes in its slot, or the string when it is long or not ASCII. */
  private storeKey(slot: number, key: string): void {
    const n = key.length;
    if (n <= INLINE_KEY_BYTES) {
      const chunk = this.keyChunks[slot >>> CHUNK_BITS];
      const at = (slot & CHUNK_MASK) * INLINE_KEY_BYTES;
      let i = 0;
      for (; i < n; i++) {
        const c = key.charCodeAt(i);
        if (c >= 0x80) break;
        chunk[at + i] = c;
      }
      if (i === n) {
        this.keyLens[slot] = n;
        return;
      }
    }
    this.keyLens[slot] = LONG_KEY;
    this.longKeys.set(slot, key);
  }

  private keyAt(slot: number): string | undefined {
    const n = this.keyLens[slot];
    if (n === 0) return undefined;
    if (n === LONG_KEY) return this.longKeys.get(slot);
    const at = (slot & CHUNK_MASK) * INLINE_KEY_BYTES;
    return this.keyChunks[slot >>> CHUNK_BITS].toString('latin1', at, at + n);
  }

  /** True when slot `slot` holds `key`. */
  private keyEquals(slot: number, key: string): boolean {
    const n = this.keyLens[slot];
    if (n === LONG_KEY) return this.longKeys.get(slot) === key;
    // A non-ASCII code unit never equals a stored (ASCII) byte.
    if (key.length !== n) return false;
    const chunk = this.keyChunks[slot >>> CHUNK_BITS];
    const at = (slot & CHUNK_MASK) * INLINE_KEY_BYTES;
    for (let i = 0; i < n; i++) if (chunk[at + i] !== key.charCodeAt(i)) return false;
    return true;
  }

  /** True when slot `slot` holds the ASCII key buf[start, end). */
  private keyEqualsBytes(slot: number, buf: Buffer, start: number, end: number): boolean {
    const n = this.keyLens[slot];
    const length = end - start;
    if (n === LONG_KEY) {
      const key = this.longKeys.get(slot)!;
      if (key.length !== length) return false;
      for (let i = 0; i < length; i++) if (key.charCodeAt(i) !== buf[start + i]) return false;
      return true;
    }
    if (n !== length) return false;
    const chunk = this.keyChunks[slot >>> CHUNK_BITS];
    const at = (slot & CHUNK_MASK) * INLINE_KEY_BYTES;
    for (let i = 0; i < length; i++) if (chunk[at + i] !== buf[start + i]) return false;
    return true;
  }

  /**
   * Bucket holding `key`; when absent, ~(the empty bucket where it would go),
   * which is negative. Stops at the first empty bucket (no tombstones).
   */
  private find(key: string, h: number): number {
    const buckets = this.buckets;
    const mask = this.mask;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      const stored = buckets[2 * b + 1];
      if (stored === EMPTY) return ~b;
      if (buckets[2 * b] === h && this.keyEquals(stored - 1, key)) return b;
    }
  }

  /** find() for an ASCII key given as bytes. */
  private findBytes(buf: Buffer, start: number, end: number, h: number): number {
    const buckets = this.buckets;
    const mask = this.mask;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      const stored = buckets[2 * b + 1];
      if (stored === EMPTY) return ~b;
      if (buckets[2 * b] === h && this.keyEqualsBytes(stored - 1, buf, start, end)) return b;
    }
  }

  private insertBucket(h: number, stored: number): void {
    const buckets = this.buckets;
    const mask = this.mask;
    let b = h & mask;
    while (buckets[2 * b + 1] !== EMPTY) b = (b + 1) & mask;
    buckets[2 * b] = h;
    buckets[2 * b + 1] = stored;
  }

  /**
   * Empties bucket `hole` and shifts back later entries of the probe run whose
   * home bucket is not cyclically within (hole, their bucket], so every key
   * stays reachable from its home bucket without crossing an empty bucket.
   */
  private deleteBucket(hole: number): void {
    const buckets = this.buckets;
    const mask = this.mask;
    let i = hole;
    buckets[2 * i + 1] = EMPTY;
    for (let j = (i + 1) & mask; buckets[2 * j + 1] !== EMPTY; j = (j + 1) & mask) {
      const home = buckets[2 * j] & mask;
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      buckets[2 * i] = buckets[2 * j];
      buckets[2 * i + 1] = buckets[2 * j + 1];
      buckets[2 * j + 1] = EMPTY;
      i = j;
    }
  }

  private resize(bucketCount: number): void {
    const old = this.buckets;
    this.buckets = new Int32Array(bucketCount * 2);
    this.mask = bucketCount - 1;
    // Stored hashes: no key is hashed again.
    for (let b = 0; b < old.length; b += 2) if (old[b + 1] !== EMPTY) this.insertBucket(old[b], old[b + 1]);
  }

  /** A free slot (its key not stored yet), with room for its key bytes. */
  private allocSlot(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    const slot = this.slotCount++;
    const chunk = slot >>> CHUNK_BITS;
    const inChunk = slot & CHUNK_MASK;
    // The first chunk grows by doubling (a small table stays small); later ones are made whole at once.
    if (chunk === this.keyChunks.length) {
      this.keyChunks.push(Buffer.allocUnsafeSlow((chunk === 0 ? INITIAL_SLOTS : CHUNK_SIZE) * INLINE_KEY_BYTES));
    } else if (chunk === 0 && inChunk * INLINE_KEY_BYTES === this.keyChunks[0].length) {
      const grown = Buffer.allocUnsafeSlow(Math.min(CHUNK_SIZE, inChunk * 2) * INLINE_KEY_BYTES);
      this.keyChunks[0].copy(grown);
      this.keyChunks[0] = grown;
    }
    if (slot === this.offsets.length) {
      // Grow by 1.5x: bounds the slack at a third of the arrays.
      const capacity = Math.ceil(slot * 1.5);
      const offsets = new Float64Array(capacity);
      offsets.set(this.offsets);
      const lengths = new Uint32Array(capacity);
      lengths.set(this.lengths);
      const keyLens = new Uint8Array(capacity);
      keyLens.set(this.keyLens);
      this.offsets = offsets;
      this.lengths = lengths;
      this.keyLens = keyLens;
    }
    return slot;
  }

  /** Seeded FNV-1a over UTF-16 code units, then the murmur3 finaliser for well-mixed low bits. */
  private hash(key: string): number {
    let h = this.seed ^ 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    return finish(h);
  }
}

/** hash() of the ASCII key buf[start, end) (for ASCII, UTF-8 bytes are the UTF-16 code units); undefined when a byte is not ASCII. */
function asciiHash(seed: number, buf: Buffer, start: number, end: number): number | undefined {
  let h = seed ^ 0x811c9dc5;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c >= 0x80) return undefined;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return finish(h);
}

/** The murmur3 finaliser. */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}
