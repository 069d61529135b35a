/**
 * The in-memory index: key -> location (offset, length) of the key's live put
 * record, and the total of the live records' lengths.
 *
 * Layout, about 35-50 bytes per key plus the key string at a million keys,
 * with no object per key:
 * - slots: each key gets a small integer slot; the slot's data lives in
 *   growable arrays (the key string, a Float64Array offset exact to 2^53, a
 *   Uint32Array record length). Slots of removed keys are reused. Key
 *   strings are kept in fixed-size chunks, so growth never copies a large
 *   array (a push that grows a million-element array stalls for ~10 ms).
 * - buckets: an open-addressing hash table (linear probing, load <= 3/4) in an
 *   Int32Array of [hash, slot + 1] pairs (0 = empty, so a new table is the
 *   allocator's zeroed memory, with nothing to fill), so a probe compares
 *   hashes without touching the slot arrays; removal shifts later entries
 *   back (no tombstones). The hash is seeded per index (FNV-1a over UTF-16
 *   code units, then a murmur3 finaliser).
 * A JS Map was measured at about 600 ns per insert at a million keys, most of
 * the time of an open; this table is about twice as fast and half the size.
 */
import { randomBytes } from 'node:crypto';

// Bucket value of an empty bucket (occupied ones hold slot + 1).
const EMPTY = 0;
/** slotOfAscii's answer for a key with a non-ASCII byte: look it up by string. */
export const NOT_ASCII = -2;
const INITIAL_BUCKETS = 1024;
const INITIAL_SLOTS = 1024;
const CHUNK_BITS = 16;
const CHUNK_SIZE = 1 << CHUNK_BITS;
const CHUNK_MASK = CHUNK_SIZE - 1;
/** Most keys one setMany() call takes. */
export const SET_MANY_MAX = 64;

/** Key -> (record offset, record length) for every live key. */
export class KeyIndex {
  // buckets[2b] = hash, buckets[2b + 1] = slot + 1, or EMPTY.
  private buckets: Int32Array;
  private mask: number;
  // Key of slot s: keyChunks[s >>> CHUNK_BITS][s & CHUNK_MASK] (undefined when free).
  private keyChunks: (string | undefined)[][] = [];
  private slotCount = 0;
  private offsets: Float64Array;
  private lengths: Uint32Array;
  private readonly free: number[] = [];
  private count = 0;
  private live = 0;
  private readonly seed = randomBytes(4).readInt32LE(0);
  private readonly batchHashes = new Int32Array(SET_MANY_MAX);
  private touched = 0;

  /**
   * `expectedKeys` sizes the table up front, so that filling it to that many
   * keys never rehashes (a rehash at a million keys blocks for tens of ms,
   * which matters when the index is built while the table serves, by
   * compaction). Costs nothing until used: the arrays start as zero pages.
   */
  constructor(expectedKeys = 0) {
    let buckets = INITIAL_BUCKETS;
    while (expectedKeys * 4 > buckets * 3) buckets *= 2;
    this.buckets = new Int32Array(buckets * 2);
    this.mask = buckets - 1;
    this.offsets = new Float64Array(Math.max(INITIAL_SLOTS, expectedKeys));
    this.lengths = new Uint32Array(Math.max(INITIAL_SLOTS, expectedKeys));
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
    // The same hash as hash(): for ASCII, UTF-8 bytes are the UTF-16 code units.
    let h = this.seed ^ 0x811c9dc5;
    for (let i = start; i < end; i++) {
      const c = buf[i];
      if (c >= 0x80) return NOT_ASCII;
      h = Math.imul(h ^ c, 0x01000193);
    }
    h = finish(h);
    const buckets = this.buckets;
    const mask = this.mask;
    const length = end - start;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      const stored = buckets[2 * b + 1];
      if (stored === EMPTY) return -1;
      if (buckets[2 * b] !== h) continue;
      const key = this.keyAt(stored - 1)!;
      if (key.length !== length) continue;
      let i = 0;
      while (i < length && key.charCodeAt(i) === buf[start + i]) i++;
      if (i === length) return stored - 1;
    }
  }

  /** The key stored in a slot returned by slotOf or slotOfAscii. */
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

  /** One past the highest slot in use so far: every slot below it may hold a key (see slotKey). */
  get slotLimit(): number {
    return this.slotCount;
  }

  /** The key in `slot` (below slotLimit), or undefined when the slot is free: for walks over every slot. */
  slotKey(slot: number): string | undefined {
    return this.keyAt(slot);
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
    // The offset and length arrays grow together (see allocSlot).
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
    return this.setHashed(key, this.hash(key), offset, length);
  }

  /**
   * set() for the first `count` (at most SET_MANY_MAX) keys of `keys`, in
   * order, as when building an index. Faster than one set() after another
   * on a large index: one at a time, each insert's bucket read is a cache
   * miss (~150 ns at a million keys) that starts only once the key before
   * it is in; here the keys are hashed first and their buckets read
   * together, so the misses overlap. Returns the number of new keys.
   */
  setMany(keys: readonly string[], offsets: Float64Array, lengths: Uint32Array, count: number): number {
    if (count > SET_MANY_MAX) throw new RangeError(`setMany takes at most ${SET_MANY_MAX} keys, got ${count}`);
    const hashes = this.batchHashes;
    for (let i = 0; i < count; i++) hashes[i] = this.hash(keys[i]);
    const buckets = this.buckets;
    const mask = this.mask;
    let touched = 0;
    for (let i = 0; i < count; i++) touched |= buckets[2 * (hashes[i] & mask) + 1];
    // Kept, so that the reads above are not optimised away.
    this.touched = touched;
    let added = 0;
    for (let i = 0; i < count; i++) if (this.setHashed(keys[i], hashes[i], offsets[i], lengths[i])) added++;
    return added;
  }

  private setHashed(key: string, h: number, offset: number, length: number): boolean {
    const b = this.find(key, h);
    let slot: number;
    if (b >= 0) {
      slot = this.buckets[2 * b + 1] - 1;
      this.live -= this.lengths[slot];
    } else {
      slot = this.allocSlot(key);
      // find() stopped at the empty bucket where the key belongs.
      this.buckets[2 * ~b] = h;
      this.buckets[2 * ~b + 1] = slot + 1;
      this.count++;
      if (this.count * 4 > (this.mask + 1) * 3) this.resize((this.mask + 1) * 2);
    }
    this.offsets[slot] = offset;
    this.lengths[slot] = length;
    this.live += length;
    return b < 0;
  }

  /** Removes `key`; returns false when it was absent. */
  remove(key: string): boolean {
    const b = this.find(key, this.hash(key));
    if (b < 0) return false;
    const slot = this.buckets[2 * b + 1] - 1;
    this.live -= this.lengths[slot];
    this.keyChunks[slot >>> CHUNK_BITS][slot & CHUNK_MASK] = undefined;
    this.free.push(slot);
    this.count--;
    this.deleteBucket(b);
    return true;
  }

  /** Every live key, in no particular order. */
  keys(): string[] {
    const out: string[] = [];
    for (const chunk of this.keyChunks) for (const key of chunk) if (key !== undefined) out.push(key);
    return out;
  }

  /** Removes every key and releases the memory. */
  clear(): void {
    this.buckets = new Int32Array(INITIAL_BUCKETS * 2);
    this.mask = INITIAL_BUCKETS - 1;
    this.keyChunks = [];
    this.slotCount = 0;
    this.offsets = new Float64Array(INITIAL_SLOTS);
    this.lengths = new Uint32Array(INITIAL_SLOTS);
    this.free.length = 0;
    this.count = 0;
    this.live = 0;
  }

  private keyAt(slot: number): string | undefined {
    return this.keyChunks[slot >>> CHUNK_BITS][slot & CHUNK_MASK];
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
      if (buckets[2 * b] === h && this.keyAt(stored - 1) === key) return b;
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

  private allocSlot(key: string): number {
    const reused = this.free.pop();
    if (reused !== undefined) {
      this.keyChunks[reused >>> CHUNK_BITS][reused & CHUNK_MASK] = key;
      return reused;
    }
    const slot = this.slotCount++;
    const chunk = slot >>> CHUNK_BITS;
    // The first chunk grows as keys come (a small table stays small); later
    // ones are made whole at once. Grown by push, a chunk's backing store is
    // copied again and again in the young generation, and once the index
    // has more than one chunk, the scavenges that copy and promote them
    // stalled compaction for 5-10 ms.
    if (chunk === this.keyChunks.length) this.keyChunks.push(chunk === 0 ? [] : new Array<string | undefined>(CHUNK_SIZE));
    this.keyChunks[chunk][slot & CHUNK_MASK] = key;
    if (slot === this.offsets.length) {
      // Grow by 1.5x: bounds the slack at a third of the arrays.
      const capacity = Math.ceil(slot * 1.5);
      const offsets = new Float64Array(capacity);
      offsets.set(this.offsets);
      const lengths = new Uint32Array(capacity);
      lengths.set(this.lengths);
      this.offsets = offsets;
      this.lengths = lengths;
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

/** The murmur3 finaliser. */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

/**
 * Sets for an index that is being built, applied SET_MANY_MAX at a time
 * with setMany. Until flush(), the queued keys are not in the index: flush
 * before anything else reads or changes it (a remove, a lookup).
 */
export class QueuedSets {
  private readonly keys: string[] = [];
  private readonly offsets = new Float64Array(SET_MANY_MAX);
  private readonly lengths = new Uint32Array(SET_MANY_MAX);
  private count = 0;

  constructor(private readonly index: KeyIndex) {}

  /** Queues index.set(key, offset, length). */
  add(key: string, offset: number, length: number): void {
    const i = this.count++;
    this.keys[i] = key;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    if (this.count === SET_MANY_MAX) this.flush();
  }

  /** Applies every queued set, in order. */
  flush(): void {
    if (this.count === 0) return;
    this.index.setMany(this.keys, this.offsets, this.lengths, this.count);
    this.count = 0;
  }
}
