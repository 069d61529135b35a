/**
 * The buses' bookkeeping of what is in flight, without JavaScript's Map and
 * Set on the request path.
 *
 * Why not a Map: V8 replaces a Map's backing table when it fills with
 * deleted entries, and the replaced table keeps its entries and a link to
 * its successor (for iterators that were walking it). Requests come and go
 * all the time, so the pending map's table was replaced every few dozen
 * requests. Once one replaced table had lived long enough to reach the old
 * generation (a stretch of slow replies is enough), young-generation
 * collections saw everything after it through that link: every later table,
 * and every request and reply it held, survived and was promoted. The state
 * held until the process ended. Measured on the embedded bus after 800k
 * puts: 20% of young objects survived each scavenge instead of 0.8%, the
 * pauses took ~8 ms instead of ~0.6 ms, a major collection ran every ~100k
 * requests, and gets fell from ~330k/s to ~260k/s. A plain array neither
 * links to its successor nor is replaced while its size stays the same.
 */

/**
 * Values by request number: positive integers handed out in increasing
 * order, so the live ones are nearly consecutive and their low bits spread
 * them over the slots. Open addressing with linear probing and
 * backward-shift deletion (no tombstones), so a steady number of entries
 * never allocates. The arrays grow when half full and shrink when under an
 * eighth full.
 */
export class SeqTable<T> {
  private keys = new Float64Array(MIN_CAPACITY);
  private values: (T | undefined)[] = new Array<T | undefined>(MIN_CAPACITY).fill(undefined);
  private mask = MIN_CAPACITY - 1;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(seq: number): T | undefined {
    for (let i = seq & this.mask; ; i = (i + 1) & this.mask) {
      const k = this.keys[i];
      if (k === seq) return this.values[i];
      if (k === 0) return undefined;
    }
  }

  /** Adds or replaces the value of `seq` (a positive integer). */
  set(seq: number, value: T): void {
    if (!(Number.isSafeInteger(seq) && seq > 0)) throw new RangeError(`request number must be a positive integer, got ${seq}`);
    let i = seq & this.mask;
    for (; this.keys[i] !== 0; i = (i + 1) & this.mask) {
      if (this.keys[i] === seq) {
        this.values[i] = value;
        return;
      }
    }
    this.keys[i] = seq;
    this.values[i] = value;
    this.count++;
    if (this.count * 2 > this.keys.length) this.resize(this.keys.length * 2);
  }

  /** Removes `seq`; false when it was not there. */
  delete(seq: number): boolean {
    const mask = this.mask;
    let i = seq & mask;
    for (; ; i = (i + 1) & mask) {
      const k = this.keys[i];
      if (k === seq) break;
      if (k === 0) return false;
    }
    // Backward shift: move later members of the probe run into the hole, so no lookup ever stops short.
    let hole = i;
    for (let j = (i + 1) & mask; this.keys[j] !== 0; j = (j + 1) & mask) {
      const home = this.keys[j] & mask;
      // The entry at j may move to the hole when its home slot is not in (hole, j], cyclically.
      if (hole <= j ? home <= hole || home > j : home <= hole && home > j) {
        this.keys[hole] = this.keys[j];
        this.values[hole] = this.values[j];
        hole = j;
      }
    }
    this.keys[hole] = 0;
    this.values[hole] = undefined;
    this.count--;
    if (this.keys.length > MIN_CAPACITY && this.count * 8 < this.keys.length) this.resize(this.keys.length / 2);
    return true;
  }

  /** The values, in no particular order (a new array: the table may change while it is walked). */
  valuesArray(): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.keys.length; i++) if (this.keys[i] !== 0) out.push(this.values[i] as T);
    return out;
  }

  private resize(capacity: number): void {
    const keys = this.keys;
    const values = this.values;
    this.keys = new Float64Array(capacity);
    this.values = new Array<T | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.count = 0;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== 0) this.set(keys[i], values[i] as T);
  }
}

/**
 * The handlers whose promises have not settled yet, as a count: what drain
 * waits for. (A Set of the promises had the same trouble as the Map above.)
 */
export class InflightHandlers {
  private count = 0;
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.count;
  }

  /** Counts `p` until it settles; a rejection goes to `onRejected`. */
  track(p: PromiseLike<unknown>, onRejected: (err: unknown) => void): void {
    this.count++;
    Promise.resolve(p).then(
      () => this.settled(),
      (err: unknown) => {
        this.settled();
        onRejected(err);
      },
    );
  }

  /** Resolves once no tracked handler is unsettled (at once when none is). */
  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private settled(): void {
    this.count--;
    if (this.count > 0 || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

const MIN_CAPACITY = 64;
