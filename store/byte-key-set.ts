/**
 * A set of keys given as UTF-8 bytes, with no JS object per key: for scans
 * that only count live keys (backup verification). Making a million key
 * strings for that costs hundreds of milliseconds of GC, in pauses the
 * serving table would feel.
 *
 * Keys are copied into 1 MiB arena chunks (a key never straddles two);
 * entries are (arena position, length); buckets are an open-addressing
 * table of [hash, entry + 1] (0 = empty) with backward-shift deletion. The
 * arena only grows: a deleted key's bytes stay until the set is dropped.
 */

const ARENA_CHUNK_BYTES = 1024 * 1024;
const INITIAL_BUCKETS = 1024;

/** A set of byte strings. */
export class ByteKeySet {
  private buckets: Int32Array;
  private mask: number;
  private readonly chunks: Buffer[] = [];
  private chunkUsed = ARENA_CHUNK_BYTES;
  // Entry e: key bytes at chunks[chunkOf[e]][startOf[e], startOf[e] + lengthOf[e]).
  private chunkOf: Uint32Array;
  private startOf: Uint32Array;
  private lengthOf: Uint16Array;
  private entries = 0;
  private count = 0;

  /** `expectedKeys` sizes the table so that reaching it never rehashes. */
  constructor(expectedKeys = 0) {
    let buckets = INITIAL_BUCKETS;
    while (expectedKeys * 4 > buckets * 3) buckets *= 2;
    this.buckets = new Int32Array(buckets * 2);
    this.mask = buckets - 1;
    const capacity = Math.max(1024, expectedKeys);
    this.chunkOf = new Uint32Array(capacity);
    this.startOf = new Uint32Array(capacity);
    this.lengthOf = new Uint16Array(capacity);
  }

  /** Number of keys in the set. */
  get size(): number {
    return this.count;
  }

  /** Adds buf[start, end) (at most 65535 bytes); returns false when it was there. */
  add(buf: Buffer, start: number, end: number): boolean {
    const h = hashBytes(buf, start, end);
    const b = this.find(buf, start, end, h);
    if (b >= 0) return false;
    const e = this.store(buf, start, end);
    this.buckets[2 * ~b] = h;
    this.buckets[2 * ~b + 1] = e + 1;
    this.count++;
    if (this.count * 4 > (this.mask + 1) * 3) this.resize((this.mask + 1) * 2);
    return true;
  }

  /** Removes buf[start, end); returns false when it was absent. */
  delete(buf: Buffer, start: number, end: number): boolean {
    const b = this.find(buf, start, end, hashBytes(buf, start, end));
    if (b < 0) return false;
    this.count--;
    // Backward-shift deletion, as in KeyIndex.
    const buckets = this.buckets;
    const mask = this.mask;
    let i = b;
    buckets[2 * i + 1] = 0;
    for (let j = (i + 1) & mask; buckets[2 * j + 1] !== 0; j = (j + 1) & mask) {
      const home = buckets[2 * j] & mask;
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      buckets[2 * i] = buckets[2 * j];
      buckets[2 * i + 1] = buckets[2 * j + 1];
      buckets[2 * j + 1] = 0;
      i = j;
    }
    return true;
  }

  /** Bucket holding the key, or ~(the empty bucket where it would go). */
  private find(buf: Buffer, start: number, end: number, h: number): number {
    const buckets = this.buckets;
    const mask = this.mask;
    const length = end - start;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      const stored = buckets[2 * b + 1];
      if (stored === 0) return ~b;
      if (buckets[2 * b] !== h) continue;
      const e = stored - 1;
      if (this.lengthOf[e] !== length) continue;
      const chunk = this.chunks[this.chunkOf[e]];
      const at = this.startOf[e];
      let i = 0;
      while (i < length && chunk[at + i] === buf[start + i]) i++;
      if (i === length) return b;
    }
  }

  /** Copies the key into the arena and returns its new entry. */
  private store(buf: Buffer, start: number, end: number): number {
    const length = end - start;
    if (this.chunkUsed + length > ARENA_CHUNK_BYTES) {
      this.chunks.push(Buffer.allocUnsafe(Math.max(ARENA_CHUNK_BYTES, length)));
      this.chunkUsed = 0;
    }
    const e = this.entries++;
    if (e === this.chunkOf.length) this.growEntries();
    const chunk = this.chunks.length - 1;
    buf.copy(this.chunks[chunk], this.chunkUsed, start, end);
    this.chunkOf[e] = chunk;
    this.startOf[e] = this.chunkUsed;
    this.lengthOf[e] = length;
    this.chunkUsed += length;
    return e;
  }

  private growEntries(): void {
    const capacity = Math.ceil(this.chunkOf.length * 1.5);
    const chunkOf = new Uint32Array(capacity);
    chunkOf.set(this.chunkOf);
    const startOf = new Uint32Array(capacity);
    startOf.set(this.startOf);
    const lengthOf = new Uint16Array(capacity);
    lengthOf.set(this.lengthOf);
    this.chunkOf = chunkOf;
    this.startOf = startOf;
    this.lengthOf = lengthOf;
  }

  private resize(bucketCount: number): void {
    const old = this.buckets;
    this.buckets = new Int32Array(bucketCount * 2);
    this.mask = bucketCount - 1;
    const buckets = this.buckets;
    const mask = this.mask;
    for (let b = 0; b < old.length; b += 2) {
      if (old[b + 1] === 0) continue;
      let n = old[b] & mask;
      while (buckets[2 * n + 1] !== 0) n = (n + 1) & mask;
      buckets[2 * n] = old[b];
      buckets[2 * n + 1] = old[b + 1];
    }
  }
}

/** FNV-1a over bytes with the murmur3 finaliser. */
function hashBytes(buf: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i], 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}
