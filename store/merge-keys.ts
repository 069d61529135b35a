/**
 * The per-key state of a rebuild merge, keyed by the key's UTF-8 bytes,
 * with no JS string or object per key: a rebuild of a large table must not
 * spend its time making strings and collecting them (a Map of 100k string
 * keys to objects costs ~50 ms plus GC; this costs a fraction of it).
 *
 * Each key gets a slot; the slot's state lives in typed arrays (sequence
 * number, kind, source, offset, length of the record currently winning for
 * the key; sequence -1 means none yet). Key bytes are copied into 1 MiB arena
 * chunks. The hash table is open addressing with linear probing over
 * [hash, slot + 1] pairs, seeded per instance (FNV-1a over the bytes, murmur3
 * finaliser). Keys are never removed.
 */
import { randomBytes } from 'node:crypto';

const ARENA_CHUNK_BYTES = 1024 * 1024;
const INITIAL_BUCKETS = 1024;
const INITIAL_SLOTS = 1024;

/** Key bytes -> slot, and each slot's winning record. */
export class MergeKeys {
  /** Sequence number of the slot's winning record, -1 for none. */
  seqs: Float64Array;
  /** File offset of the winning record in its source. */
  offsets: Float64Array;
  lengths: Uint32Array;
  kinds: Uint8Array;
  /** Source of the winning record (the merge's source numbers). */
  srcs: Uint8Array;
  private buckets: Int32Array;
  private mask: number;
  private count = 0;
  private keyPos: Float64Array;
  private keyLen: Uint16Array;
  private readonly chunks: Buffer[] = [];
  private chunkUsed = ARENA_CHUNK_BYTES;
  private readonly seed = randomBytes(4).readInt32LE(0);

  /** `expectedKeys` sizes the tables so that reaching it never rehashes or grows them. */
  constructor(expectedKeys = 0) {
    let buckets = INITIAL_BUCKETS;
    while (expectedKeys * 4 > buckets * 3) buckets *= 2;
    const slots = Math.max(INITIAL_SLOTS, expectedKeys);
    this.buckets = new Int32Array(buckets * 2);
    this.mask = buckets - 1;
    this.seqs = new Float64Array(slots);
    this.offsets = new Float64Array(slots);
    this.lengths = new Uint32Array(slots);
    this.kinds = new Uint8Array(slots);
    this.srcs = new Uint8Array(slots);
    this.keyPos = new Float64Array(slots);
    this.keyLen = new Uint16Array(slots);
  }

  /** Number of keys. */
  get size(): number {
    return this.count;
  }

  /** Slot of the key buf[start, end) (at most 65535 bytes), adding it (with no record) when new. */
  slotFor(buf: Buffer, start: number, end: number): number {
    const h = this.hash(buf, start, end);
    const b = this.find(buf, start, end, h);
    if (b >= 0) return this.buckets[2 * b + 1] - 1;
    const slot = this.count++;
    if (slot === this.seqs.length) this.grow();
    this.keyPos[slot] = this.store(buf, start, end);
    this.keyLen[slot] = end - start;
    this.seqs[slot] = -1;
    this.buckets[2 * ~b] = h;
    this.buckets[2 * ~b + 1] = slot + 1;
    if (this.count * 4 > (this.mask + 1) * 3) this.resize((this.mask + 1) * 2);
    return slot;
  }

  /** Slot of the key buf[start, end), or -1 when absent. */
  slotOf(buf: Buffer, start: number, end: number): number {
    const b = this.find(buf, start, end, this.hash(buf, start, end));
    return b < 0 ? -1 : this.buckets[2 * b + 1] - 1;
  }

  /** The key of a slot, as a string. */
  keyOf(slot: number): string {
    const p = this.keyPos[slot];
    const chunk = this.chunks[Math.floor(p / ARENA_CHUNK_BYTES)];
    const o = p % ARENA_CHUNK_BYTES;
    return chunk.toString('utf8', o, o + this.keyLen[slot]);
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
      const slot = stored - 1;
      if (this.keyLen[slot] !== length) continue;
      const p = this.keyPos[slot];
      const chunk = this.chunks[Math.floor(p / ARENA_CHUNK_BYTES)];
      const o = p % ARENA_CHUNK_BYTES;
      let i = 0;
      while (i < length && chunk[o + i] === buf[start + i]) i++;
      if (i === length) return b;
    }
  }

  /** Copies the key into the arena and returns its position (a key never straddles two chunks). */
  private store(buf: Buffer, start: number, end: number): number {
    const length = end - start;
    if (this.chunkUsed + length > ARENA_CHUNK_BYTES) {
      this.chunks.push(Buffer.allocUnsafe(ARENA_CHUNK_BYTES));
      this.chunkUsed = 0;
    }
    const chunk = this.chunks[this.chunks.length - 1];
    const o = this.chunkUsed;
    // A byte loop: Buffer.copy allocates a view per call, which costs more for short keys.
    for (let i = 0; i < length; i++) chunk[o + i] = buf[start + i];
    this.chunkUsed += length;
    return (this.chunks.length - 1) * ARENA_CHUNK_BYTES + o;
  }

  private hash(buf: Buffer, start: number, end: number): number {
    let h = this.seed ^ 0x811c9dc5;
    for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i], 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h | 0;
  }

  private resize(bucketCount: number): void {
    const old = this.buckets;
    const buckets = (this.buckets = new Int32Array(bucketCount * 2));
    const mask = (this.mask = bucketCount - 1);
    for (let b = 0; b < old.length; b += 2) {
      if (old[b + 1] === 0) continue;
      let n = old[b] & mask;
      while (buckets[2 * n + 1] !== 0) n = (n + 1) & mask;
      buckets[2 * n] = old[b];
      buckets[2 * n + 1] = old[b + 1];
    }
  }

  private grow(): void {
    const capacity = this.seqs.length * 2;
    this.seqs = grown(new Float64Array(capacity), this.seqs);
    this.offsets = grown(new Float64Array(capacity), this.offsets);
    this.lengths = grown(new Uint32Array(capacity), this.lengths);
    this.kinds = grown(new Uint8Array(capacity), this.kinds);
    this.srcs = grown(new Uint8Array(capacity), this.srcs);
    this.keyPos = grown(new Float64Array(capacity), this.keyPos);
    this.keyLen = grown(new Uint16Array(capacity), this.keyLen);
  }
}

/** A growable list of numbers in a Float64Array: no JS array growth, and little for the GC to scan. */
export class NumList {
  /** Elements [0, length) are the list. */
  data = new Float64Array(1024);
  length = 0;

  push(value: number): void {
    if (this.length === this.data.length) this.data = grown(new Float64Array(this.length * 2), this.data);
    this.data[this.length++] = value;
  }
}

function grown<T extends Float64Array | Uint32Array | Uint16Array | Uint8Array>(bigger: T, old: T): T {
  bigger.set(old);
  return bigger;
}
