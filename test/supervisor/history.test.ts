import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { TableFile } from '../../store';
import { HistoryStore, type HistoryEntry } from '../../supervisor/history';
import { useTempDir } from '../helpers/store-temp';

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);

function entry(i: number, kind: HistoryEntry['kind'], table: string, result: HistoryEntry['result'] = 'ok'): HistoryEntry {
  return { at: new Date(T0 + i * 1000).toISOString(), kind, table, result, trigger: 'manual', durationMs: i };
}

describe('history', () => {
  const tmp = useTempDir('tk-history-');

  test('history - keeps the newest N entries per kind and table, and knows the last and the counts after a reopen', async () => {
    let h = await HistoryStore.open(tmp.dir, { limit: 3 });
    for (let i = 0; i < 6; i++) await h.add(entry(i, 'backup', 'a'));
    await h.add(entry(6, 'backup', 'b'));
    await h.add(entry(7, 'recovery', 'a', 'failed'));
    await h.add(entry(8, 'recovery', 'a'));
    const check = (store: HistoryStore) => {
      expect(store.recent(100).map((e) => [e.kind, e.table, e.durationMs])).toEqual([
        ['recovery', 'a', 8],
        ['recovery', 'a', 7],
        ['backup', 'b', 6],
        ['backup', 'a', 5],
        ['backup', 'a', 4],
        ['backup', 'a', 3],
      ]);
      expect(store.last('backup', 'a')?.durationMs).toBe(5);
      expect(store.last('compaction', 'a')).toBeUndefined();
      expect(store.count('recovery', 'a')).toEqual({ count: 2, failed: 1 });
      expect(store.count('backup', 'a')).toEqual({ count: 3, failed: 0 });
    };
    check(h);
    await h.close();
    h = await HistoryStore.open(tmp.dir, { limit: 3 });
    check(h);
    // A smaller limit trims at open.
    await h.close();
    h = await HistoryStore.open(tmp.dir, { limit: 1 });
    expect(h.count('backup', 'a').count).toBe(1);
    expect(h.last('backup', 'a')?.durationMs).toBe(5);
    await h.close();
  });

  test('history - a store opened while an earlier one of the same file is closing waits for it, and finds what it wrote last', async () => {
    const first = await HistoryStore.open(tmp.dir);
    // Not awaited: the close writes them (after the open of the second store began, without the wait).
    const adds = [0, 1, 2].map((i) => first.add(entry(i, 'backup', 'a')));
    let closed = false;
    const closing = first.close().then(() => (closed = true));
    const second = await HistoryStore.open(tmp.dir);
    expect(closed).toBe(true);
    await Promise.all(adds);
    await closing;
    expect(second.recent(10).map((e) => e.durationMs)).toEqual([2, 1, 0]);
    await second.add(entry(3, 'backup', 'a'));
    await second.close();
    const third = await HistoryStore.open(tmp.dir);
    expect(third.recent(10)).toHaveLength(4);
    await third.close();
  });

  test('history - after the clock is set back, the entry just added is the last and the newest, and trimming drops the oldest added, also after a reopen', async () => {
    let h = await HistoryStore.open(tmp.dir, { limit: 3 });
    // Three runs on a clock a day ahead, then NTP sets it back and two more run.
    for (let i = 0; i < 3; i++) await h.add(entry(86_400 + i * 3600, 'backup', 'a'));
    await h.add(entry(10 * 3600, 'backup', 'a', 'failed'));
    await h.add(entry(11 * 3600, 'backup', 'a'));
    const check = (store: HistoryStore) => {
      expect(store.last('backup', 'a')?.durationMs).toBe(11 * 3600);
      expect(store.count('backup', 'a')).toEqual({ count: 3, failed: 1 });
      expect(store.recent(10).map((e) => e.durationMs)).toEqual([11 * 3600, 10 * 3600, 86_400 + 2 * 3600]);
    };
    check(h);
    await h.close();
    h = await HistoryStore.open(tmp.dir, { limit: 3 });
    check(h);
    // The counter goes on from the highest one, not from the entry with the latest time.
    await h.add(entry(12 * 3600, 'backup', 'a'));
    expect(h.recent(10).map((e) => e.durationMs)).toEqual([12 * 3600, 11 * 3600, 10 * 3600]);
    await h.close();
    h = await HistoryStore.open(tmp.dir, { limit: 3 });
    expect(h.last('backup', 'a')?.durationMs).toBe(12 * 3600);
    expect(h.recent(10).map((e) => e.durationMs)).toEqual([12 * 3600, 11 * 3600, 10 * 3600]);
    await h.close();
  });

  test('history - a file written before the counter order, with a counter used twice after a clock set back, opens in the order added', async () => {
    // As the earlier code left it: the counter went on, at each open, from the key with the latest time.
    const dir = path.join(tmp.dir, '.tablekeeper');
    mkdirSync(dir, { recursive: true });
    const file = await TableFile.open({ table: '_history', path: path.join(dir, 'history.tkt') });
    const put = (i: number, counter: number) =>
      file.put(`h:${new Date(T0 + i * 1000).toISOString()}:${String(counter).padStart(12, '0')}`, Buffer.from(JSON.stringify(entry(i, 'backup', 'a'))));
    await put(100, 0);
    await put(101, 1);
    await put(10, 2); // clock set back, same run of the service
    await put(11, 2); // restarted: counter 2 again (from the key at 101)
    await put(12, 3);
    await file.close();
    const h = await HistoryStore.open(tmp.dir);
    expect(h.recent(10).map((e) => e.durationMs)).toEqual([12, 11, 10, 101, 100]);
    expect(h.last('backup', 'a')?.durationMs).toBe(12);
    await h.add(entry(13, 'backup', 'a'));
    expect(h.last('backup', 'a')?.durationMs).toBe(13);
    expect(h.recent(1).map((e) => e.durationMs)).toEqual([13]);
    await h.close();
  });

  test('history - compacts itself once dead records pass its threshold, keeping every live value', async () => {
    let h = await HistoryStore.open(tmp.dir, { compaction: { deadBytes: 4096, fragmentation: 0.5 } });
    await h.add(entry(1, 'backup', 'a'));
    let grew = 0;
    for (let i = 0; i < 200; i++) {
      await h.setState('scrub.a', { at: i, padding: 'x'.repeat(100) });
      grew = Math.max(grew, h.stats().fileBytes);
    }
    await h.close(); // waits for a compaction in progress
    h = await HistoryStore.open(tmp.dir);
    const stats = h.stats();
    expect(stats.generation).toBeGreaterThan(1);
    expect(stats.fileBytes).toBeLessThan(grew);
    expect(h.getState('scrub.a')).toEqual({ at: 199, padding: 'x'.repeat(100) });
    expect(h.recent(10)).toHaveLength(1);
    await h.close();
  });

  test('history - a file that cannot be opened is quarantined and an empty history started', async () => {
    const dir = path.join(tmp.dir, '.tablekeeper');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'history.tkt'), Buffer.alloc(2048, 0x5a));
    const h = await HistoryStore.open(tmp.dir, { now: () => T0 });
    expect(h.reset).toMatchObject({ reason: expect.any(String), quarantined: expect.stringContaining('_history-20260101T000000000Z'), persisted: true });
    expect(existsSync(h.reset!.quarantined!)).toBe(true);
    expect(h.recent(10)).toEqual([]);
    await h.add(entry(1, 'backup', 'a'));
    await h.close();
    const again = await HistoryStore.open(tmp.dir);
    expect(again.reset).toBeUndefined();
    expect(again.recent(10)).toHaveLength(1);
    expect(readdirSync(dir)).toContain('history.tkt');
    await again.close();
  });

  test('history - a file that cannot be opened for another reason is left alone and the history kept in memory', async () => {
    const dir = path.join(tmp.dir, '.tablekeeper');
    mkdirSync(path.join(dir, 'history.tkt'), { recursive: true }); // a directory where the file should be
    const h = await HistoryStore.open(tmp.dir);
    expect(h.reset).toMatchObject({ quarantined: null, persisted: false });
    await h.add(entry(1, 'backup', 'a'));
    await h.add(entry(2, 'backup', 'a'));
    await h.setState('schedule.backup', { lastRun: 5 });
    expect(h.recent(10).map((e) => e.durationMs)).toEqual([2, 1]);
    expect(h.last('backup', 'a')?.durationMs).toBe(2);
    expect(h.getState('schedule.backup')).toEqual({ lastRun: 5 });
    await h.close();
    expect(readdirSync(dir)).toEqual(['history.tkt']);
  });
});
