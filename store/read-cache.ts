/**
 * A bounded cache of verified values, keyed by the file offset of their
 * record, in front of the read path of one table file.
 *
 * Why by offset: a record never changes once written, and the index names
 * the offset of a key's current record, so a put or delete makes the old
 * entry unreachable without any bookkeeping (it ages out). Offsets are only
 * reused when the file changes under them, and the owner of the cache says
 * so: `clear()` when a failed write is rolled back (the file is cut and the
 * offsets are handed out again) and when compaction switches to a new file.
 * Each entry also keeps its key, and a lookup for another key misses: a
 * missed clear could then at worst serve a key's own older value, never
 * another key's.
 *
 * Why at all: a hit costs a map lookup and a copy; a miss costs a pread
 * system call and a checksum of the record, several times more. Values are
 * verified (checksum and key) before they enter, so a hit is as trustworthy
 * as a read; damage on disk is still found by reads that miss and by scrub.
 *
 * Eviction is SIEVE (Zhang et al., NSDI '24): FIFO order with one "visited"
 * bit per entry, set on a hit; the hand walks from the oldest entry towards
 * the newest, clearing bits, and evicts the first unvisited entry. A hit
 * writes one bit and moves nothing, and a burst of one-off reads (a select
 * across the table) does not flush the keys that are read again and again.
 *
 * Admission: while there is room, every value read goes in. Once the cache
 * is full, a value goes in (evicting another) only when its offset was
 * offered once before and turned away, as remembered in a small
 * direct-mapped table of offsets (a "doorkeeper", as in TinyLFU: Einziger
 * et al., 2017). A value read only once never displaces one that is read
 * again, and reads that cycle over more keys than fit, where nearly every
 * read misses, no longer churn the cache: each admission made a new entry
 * that lived until it was evicted, long enough for the garbage collector to
 * move it to the old generation and collect it there. Cycling over 100k
 * keys with 25.6k fitting: 122-191k -> 229-247k gets/s, and 22% -> 6% of
 * young objects surviving a scavenge.
 */

// What an entry costs beyond its value bytes: the entry object, its map slot
// and the Buffer object (heap and array-buffer growth after a full GC with
// 100k entries of 128-byte values: 327 B each, so ~200 B beside the value).
const ENTRY_OVERHEAD_BYTES = 200;
// Doorkeeper slots: about twice the entries that fit at ~64-byte values, a power of two within these bounds.
const MIN_DOOR_SLOTS = 256;
const MAX_DOOR_SLOTS = 1 << 20;
const EMPTY_SLOT = -1;

interface Entry {
  key: string;
  value: Buffer;
  visited: boolean;
  older: Entry | undefined;
  newer: Entry | undefined;
  offset: number;
}

/** Counters for stats and metrics. */
export interface ReadCacheStats {
  /** Bytes held, counted as value bytes plus a fixed overhead per entry. */
  bytes: number;
  entries: number;
  hits: number;
  misses: number;
}

export class ReadCache {
  private readonly map = new Map<number, Entry>();
  private newest: Entry | undefined;
  private oldest: Entry | undefined;
  private hand: Entry | undefined;
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  // Offsets turned away once while the cache was full (allocated on first need).
  private door: Float64Array | undefined;
  private doorShift = 32;

  /**
   * @param capacityBytes value bytes to hold at most; 0 turns the cache off.
   * @param maxEntryBytes values larger than this are never cached (a large
   *   value costs little more to read than to copy, and would push out many small ones).
   */
  constructor(
    readonly capacityBytes: number,
    readonly maxEntryBytes: number = Math.min(64 * 1024, capacityBytes >>> 4),
  ) {}

  /** The cached value of `key`'s record at `offset` (the cache's own buffer: copy it before handing it out). */
  get(offset: number, key: string): Buffer | undefined {
    const e = this.map.get(offset);
    if (e === undefined || e.key !== key) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    e.visited = true;
    return e.value;
  }

  /** Remembers the verified value of `key`'s record at `offset`; the cache keeps `value` itself, so pass a private copy. */
  set(offset: number, key: string, value: Buffer): void {
    const cost = value.length + ENTRY_OVERHEAD_BYTES;
    if (value.length > this.maxEntryBytes || cost > this.capacityBytes || this.map.has(offset)) return;
    if (this.bytes + cost > this.capacityBytes && !this.admit(offset)) return;
    while (this.bytes + cost > this.capacityBytes && this.oldest !== undefined) this.evictOne();
    const e: Entry = { key, value, visited: false, older: this.newest, newer: undefined, offset };
    if (this.newest !== undefined) this.newest.newer = e;
    this.newest = e;
    if (this.oldest === undefined) this.oldest = e;
    this.map.set(offset, e);
    this.bytes += cost;
  }

  /** Forgets everything: the offsets of the file no longer name the same records. */
  clear(): void {
    this.map.clear();
    this.newest = this.oldest = this.hand = undefined;
    this.bytes = 0;
  }

  stats(): ReadCacheStats {
    return { bytes: this.bytes, entries: this.map.size, hits: this.hits, misses: this.misses };
  }

  /** True when `offset` was turned away before (and its slot not taken since); else remembers it and says no. */
  private admit(offset: number): boolean {
    let door = this.door;
    if (door === undefined) {
      let bits = Math.log2(MIN_DOOR_SLOTS);
      while (1 << bits < MAX_DOOR_SLOTS && 1 << bits < (2 * this.capacityBytes) / (ENTRY_OVERHEAD_BYTES + 64)) bits++;
      door = this.door = new Float64Array(1 << bits).fill(EMPTY_SLOT);
      this.doorShift = 32 - bits;
    }
    // Fibonacci hashing (the top bits of a multiplication by 2^32 / phi), which
    // spreads the evenly spaced offsets of equal-sized records; offsets pass
    // 2^32, so the high part is folded in first.
    const slot = Math.imul((offset >>> 0) ^ Math.floor(offset / 0x100000000), 0x9e3779b9) >>> this.doorShift;
    if (door[slot] === offset) {
      door[slot] = EMPTY_SLOT;
      return true;
    }
    door[slot] = offset;
    return false;
  }

  private evictOne(): void {
    let e = this.hand ?? this.oldest!;
    while (e.visited) {
      e.visited = false;
      e = e.newer ?? this.oldest!;
    }
    this.hand = e.newer;
    this.unlink(e);
    this.map.delete(e.offset);
    this.bytes -= e.value.length + ENTRY_OVERHEAD_BYTES;
  }

  private unlink(e: Entry): void {
    if (e.older !== undefined) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer !== undefined) e.newer.older = e.older;
    else this.newest = e.older;
  }
}
