import * as fs from 'node:fs';
import * as path from 'node:path';
import { TableFile, TableFileOptions } from '../../store';
import { ReadCache } from '../../store/read-cache';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { rng } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();
const file = (): string => path.join(tmp.dir, 't.tkt');
const open = (opts: Partial<TableFileOptions> = {}): Promise<TableFile> => TableFile.open({ table: 't', path: file(), ...opts });
const b = (s: string): Buffer => Buffer.from(s);
// What one entry of `n` value bytes costs against the budget.
const cost = (n: number): number => {
  const c = new ReadCache(1 << 20);
  c.set(0, 'k0', Buffer.alloc(n));
  return c.stats().bytes;
};

describe('read cache', () => {
  test('read cache - holds verified values up to its budget, and forgets them all on clear', () => {
    const entry = cost(100);
    expect(entry).toBeGreaterThan(100);
    const c = new ReadCache(entry * 3, 1000);
    // Offered twice: once the cache is full, the first offer of a value is turned away (see the admission tests).
    for (let i = 0; i < 5; i++) for (let twice = 0; twice < 2; twice++) c.set(i * 1000, `k${i * 1000}`, Buffer.alloc(100, i));
    expect(c.stats()).toMatchObject({ entries: 3, bytes: entry * 3 });
    // First in, first out when nothing was read again: 0 and 1000 are gone.
    expect(c.get(0, 'k0')).toBeUndefined();
    expect(c.get(1000, 'k1000')).toBeUndefined();
    expect(c.get(4000, 'k4000')?.[0]).toBe(4);
    expect(c.stats()).toMatchObject({ hits: 1, misses: 2 });
    // The entry is that key's: a lookup of the offset for another key misses.
    expect(c.get(4000, 'other')).toBeUndefined();
    c.clear();
    expect(c.stats()).toMatchObject({ entries: 0, bytes: 0 });
    expect(c.get(4000, 'k4000')).toBeUndefined();
  });

  test('read cache - an entry read again survives a stream of one-off reads (SIEVE)', () => {
    const entry = cost(10);
    const c = new ReadCache(entry * 4, 1000);
    c.set(1, 'k1', Buffer.alloc(10));
    for (let i = 2; i <= 4; i++) c.set(i, `k${i}`, Buffer.alloc(10));
    for (let i = 5; i < 50; i++) {
      expect(c.get(1, 'k1')).toBeDefined();
      // Twice, to be admitted into the full cache.
      c.set(i, `k${i}`, Buffer.alloc(10));
      c.set(i, `k${i}`, Buffer.alloc(10));
      expect(c.stats().bytes).toBeLessThanOrEqual(entry * 4);
    }
    expect(c.get(1, 'k1')).toBeDefined();
    // The one-off entries went in order: only the newest three are left beside 1.
    expect([46, 47, 48, 49].map((o) => c.get(o, `k${o}`) !== undefined)).toEqual([false, true, true, true]);
  });

  test('read cache - while there is room every value goes in; once full, a value goes in only when offered a second time', () => {
    const entry = cost(10);
    const c = new ReadCache(entry * 3, 1000);
    for (let i = 1; i <= 3; i++) c.set(i, `k${i}`, Buffer.alloc(10, i));
    expect(c.stats().entries).toBe(3);
    c.set(4, 'k4', Buffer.alloc(10, 4));
    expect(c.get(4, 'k4')).toBeUndefined();
    expect([1, 2, 3].every((o) => c.get(o, `k${o}`) !== undefined)).toBe(true);
    c.set(4, 'k4', Buffer.alloc(10, 4));
    expect(c.get(4, 'k4')?.[0]).toBe(4);
    expect(c.stats()).toMatchObject({ entries: 3, bytes: entry * 3 });
    // Admitted, the offset is forgotten by the doorkeeper: once evicted, it needs two offers again.
    for (const o of [1, 2, 3, 4]) c.get(o, `k${o}`);
    for (let twice = 0; twice < 2; twice++) c.set(5, 'k5', Buffer.alloc(10, 5));
    expect(c.stats().entries).toBe(3);
  });

  test('read cache - a full cache keeps its entries through a scan of values read once, at offsets past 2^32 too', () => {
    const entry = cost(10);
    const c = new ReadCache(entry * 3, 1000);
    const base = 2 ** 40;
    for (let i = 0; i < 3; i++) c.set(base + i * 150, `k${i}`, Buffer.alloc(10, i));
    for (let i = 3; i < 2000; i++) c.set(base + i * 150, `k${i}`, Buffer.alloc(10, i));
    expect(c.stats().entries).toBe(3);
    for (let i = 0; i < 3; i++) expect(c.get(base + i * 150, `k${i}`)?.[0]).toBe(i);
    // The doorkeeper keeps whole offsets: one 2^32 past another that was offered once is not taken for it.
    c.set(base + 2 ** 32, 'far', Buffer.alloc(10));
    c.set(base + 2 * 2 ** 32, 'farther', Buffer.alloc(10));
    expect(c.get(base + 2 * 2 ** 32, 'farther')).toBeUndefined();
  });

  test('read cache - large values and a zero budget are never cached', () => {
    const c = new ReadCache(1 << 20, 64);
    c.set(1, 'k1', Buffer.alloc(65));
    c.set(2, 'k2', Buffer.alloc(64));
    expect(c.stats().entries).toBe(1);
    const off = new ReadCache(0);
    off.set(1, 'k', Buffer.alloc(0));
    off.set(2, 'k', Buffer.alloc(1));
    expect(off.stats()).toMatchObject({ entries: 0, bytes: 0 });
  });

  test('read cache - a table serves a value read before from memory, as a copy the caller may change', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    await t.put('k', b('value-1'));
    const first = t.get('k')!;
    const reads = ffs.calls.readSync;
    first.fill(0);
    expect(t.get('k')!.toString()).toBe('value-1');
    expect(ffs.calls.readSync).toBe(reads);
    expect(t.stats().readCache).toMatchObject({ entries: 1, hits: 1, misses: 1 });
    // peek hands out the cached bytes themselves, for a caller that only reads them.
    expect(t.peek('k')!.toString()).toBe('value-1');
    expect(t.peek('missing')).toBeUndefined();
    // A new value is at a new offset: read from the file, never the old entry.
    await t.put('k', b('value-2'));
    expect(t.get('k')!.toString()).toBe('value-2');
    expect(ffs.calls.readSync).toBe(reads + 1);
    await t.delete('k');
    expect(t.get('k')).toBeUndefined();
    await t.close();
  });

  test('read cache - after a rolled-back write hands its offset to another record, reads return the new record', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    await t.put('base', b('b'));
    // The record is written, its fdatasync held and then failed: while held
    // it is read from the file (and cached), then the file is cut back.
    const gate = ffs.hold('fdatasync');
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    const doomed = t.put('x', b('doomed'));
    await gate.reached;
    expect(t.get('x')!.toString()).toBe('doomed');
    expect(t.stats().readCache.entries).toBe(1);
    gate.release();
    await expect(doomed).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(t.get('x')).toBeUndefined();
    // Same key, same length, same offset as the rolled-back record.
    await t.put('x', b('second'));
    expect(t.get('x')!.toString()).toBe('second');
    await t.close();
    const r = await open();
    expect(r.get('x')!.toString()).toBe('second');
    await r.close();
  });

  test('read cache - compaction moves every record, and reads after it find the values at their new offsets', async () => {
    const t = await open();
    for (let i = 0; i < 50; i++) await t.put(`k${i}`, b(`v${i}-old`));
    for (let i = 0; i < 50; i++) await t.put(`k${i}`, b(`v${i}`));
    for (let i = 0; i < 50; i++) expect(t.get(`k${i}`)!.toString()).toBe(`v${i}`);
    expect(t.stats().readCache.entries).toBe(50);
    const r = await t.compact();
    expect(r.status).toBe('compacted');
    expect(t.stats().readCache.entries).toBe(0);
    for (let i = 0; i < 50; i++) expect(t.get(`k${i}`)!.toString()).toBe(`v${i}`);
    await t.close();
    expect(fs.readdirSync(tmp.dir)).toEqual(['t.tkt']);
  });

  test('read cache - readCacheBytes 0 reads every value from the file', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs, readCacheBytes: 0 });
    await t.put('k', b('v'));
    const reads = ffs.calls.readSync;
    t.get('k');
    t.get('k');
    expect(ffs.calls.readSync).toBe(reads + 2);
    expect(t.stats().readCache).toMatchObject({ entries: 0, hits: 0, misses: 2 });
    await t.close();
  });
});

describe('read cache against a model', () => {
  test('read cache - through random writes, rolled-back writes, evictions and compactions, every read matches the acknowledged state', async () => {
    const rand = rng(11);
    const ffs = new FaultyFs();
    // A budget of a few entries: evictions all the time.
    const t = await open({ fs: ffs, readCacheBytes: 2048 });
    const model = new Map<string, string>();
    const keys = Array.from({ length: 24 }, (_, i) => `key-${i}`);
    // Values of few lengths, so that a rolled-back record's offset is often reused by one of the same length.
    const value = (): string => `v${rand(10)}`.padEnd(4 + 4 * rand(3), 'x');
    const mismatches: string[] = [];
    const check = (when: string, expected: Map<string, string>): void => {
      for (let pass = 0; pass < 2; pass++) {
        for (const k of keys) {
          const got = t.get(k)?.toString();
          if (got !== expected.get(k)) mismatches.push(`${when}: ${k} = ${got}, expected ${expected.get(k)}`);
        }
      }
    };
    // A delete of a key that is absent writes nothing and may answer false whatever fails later.
    const wrote = (s: PromiseSettledResult<unknown>): boolean => s.status === 'fulfilled' && s.value !== false;
    let rolledBack = 0;
    for (let round = 0; round < 120; round++) {
      const ops: [string, string | undefined][] = Array.from({ length: 1 + rand(4) }, () => [keys[rand(keys.length)], rand(4) === 0 ? undefined : value()]);
      const after = new Map(model);
      for (const [k, v] of ops) {
        if (v === undefined) after.delete(k);
        else after.set(k, v);
      }
      const fault = rand(10);
      const issue = () => ops.map(([k, v]) => (v === undefined ? t.delete(k) : t.put(k, b(v))));
      if (fault < 2) {
        // Written, then its fdatasync fails: read (from the file, into the cache) while the sync is held.
        const gate = ffs.hold('fdatasync');
        ffs.failOn({ op: 'fdatasync', nth: 1 });
        const pending = issue();
        await gate.reached;
        check(`round ${round}, before the failed sync`, after);
        gate.release();
        const settled = await Promise.allSettled(pending);
        if (settled.some(wrote)) mismatches.push(`round ${round}: a write survived its failed fdatasync`);
        rolledBack++;
      } else if (fault < 3) {
        ffs.failOn({ op: 'write', nth: 1 });
        const settled = await Promise.allSettled(issue());
        if (settled.some(wrote)) mismatches.push(`round ${round}: a write survived its failed write`);
        rolledBack++;
      } else {
        const settled = await Promise.allSettled(issue());
        if (settled.some((s) => s.status === 'rejected')) mismatches.push(`round ${round}: a write failed without a fault`);
        for (const [k, v] of after) model.set(k, v);
        for (const k of [...model.keys()]) if (!after.has(k)) model.delete(k);
      }
      check(`round ${round}`, model);
      if (round % 20 === 6) {
        await t.compact();
        check(`round ${round}, after compaction`, model);
      }
    }
    expect(mismatches).toEqual([]);
    expect(rolledBack).toBeGreaterThan(10);
    expect(t.stats().readCache.hits).toBeGreaterThan(0);
    await t.close();
    const r = await open({ readCacheBytes: 0 });
    expect(Object.fromEntries(keys.filter((k) => r.has(k)).map((k) => [k, r.get(k)!.toString()]))).toEqual(Object.fromEntries(model));
    await r.close();
  });
});
