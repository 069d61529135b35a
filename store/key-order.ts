/**
 * The keys in JS string order (UTF-16 code units, the order of `<`), for
 * ordered `select` without sorting the whole table on every call.
 *
 * A two-level sorted list (as Python's sortedcontainers): an array of sorted
 * leaves of at most LEAF_MAX keys, each leaf's keys all below the next leaf's.
 * Costs, n keys: insert and remove O(log n + LEAF_MAX) (a binary search, then
 * one short splice); finding a lower bound O(log n); walking k keys O(k).
 * Memory: one pointer per key plus leaf slack (leaves are half to fully full).
 */

const LEAF_MAX = 1024;
const LEAF_BULK = 512;

/** Position of a key in a SortedKeys: leaf number and index in the leaf. */
export interface KeyPosition {
  leaf: number;
  index: number;
}

/** An ordered set of strings. */
export class SortedKeys {
  private leaves: string[][] = [];
  private count = 0;

  /** Builds the set from keys already sorted ascending and without duplicates (O(n)). */
  static fromSorted(keys: readonly string[]): SortedKeys {
    const set = new SortedKeys();
    for (let i = 0; i < keys.length; i += LEAF_BULK) set.leaves.push(keys.slice(i, i + LEAF_BULK));
    set.count = keys.length;
    return set;
  }

  /** Builds the set from keys in any order, without duplicates (one O(n log n) sort, in place: the array is reordered). */
  static fromUnsorted(keys: string[]): SortedKeys {
    // The default sort compares strings by UTF-16 code units, like `<`, and is
    // about twice as fast as a comparator function in V8.
    keys.sort();
    return SortedKeys.fromSorted(keys);
  }

  /** Number of keys. */
  get size(): number {
    return this.count;
  }

  /** Adds `key`; returns false when it was already present. */
  insert(key: string): boolean {
    if (this.leaves.length === 0) {
      this.leaves.push([key]);
      this.count = 1;
      return true;
    }
    const li = this.leafFor(key);
    const leaf = this.leaves[li];
    const i = lowerBound(leaf, key);
    if (i < leaf.length && leaf[i] === key) return false;
    leaf.splice(i, 0, key);
    this.count++;
    if (leaf.length > LEAF_MAX) this.leaves.splice(li + 1, 0, leaf.splice(leaf.length >> 1));
    return true;
  }

  /** Removes `key`; returns false when it was absent. */
  remove(key: string): boolean {
    if (this.leaves.length === 0) return false;
    const li = this.leafFor(key);
    const leaf = this.leaves[li];
    const i = lowerBound(leaf, key);
    if (i >= leaf.length || leaf[i] !== key) return false;
    leaf.splice(i, 1);
    this.count--;
    // Invariant: no empty leaves, so every leaf has a first key to search by.
    if (leaf.length === 0) this.leaves.splice(li, 1);
    return true;
  }

  /** Position of the first key >= `key` (or > `key` when `exclusive`). */
  seek(key: string, exclusive: boolean): KeyPosition {
    if (this.leaves.length === 0) return { leaf: 0, index: 0 };
    const li = this.leafFor(key);
    const leaf = this.leaves[li];
    let i = lowerBound(leaf, key);
    if (exclusive && i < leaf.length && leaf[i] === key) i++;
    return this.normalise({ leaf: li, index: i });
  }

  /** Position of the smallest key. */
  first(): KeyPosition {
    return { leaf: 0, index: 0 };
  }

  /** The key at `pos`, or undefined past the end. */
  keyAt(pos: KeyPosition): string | undefined {
    const leaf = this.leaves[pos.leaf];
    return leaf === undefined ? undefined : leaf[pos.index];
  }

  /** Moves `pos` to the next key (in place) and returns it. */
  advance(pos: KeyPosition): KeyPosition {
    pos.index++;
    return this.normalise(pos);
  }

  /** Every key in order (for tests and offline tools; O(n)). */
  toArray(): string[] {
    return ([] as string[]).concat(...this.leaves);
  }

  private normalise(pos: KeyPosition): KeyPosition {
    const leaf = this.leaves[pos.leaf];
    if (leaf !== undefined && pos.index >= leaf.length) {
      pos.leaf++;
      pos.index = 0;
    }
    return pos;
  }

  /** The last leaf whose first key is <= key (leaf 0 when key is below them all). */
  private leafFor(key: string): number {
    let lo = 0;
    let hi = this.leaves.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.leaves[mid][0] <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** Index of the first element >= key in a sorted array. */
function lowerBound(arr: readonly string[], key: string): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
