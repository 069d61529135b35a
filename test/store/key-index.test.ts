import { INLINE_KEY_BYTES, KeyIndex, NOT_ASCII } from '../../store/key-index';
import { SortedKeys } from '../../store/key-order';
import { ByteKeySet } from '../../store/byte-key-set';
import { rng } from '../helpers/rng';

describe('table file index', () => {
  test('table file - the key index finds keys by their UTF-8 bytes as by string, and sends non-ASCII keys to the string lookup', () => {
    const index = new KeyIndex(5000);
    const rand = rng(7);
    const keys: string[] = [];
    for (let i = 0; i < 3000; i++) keys.push(`k${rand(1e6)}:${'x'.repeat(rand(40))}`);
    keys.push('ключ', 'ab\u00e9', '日本', '\u{1f600}');
    keys.forEach((k, i) => index.set(k, i * 100, 20 + i));
    const mismatches: string[] = [];
    for (const key of [...keys, 'absent', 'k', 'k1:', '\u00e9t\u00e9']) {
      const bytes = Buffer.from(`__${key}__`);
      const got = index.slotOfAscii(bytes, 2, bytes.length - 2);
      const want = /^[\x00-\x7f]*$/.test(key) ? index.slotOf(key) : NOT_ASCII;
      if (got !== want) mismatches.push(`${key}: ${got} != ${want}`);
      if (got >= 0 && (index.keyOf(got) !== key || index.offsetOf(got) !== keys.indexOf(key) * 100)) mismatches.push(`${key}: wrong slot`);
    }
    expect(mismatches).toEqual([]);
    expect(index.slotOfAscii(Buffer.from('absent'), 0, 6)).toBe(-1);
  });

  test('table file - the key index matches a Map through inserts, overwrites, removals and growth', () => {
    const index = new KeyIndex();
    const model = new Map<string, [number, number]>();
    const rand = rng(1);
    // Plain comparisons, one expect per check: a jest matcher per key is too slow here.
    const mismatches: string[] = [];
    for (let i = 0; i < 60000; i++) {
      // A small key space early (many removals that shift probe runs), a large one later (growth).
      const key = `key:${rand(i < 30000 ? 500 : 20000)}`;
      if (rand(3) === 0) {
        if (index.remove(key) !== model.delete(key)) mismatches.push(`remove ${key} at ${i}`);
      } else {
        const loc: [number, number] = [rand(1e9) * 1024, rand(5000) + 21];
        if (index.set(key, loc[0], loc[1]) === model.has(key)) mismatches.push(`set ${key} at ${i}`);
        model.set(key, loc);
      }
      if (i % 5000 === 0 || i === 59999) {
        let live = 0;
        for (const [k, [offset, length]] of model) {
          const slot = index.slotOf(k);
          if (slot < 0 || index.offsetOf(slot) !== offset || index.lengthOf(slot) !== length) mismatches.push(`lookup ${k} at ${i}`);
          live += length;
        }
        expect({ i, mismatches, size: index.size, live: index.liveBytes }).toEqual({ i, mismatches: [], size: model.size, live });
        expect(index.keys().sort().join()).toBe([...model.keys()].sort().join());
        expect(index.has('key:absent')).toBe(false);
      }
    }
    index.clear();
    expect(index.size).toBe(0);
    expect(index.slotOf('key:1')).toBe(-1);
  });

  test('table file - the key index stays exact past its first key chunk (65,536 slots), through removals and slot reuse', () => {
    const index = new KeyIndex();
    const model = new Map<string, number>();
    const rand = rng(7);
    const mismatches: string[] = [];
    const check = (at: string): void => {
      for (const [k, offset] of model) {
        const slot = index.slotOf(k);
        if (slot < 0 || index.offsetOf(slot) !== offset || index.keyOf(slot) !== k) mismatches.push(`lookup ${k} ${at}`);
      }
      expect({ at, mismatches, size: index.size }).toEqual({ at, mismatches: [], size: model.size });
      const keys = index.keys();
      expect(keys.length).toBe(model.size);
      expect(new Set(keys)).toEqual(new Set(model.keys()));
    };
    // Three chunks' worth of keys, then churn that frees slots in every chunk and reuses them.
    for (let i = 0; i < 150_000; i++) {
      index.set(`k${i}`, i * 64, 40);
      model.set(`k${i}`, i * 64);
    }
    check('after the inserts');
    for (let i = 0; i < 200_000; i++) {
      const key = `k${rand(180_000)}`;
      if (rand(2) === 0) {
        if (index.remove(key) !== model.delete(key)) mismatches.push(`remove ${key}`);
      } else {
        index.set(key, i * 64 + 1, 40);
        model.set(key, i * 64 + 1);
      }
    }
    check('after the churn');
    expect(index.slotLimit).toBeGreaterThan(2 * 65_536);
  });

  test('table file - by bytes or by string, keys short and long, ASCII or not, land in the same slots and come back whole', () => {
    const rand = rng(3);
    // No size given: the index grows past several resizes and its first key chunk.
    const byBytes = new KeyIndex();
    const byString = new KeyIndex();
    const model = new Map<string, [number, number]>();
    const names = (i: number): string => {
      const n = i % 7;
      // Around the inline limit (32 ASCII bytes), longer, and non-ASCII of every length.
      if (n === 0) return `k${i}`.padEnd(INLINE_KEY_BYTES, 'x');
      if (n === 1) return `k${i}`.padEnd(INLINE_KEY_BYTES + 1, 'y');
      if (n === 2) return `k${i}:${'z'.repeat(i % 200)}`;
      if (n === 3) return `ключ-${i}`;
      if (n === 4) return `\u{1f600}${i}`;
      return `key:${i}`;
    };
    const mismatches: string[] = [];
    // A small key space first (removals that shift probe runs, slot reuse), then enough keys to pass the first chunk.
    for (let op = 0; op < 160000; op++) {
      const key = names(op < 40000 ? rand(3000) : op < 140000 ? 3000 + op - 40000 : rand(103000));
      const bytes = Buffer.from(`<${key}>`);
      const ascii = /^[\x00-\x7f]*$/.test(key);
      if (rand(4) === 0) {
        const viaBytes = byBytes.removeAscii(bytes, 1, bytes.length - 1);
        const removed = viaBytes === NOT_ASCII ? byBytes.remove(key) : viaBytes === 1;
        if ((viaBytes === NOT_ASCII) === ascii) mismatches.push(`removeAscii ${key}: ${viaBytes}`);
        if (removed !== model.has(key) || byString.remove(key) !== model.delete(key)) mismatches.push(`remove ${key}`);
      } else {
        const at: [number, number] = [rand(1e9) * 1024, rand(5000) + 21];
        const viaBytes = byBytes.setAscii(bytes, 1, bytes.length - 1, at[0], at[1]);
        const added = viaBytes === NOT_ASCII ? byBytes.set(key, at[0], at[1]) : viaBytes === 1;
        if ((viaBytes === NOT_ASCII) === ascii) mismatches.push(`setAscii ${key}: ${viaBytes}`);
        if (added === model.has(key) || byString.set(key, at[0], at[1]) === model.has(key)) mismatches.push(`set ${key}`);
        model.set(key, at);
      }
    }
    for (const index of [byBytes, byString]) {
      let live = 0;
      for (const [key, [offset, length]] of model) {
        const slot = index.slotOf(key);
        if (slot < 0 || index.offsetOf(slot) !== offset || index.lengthOf(slot) !== length || index.keyOf(slot) !== key) mismatches.push(`lookup ${key}`);
        live += length;
      }
      expect({ size: index.size, live: index.liveBytes }).toEqual({ size: model.size, live });
      expect(index.keys().sort()).toEqual([...model.keys()].sort());
      let used = 0;
      for (let slot = 0; slot < index.slotLimit; slot++) if (index.slotUsed(slot)) used++;
      expect(used).toBe(model.size);
    }
    expect(mismatches).toEqual([]);
    expect(byBytes.slotLimit).toBeGreaterThan(65_536);
  });

  test('table file - sorted keys match a sorted array through inserts and removals across leaf splits', () => {
    const rand = rng(2);
    const initial = Array.from({ length: 3000 }, (_, i) => `k${(i * 7) % 3001}`).sort();
    const set = SortedKeys.fromSorted(initial);
    const model = new Set(initial);
    const mismatches: string[] = [];
    for (let i = 0; i < 20000; i++) {
      const key = `k${rand(6000)}`;
      if (rand(4) === 0) {
        if (set.remove(key) !== model.delete(key)) mismatches.push(`remove ${key} at ${i}`);
      } else {
        if (set.insert(key) === model.has(key)) mismatches.push(`insert ${key} at ${i}`);
        model.add(key);
      }
    }
    expect(mismatches).toEqual([]);
    const sorted = [...model].sort();
    expect(set.size).toBe(sorted.length);
    expect(set.toArray().join()).toBe(sorted.join());
    // seek: first key >= (or >) a bound, then walk.
    for (const bound of ['', 'k', 'k3', 'k3000', 'k5999', 'l', sorted[100]]) {
      for (const exclusive of [false, true]) {
        const pos = set.seek(bound, exclusive);
        const expectedIndex = sorted.findIndex((k) => (exclusive ? k > bound : k >= bound));
        expect(set.keyAt(pos)).toBe(expectedIndex < 0 ? undefined : sorted[expectedIndex]);
        if (expectedIndex >= 0 && expectedIndex + 1 < sorted.length) expect(set.keyAt(set.advance(pos))).toBe(sorted[expectedIndex + 1]);
      }
    }
    // Emptying the set removes every leaf.
    for (const k of sorted) set.remove(k);
    expect(set.size).toBe(0);
    expect(set.keyAt(set.seek('', false))).toBeUndefined();
    expect(set.insert('again')).toBe(true);
    expect(set.toArray()).toEqual(['again']);
  });
});

describe('table file byte key set', () => {
  test('table file - the byte key set matches a Set of strings through adds, deletes and growth', () => {
    const set = new ByteKeySet();
    const model = new Set<string>();
    const rand = rng(3);
    const mismatches: string[] = [];
    for (let i = 0; i < 60000; i++) {
      const key = `${rand(3) === 0 ? 'ключ' : 'k'}${rand(i < 30000 ? 400 : 20000)}${'x'.repeat(rand(30))}`;
      const bytes = Buffer.from(`..${key}.`);
      if (rand(3) === 0) {
        if (set.delete(bytes, 2, bytes.length - 1) !== model.delete(key)) mismatches.push(`delete ${key} at ${i}`);
      } else {
        if (set.add(bytes, 2, bytes.length - 1) === model.has(key)) mismatches.push(`add ${key} at ${i}`);
        model.add(key);
      }
      if (set.size !== model.size) mismatches.push(`size at ${i}`);
      if (mismatches.length > 5) break;
    }
    expect(mismatches).toEqual([]);
    expect(model.size).toBeGreaterThan(1000);
  });
});
