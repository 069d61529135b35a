/**
 * A set of keys given as UTF-8 bytes, with no JS object per key: for scans
 * that only count live keys (backup verification). Making a million key
 * strings for that costs hundreds of milliseconds of GC, in pauses the
 * serving table would feel.
 *
 * Keys are copied into 1 MiB arena chunks (a u16 length, then the bytes; a
 * key never straddles two chunks); the buckets of an open-addressing table
 * (backward-shift deletion) hold each key's hash and arena position. The
 * arena only grows: a deleted key's bytes stay until the set is dropped.
 * Keys longer than 65533 bytes are not supported (table keys are <= 1024).
 */

const ARENA_CHUNK_BYTES = 1024 * 1024;
const INITIAL_BUCKETS = 1024;

/** A set of byte strings. */
export class ByteKeySet {
  // Bucket b: slots[2b] = hash, slots[2b + 1] = 1 + arena position of the key
  // (0 = empty); side by side, so a probe costs one cache miss, plus one for
  // the key's bytes (memory latency dominates at a million keys).
  private slots: Float64Array;
  private mask: number;
  // A key at arena position p: chunks[p / ARENA_CHUNK_BYTES], at p % ARENA_CHUNK_BYTES, as a u16 length then the bytes.
  private readonly chunks: Buffer[] = [];
  private chunkUsed = ARENA_CHUNK_BYTES;
  private count = 0;

  /** `expectedKeys` sizes the table so that reaching it never rehashes. */
  constructor(expectedKeys = 0) {
    let buckets = INITIAL_BUCKETS;
    while (expectedKeys * 4 > buckets * 3) buckets *= 2;
    this.slots = new Float64Array(buckets * 2);
    this.mask = buckets - 1;
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
    this.slots[2 * ~b] = h;
    this.slots[2 * ~b + 1] = this.store(buf, start, end) + 1;
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
    const slots = this.slots;
    const mask = this.mask;
    let i = b;
    slots[2 * i + 1] = 0;
    for (let j = (i + 1) & mask; slots[2 * j + 1] !== 0; j = (j + 1) & mask) {
      const home = slots[2 * j] & mask;
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      slots[2 * i] = slots[2 * j];
      slots[2 * i + 1] = slots[2 * j + 1];
      slots[2 * j + 1] = 0;
      i = j;
    }
    return true;
  }

  /** Bucket holding the key, or ~(the empty bucket where it would go). */
  private find(buf: Buffer, start: number, end: number, h: number): number {
    const slots = this.slots;
    const mask = this.mask;
    const length = end - start;
    for (let b = h & mask; ; b = (b + 1) & mask) {
      const stored = slots[2 * b + 1];
      if (stored === 0) return ~b;
      if (slots[2 * b] !== h) continue;
      const p = stored - 1;
      const chunk = this.chunks[Math.floor(p / ARENA_CHUNK_BYTES)];
      let o = p % ARENA_CHUNK_BYTES;
      if ((chunk[o] | (chunk[o + 1] << 8)) !== length) continue;
      o += 2;
      let i = 0;
      while (i < length && chunk[o + i] === buf[start + i]) i++;
      if (i === length) return b;
    }
  }

  /** Copies the key (length first) into the arena and returns its position. */
  private store(buf: Buffer, start: number, end: number): number {
    const length = end - start;
    if (this.chunkUsed + 2 + length > ARENA_CHUNK_BYTES) {
      this.chunks.push(Buffer.allocUnsafe(ARENA_CHUNK_BYTES));
      this.chunkUsed = 0;
    }
    const chunk = this.chunks[this.chunks.length - 1];
    const o = this.chunkUsed;
    chunk[o] = length & 0xff;
    chunk[o + 1] = length >>> 8;
    // A byte loop: Buffer.copy allocates a view per call, which costs more for short keys.
    for (let i = 0; i < length; i++) chunk[o + 2 + i] = buf[start + i];
    this.chunkUsed += 2 + length;
    return (this.chunks.length - 1) * ARENA_CHUNK_BYTES + o;
  }

  private resize(bucketCount: number): void {
    const old = this.slots;
    this.slots = new Float64Array(bucketCount * 2);
    this.mask = bucketCount - 1;
    const slots = this.slots;
    const mask = this.mask;
    for (let b = 0; b < old.length; b += 2) {
      if (old[b + 1] === 0) continue;
      let n = old[b] & mask;
      while (slots[2 * n + 1] !== 0) n = (n + 1) & mask;
      slots[2 * n] = old[b];
      slots[2 * n + 1] = old[b + 1];
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
