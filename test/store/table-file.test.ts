import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BadRequestError,
  FILE_HEADER_BYTES,
  KeyInvalidError,
  recordBytes,
  TableClosedError,
  TableFile,
  TableFileOptions,
  ValueTooLargeError,
} from '../../store';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();
const b = (s: string): Buffer => Buffer.from(s);
const file = (): string => path.join(tmp.dir, 't.tkt');
const open = (opts: Partial<TableFileOptions> = {}): Promise<TableFile> => TableFile.open({ table: 't', path: file(), ...opts });
const str = (v: Buffer | undefined): string | undefined => v?.toString();

/** Every live key and value, paging through select with `limit`. */
function selectAll(t: TableFile, prefix: string | undefined, limit: number): [string, string][] {
  const out: [string, string][] = [];
  let after: string | undefined;
  for (;;) {
    const page = t.select({ prefix, after, limit });
    for (const item of page.items) out.push([item.key, item.value.toString()]);
    if (page.next === undefined) return out;
    expect(page.next).toBe(page.items[page.items.length - 1].key);
    after = page.next;
  }
}

describe('table file', () => {
  test('table file - a new file has a header and no records', async () => {
    const t = await open({ generation: 3 });
    expect(t.stats()).toEqual({
      records: 0, fileRecords: 0, fileBytes: 16, liveBytes: 0, deadBytes: 0, fragmentation: 0, generation: 3, seq: 0,
      readCache: { bytes: 0, entries: 0, hits: 0, misses: 0 },
    });
    expect(t.openReport).toMatchObject({ records: 0, tornTailBytes: 0 });
    await t.close();
    expect(fs.statSync(file()).size).toBe(FILE_HEADER_BYTES);
    expect(fs.readdirSync(tmp.dir)).toEqual(['t.tkt']);
  });

  test('table file - every operation round-trips across close and reopen, with the sequence', async () => {
    const t = await open();
    await t.put('user:1', b('alice'));
    await t.put('user:2', b('bob'));
    await t.put('user:1', b('alice-2'));
    await t.put('order:1', b(''));
    expect(await t.delete('user:2')).toBe(true);
    expect(await t.delete('user:2')).toBe(false);
    expect(await t.delete('never')).toBe(false);
    const { readCache: _cache, ...before } = t.stats();
    expect(before.seq).toBe(5);
    await t.close();

    const r = await open();
    expect(r.openReport.records).toBe(5);
    expect(str(r.get('user:1'))).toBe('alice-2');
    expect(r.get('user:2')).toBeUndefined();
    expect(r.has('user:2')).toBe(false);
    expect(r.get('order:1')).toEqual(Buffer.alloc(0));
    expect(r.has('order:1')).toBe(true);
    expect(r.stats()).toMatchObject(before);
    expect(selectAll(r, undefined, 100)).toEqual([['order:1', ''], ['user:1', 'alice-2']]);
    await r.put('user:3', b('carol'));
    expect(r.stats().seq).toBe(6);
    const seqs: number[] = [];
    for await (const item of r.scan()) if (item.type === 'record') seqs.push(item.seq);
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6]);
    await r.close();
  });

  test('table file - a write is visible before it is durable, also while its batch is being written', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    await t.put('k', b('old'));
    const p1 = t.put('k', b('new'));
    // Still in the pending batch: nothing has been written yet.
    expect(str(t.get('k'))).toBe('new');
    expect(t.select({}).items.map((i) => i.value.toString())).toEqual(['new']);
    await p1;
    const gate = ffs.hold('write');
    const p2 = t.put('k', b('newer'));
    const p3 = t.delete('gone');
    await gate.reached;
    // The batch is in flight: served from memory until the write completes.
    expect(str(t.get('k'))).toBe('newer');
    const p4 = t.put('j', b('queued'));
    expect(str(t.get('j'))).toBe('queued');
    gate.release();
    await Promise.all([p2, p3, p4]);
    expect(str(t.get('k'))).toBe('newer');
    expect(t.durableLength).toBe(fs.statSync(file()).size);
    await t.close();
  });

  test('table file - stats are exact after overwrites and deletes', async () => {
    const t = await open();
    const size = (key: string, value: number): number => recordBytes(Buffer.byteLength(key), value);
    await t.put('a', Buffer.alloc(10));
    await t.put('bb', Buffer.alloc(20));
    await t.put('a', Buffer.alloc(30));
    await t.delete('bb');
    await t.put('ccc', Buffer.alloc(5));
    await t.put('é', Buffer.alloc(7));
    const fileBytes = 16 + size('a', 10) + size('bb', 20) + size('a', 30) + size('bb', 0) + size('ccc', 5) + size('é', 7);
    expect(fileBytes).toBe(16 + 31 + 42 + 51 + 22 + 28 + 29);
    const liveBytes = 51 + 28 + 29;
    const expected = {
      records: 3,
      fileRecords: 6,
      fileBytes,
      liveBytes,
      deadBytes: 31 + 42 + 22,
      fragmentation: (31 + 42 + 22) / fileBytes,
      generation: 1,
      seq: 6,
    };
    expect(t.stats()).toMatchObject(expected);
    expect(expected.deadBytes).toBe(fileBytes - 16 - liveBytes);
    await t.close();
    expect(fs.statSync(file()).size).toBe(fileBytes);
    const r = await open();
    expect(r.stats()).toMatchObject(expected);
    await r.delete('a');
    await r.delete('ccc');
    await r.delete('é');
    const emptied = fileBytes + size('a', 0) + size('ccc', 0) + size('é', 0);
    expect(r.stats()).toMatchObject({ records: 0, liveBytes: 0, fileBytes: emptied, deadBytes: emptied - 16 });
    await r.close();
  });

  test('table file - a select page is bounded in bytes: it stops before the value that would pass maxBytes (4 MiB by default), reading nothing past it', async () => {
    const t = await open({ readCacheBytes: 0 });
    const mib = 1024 * 1024;
    // Ten values of 1 MiB: a limit of 1000 used to read, copy and return all of them.
    for (let i = 0; i < 10; i++) await t.put(`k${i}`, Buffer.alloc(mib - 8, 0x61));
    const page = t.select({ limit: 1000 });
    expect(page.items.map((i) => i.key)).toEqual(['k0', 'k1', 'k2', 'k3']);
    expect(page.next).toBe('k3');
    expect(page.items.reduce((n, i) => n + i.key.length + i.value.length, 0)).toBeLessThanOrEqual(4 * mib);
    // Only the values returned were read from the file.
    expect(t.stats().readCache.misses).toBe(4);
    // A smaller bound; the first item always goes in, however large.
    expect(t.select({ limit: 1000, maxBytes: 10 }).items.map((i) => i.key)).toEqual(['k0']);
    expect(t.select({ limit: 1000, maxBytes: 2 * mib }).items.map((i) => i.key)).toEqual(['k0', 'k1']);
    // Paging by `next` still reaches every key.
    const seen: string[] = [];
    for (let after: string | undefined; ; ) {
      const p = t.select({ after, limit: 1000, maxBytes: 3 * mib });
      seen.push(...p.items.map((i) => i.key));
      if (p.next === undefined) break;
      after = p.next;
    }
    expect(seen).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}`));
    expect(() => t.select({ maxBytes: 0 })).toThrow(BadRequestError);
    await t.close();
  });

  test('table file - select pages in key order with prefix, after and limit', async () => {
    const t = await open();
    const keys: string[] = [];
    for (let i = 0; i < 37; i++) keys.push(`a:${String(i).padStart(2, '0')}`);
    keys.push('a', 'a;', 'b:1', '', 'Z', 'a:\u00e9', 'a:\uD83D\uDE00');
    const writes = keys.filter((k) => k !== '').map((k) => t.put(k, b(`v-${k}`)));
    await Promise.all(writes);
    const live = keys.filter((k) => k !== '').sort();

    expect(selectAll(t, undefined, 7).map(([k]) => k)).toEqual(live);
    expect(selectAll(t, 'a:', 10).map(([k]) => k)).toEqual(live.filter((k) => k.startsWith('a:')));
    expect(selectAll(t, 'a:1', 3)).toEqual(live.filter((k) => k.startsWith('a:1')).map((k) => [k, `v-${k}`]));
    expect(t.select({ prefix: 'nope' })).toEqual({ items: [] });

    const page = t.select({ prefix: 'a:', limit: 5 });
    expect(page.items.map((i) => i.key)).toEqual(['a:00', 'a:01', 'a:02', 'a:03', 'a:04']);
    expect(page.next).toBe('a:04');
    // `after` is exclusive, and works whether or not it starts with the prefix.
    expect(t.select({ prefix: 'a:', after: 'a:04', limit: 2 }).items.map((i) => i.key)).toEqual(['a:05', 'a:06']);
    expect(t.select({ prefix: 'a:', after: 'a', limit: 1 }).items.map((i) => i.key)).toEqual(['a:00']);
    expect(t.select({ prefix: 'a:', after: 'a:\uFFFF' })).toEqual({ items: [] });
    // Exactly `limit` items left: no next.
    expect(t.select({ prefix: 'a:3', limit: 7 }).next).toBeUndefined();
    expect(t.select({ prefix: 'a:3', limit: 6 }).next).toBe('a:35');

    expect(t.select().items).toHaveLength(43);
    expect(t.select({ limit: 5000 }).items).toHaveLength(43);
    expect(() => t.select({ limit: 0 })).toThrow(BadRequestError);
    expect(() => t.select({ limit: 1.5 })).toThrow(BadRequestError);
    await t.close();
  });

  test('table file - select stays exact as keys are added, deleted and re-added', async () => {
    const t = await open({ sync: 'none' });
    const model = new Map<string, string>();
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let round = 0; round < 6; round++) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 400; i++) {
        const key = `k${rand(300)}`;
        if (rand(3) === 0) {
          ops.push(t.delete(key));
          model.delete(key);
        } else {
          const value = `${round}-${i}`;
          ops.push(t.put(key, b(value)));
          model.set(key, value);
        }
      }
      // Ordered view checked before the writes are durable, and across a leaf split.
      const expected = [...model.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
      expect(selectAll(t, undefined, 1 + rand(60))).toEqual(expected);
      expect(selectAll(t, 'k1', 13)).toEqual(expected.filter(([k]) => k.startsWith('k1')));
      await Promise.all(ops);
    }
    await t.close();
    const r = await open();
    expect(selectAll(r, undefined, 1000)).toEqual([...model.entries()].sort(([x], [y]) => (x < y ? -1 : 1)));
    await r.close();
  });

  test('table file - key rules and the value limit reject with the right errors', async () => {
    const t = await open({ maxValueBytes: 100 });
    await expect(t.put('', b('x'))).rejects.toThrow(KeyInvalidError);
    await expect(t.put('k'.repeat(1025), b('x'))).rejects.toThrow(/1025 bytes in UTF-8; the limit is 1024/);
    await expect(t.put('é'.repeat(513), b('x'))).rejects.toThrow(KeyInvalidError);
    await expect(t.put('bad\uD800', b('x'))).rejects.toThrow(/lone UTF-16 surrogate/);
    await expect(t.put('\uDC00', b('x'))).rejects.toThrow(KeyInvalidError);
    await expect(t.put(42 as unknown as string, b('x'))).rejects.toThrow(KeyInvalidError);
    await expect(t.delete('')).rejects.toThrow(KeyInvalidError);
    // Reads answer a key that breaks the rules the same way, not "not found".
    expect(() => t.get('')).toThrow(KeyInvalidError);
    expect(() => t.get('é'.repeat(513))).toThrow(/1026 bytes in UTF-8/);
    expect(() => t.peek('bad\uD800')).toThrow(/lone UTF-16 surrogate/);
    expect(t.get('k'.repeat(1024))).toBeUndefined();
    await expect(t.put('v', Buffer.alloc(101))).rejects.toThrow(ValueTooLargeError);
    await expect(t.put('v', Buffer.alloc(101))).rejects.toMatchObject({ code: 'VALUE_TOO_LARGE', details: { bytes: 101, max: 100 } });
    await expect(t.put('v', 'text' as unknown as Buffer)).rejects.toThrow(BadRequestError);
    // The limits themselves are allowed.
    await t.put('k'.repeat(1024), Buffer.alloc(100));
    await t.put('é'.repeat(512), b('accent'));
    await t.put('emoji \uD83D\uDE00', b('pair'));
    expect(t.stats().records).toBe(3);
    await t.close();
    const r = await open();
    expect(str(r.get('é'.repeat(512)))).toBe('accent');
    expect(str(r.get('emoji \uD83D\uDE00'))).toBe('pair');
    expect(r.get('k'.repeat(1024))).toEqual(Buffer.alloc(100));
    await expect(r.put('big', Buffer.alloc(1024 * 1024 + 1))).rejects.toThrow(ValueTooLargeError);
    await r.put('big', Buffer.alloc(1024 * 1024, 7));
    // Buffer.equals: jest's deep equality walks a 1 MiB buffer slowly.
    expect(r.get('big')?.equals(Buffer.alloc(1024 * 1024, 7))).toBe(true);
    await r.close();
  });

  test('table file - close is idempotent and everything after it fails with TableClosedError', async () => {
    const t = await open({ sync: 'none' });
    const pending = t.put('k', b('v'));
    const closing = t.close();
    expect(t.close()).toBe(closing);
    await Promise.all([pending, closing]);
    expect(() => t.get('k')).toThrow(TableClosedError);
    expect(() => t.has('k')).toThrow(TableClosedError);
    expect(() => t.select()).toThrow(TableClosedError);
    expect(() => t.stats()).toThrow(TableClosedError);
    await expect(t.put('k', b('v'))).rejects.toThrow(TableClosedError);
    await expect(t.delete('k')).rejects.toThrow(TableClosedError);
    await expect(t.sync()).rejects.toThrow(TableClosedError);
    await t.close();
    // The write made before close was flushed by it.
    const r = await open();
    expect(str(r.get('k'))).toBe('v');
    await r.close();
  });

  test("table file - policy 'none' acknowledges after the OS write and fsyncs only on sync()", async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs, sync: 'none' });
    const fsyncs = ffs.calls.fdatasync;
    await t.put('a', b('1'));
    await t.put('b', b('2'));
    expect(ffs.calls.fdatasync).toBe(fsyncs);
    expect(t.durableLength).toBeLessThan(t.stats().fileBytes);
    await t.sync();
    expect(ffs.calls.fdatasync).toBe(fsyncs + 1);
    expect(t.durableLength).toBe(t.stats().fileBytes);
    await t.close();
  });

  test("table file - policy 'interval' fsyncs on its timer", async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'performance', 'hrtime', 'Date'] });
    try {
      const ffs = new FaultyFs();
      const t = await open({ fs: ffs, sync: { intervalMs: 1000 } });
      const fsyncs = ffs.calls.fdatasync;
      await t.put('a', b('1'));
      expect(ffs.calls.fdatasync).toBe(fsyncs);
      const synced = ffs.completed('fdatasync');
      jest.advanceTimersByTime(1000);
      await synced;
      expect(ffs.calls.fdatasync).toBe(fsyncs + 1);
      expect(t.durableLength).toBe(t.stats().fileBytes);
      // Nothing new written: the next tick does not fsync again. A sync would
      // call fdatasync from a setImmediate queued before these two.
      jest.advanceTimersByTime(1000);
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(ffs.calls.fdatasync).toBe(fsyncs + 1);
      await t.close();
    } finally {
      jest.useRealTimers();
    }
  });

  test('table file - open of a missing directory fails with StoreIoError', async () => {
    await expect(TableFile.open({ table: 't', path: path.join(tmp.dir, 'no', 'such', 't.tkt') })).rejects.toMatchObject({
      code: 'IO_ERROR',
      name: 'StoreIoError',
    });
  });
});
