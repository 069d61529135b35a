import * as fs from 'node:fs';
import * as path from 'node:path';
import { StoreIoError, SyncPolicy, TableFile } from '../../store';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();
const b = (s: string): Buffer => Buffer.from(s);
const file = (): string => path.join(tmp.dir, 't.tkt');
const open = (ffs?: FaultyFs, sync: SyncPolicy = 'always'): Promise<TableFile> => TableFile.open({ table: 't', path: file(), fs: ffs, sync });

/** Every key and value of the table at file() after a clean reopen (no torn tail allowed). */
async function reopenContents(): Promise<Record<string, string>> {
  const t = await open();
  expect(t.openReport.tornTailBytes).toBe(0);
  const out: Record<string, string> = {};
  for (const item of t.select({ limit: 1000 }).items) out[item.key] = item.value.toString();
  const size = t.stats().fileBytes;
  await t.close();
  expect(fs.statSync(file()).size).toBe(size);
  return out;
}

/** Settles every promise; returns 'ok' or the rejection for each. */
function outcomes(promises: Promise<unknown>[]): Promise<unknown[]> {
  return Promise.all(promises.map((p) => p.then(() => 'ok', (err: unknown) => err)));
}

describe('table file faults', () => {
  // Small batches are written synchronously on the real disk and through the thread pool otherwise: both must fail alike.
  const writeModes = [
    ['writes through the thread pool', false],
    ['synchronous writes', true],
  ] as const;

  test.each(writeModes)('table file - %s: an injected write failure rejects the batch with StoreIoError and leaves exactly the acknowledged writes', async (_mode, syncWrites) => {
    const ffs = new FaultyFs(undefined, { syncWrites });
    const t = await open(ffs);
    await t.put('a', b('1'));
    await t.put('b', b('2'));
    ffs.failOn({ op: 'write', nth: 1 });
    const results = await outcomes([t.put('a', b('lost')), t.put('c', b('lost')), t.delete('b')]);
    for (const r of results) {
      expect(r).toBeInstanceOf(StoreIoError);
      expect(r).toMatchObject({ code: 'IO_ERROR', details: { table: 't', operation: 'write' } });
    }
    // The failed changes were undone in memory too.
    expect(t.get('a')?.toString()).toBe('1');
    expect(t.get('b')?.toString()).toBe('2');
    expect(t.has('c')).toBe(false);
    expect(t.stats()).toMatchObject({ records: 2, fileRecords: 2 });
    expect(t.failed).toBeUndefined();
    await t.put('d', b('4'));
    expect(ffs.syncWriteCalls > 0).toBe(syncWrites);
    await t.close();
    expect(await reopenContents()).toEqual({ a: '1', b: '2', d: '4' });
  });

  test.each(writeModes)('table file - %s: a write that fails half-way is truncated away', async (_mode, syncWrites) => {
    const ffs = new FaultyFs(undefined, { syncWrites });
    const t = await open(ffs);
    await t.put('a', b('1'));
    const good = fs.statSync(file()).size;
    // 40 bytes: the whole first record of the batch (25 bytes) and part of the second.
    ffs.failOn({ op: 'write', nth: 1, partialBytes: 40 });
    const results = await outcomes([t.put('b', b('2')), t.put('c', b('a longer value'))]);
    expect(results.every((r) => r instanceof StoreIoError)).toBe(true);
    expect(fs.statSync(file()).size).toBe(good);
    expect(t.durableLength).toBe(good);
    await t.close();
    expect(await reopenContents()).toEqual({ a: '1' });
  });

  test('table file - batches up to 256 KiB are written synchronously, larger ones through the thread pool, and both read back', async () => {
    const ffs = new FaultyFs(undefined, { syncWrites: true });
    const t = await open(ffs, 'none');
    // The new file's header was written before: count from here.
    const writes = ffs.calls.write;
    await t.put('small', Buffer.alloc(1000, 1));
    expect(ffs.syncWriteCalls).toBe(1);
    expect(ffs.calls.write).toBe(writes + 1);
    // 300 KiB in one batch: over the limit.
    await Promise.all([t.put('big1', Buffer.alloc(150 * 1024, 2)), t.put('big2', Buffer.alloc(150 * 1024, 3))]);
    expect(ffs.syncWriteCalls).toBe(1);
    expect(ffs.calls.write).toBe(writes + 2);
    await t.close();
    const r = await open();
    expect(r.get('small')).toEqual(Buffer.alloc(1000, 1));
    expect(r.get('big1')).toEqual(Buffer.alloc(150 * 1024, 2));
    expect(r.get('big2')).toEqual(Buffer.alloc(150 * 1024, 3));
    await r.close();
  });

  test('table file - records queued behind a failing write are rejected and undone too', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('k', b('v1'));
    ffs.failOn({ op: 'write', nth: 1 });
    const gate = ffs.hold('write');
    const inFlight = t.put('k', b('v2'));
    await gate.reached;
    // Appended while the failing write is in flight: its offset assumed that write.
    const queued = [t.put('k', b('v3')), t.put('new', b('x')), t.delete('k')];
    expect(t.has('k')).toBe(false);
    gate.release();
    const results = await outcomes([inFlight, ...queued]);
    expect(results.every((r) => r instanceof StoreIoError)).toBe(true);
    expect(t.get('k')?.toString()).toBe('v1');
    expect(t.has('new')).toBe(false);
    await t.close();
    expect(await reopenContents()).toEqual({ k: 'v1' });
  });

  test('table file - a delete that finds the key already gone answers only once the earlier delete is durable', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('k', b('v'));
    const gate = ffs.hold('write');
    const first = t.delete('k');
    await gate.reached;
    let answered = false;
    const second = t.delete('k').then((found) => {
      answered = true;
      return found;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(answered).toBe(false);
    gate.release();
    expect(await first).toBe(true);
    expect(await second).toBe(false);

    // When the earlier delete fails, the key is back, and the later answer fails too.
    await t.put('j', b('w'));
    ffs.failOn({ op: 'write', nth: 1 });
    const results = await outcomes([t.delete('j'), t.delete('j')]);
    expect(results.map((r) => r instanceof StoreIoError)).toEqual([true, true]);
    expect(t.get('j')?.toString()).toBe('w');
    await t.close();
  });

  test("table file - an injected fsync failure under 'always' rejects with StoreIoError and the data is rolled back", async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('a', b('1'));
    const durable = t.durableLength;
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    const results = await outcomes([t.put('a', b('2')), t.put('b', b('3'))]);
    for (const r of results) expect(r).toMatchObject({ name: 'StoreIoError', details: { operation: 'fsync' } });
    expect(t.get('a')?.toString()).toBe('1');
    expect(t.has('b')).toBe(false);
    // The bytes were written but not known durable: they are cut off.
    expect(fs.statSync(file()).size).toBe(durable);
    await t.put('c', b('4'));
    await t.close();
    expect(await reopenContents()).toEqual({ a: '1', c: '4' });
  });

  test('table file - when the rollback cut fails the file enters the failed state, and a cut marker makes the next open cut the rejected bytes', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('a', b('1'));
    const good = t.durableLength;
    ffs.failOn({ op: 'write', nth: 1, partialBytes: 7 }).failOn({ op: 'truncate', nth: 1 });
    const err = await t.put('b', b('2')).catch((e: unknown) => e);
    // Undone: the marker guarantees the cut, so the rejection says nothing of "may be there".
    expect(err).toBeInstanceOf(StoreIoError);
    expect((err as StoreIoError).details.undone).toBeUndefined();
    expect((err as StoreIoError).message).not.toMatch(/may be there/);
    expect(t.failed).toBeInstanceOf(StoreIoError);
    expect(t.failed?.details).toMatchObject({ operation: 'truncate' });
    await expect(t.put('c', b('3'))).rejects.toMatchObject({ code: 'IO_ERROR', details: { failed: true } });
    await expect(t.delete('a')).rejects.toThrow(StoreIoError);
    // A delete of a missing key is a write too: refused, not answered "nothing to delete".
    await expect(t.delete('never-there')).rejects.toMatchObject({ code: 'IO_ERROR', details: { failed: true } });
    await expect(t.sync()).rejects.toThrow(StoreIoError);
    // Reads still work.
    expect(t.get('a')?.toString()).toBe('1');
    expect(t.has('b')).toBe(false);
    expect(JSON.parse(fs.readFileSync(`${file()}.cut`, 'utf8'))).toMatchObject({ length: good });
    // Keep the 7 torn bytes on disk (as if the retry at close failed too): the marker alone must cut them.
    ffs.failOn({ op: 'truncate', nth: 1 });
    await t.close();
    expect(fs.statSync(file()).size).toBe(good + 7);
    const r = await open();
    expect(r.openReport.tornTailBytes).toBe(0);
    expect(r.get('a')?.toString()).toBe('1');
    expect(r.has('b')).toBe(false);
    await r.close();
    expect(fs.readdirSync(tmp.dir)).toEqual(['t.tkt']);
  });

  test('table file - an fsynced write rejected after a failed fsync is never read back when the cut fails: the marker cuts it', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('a', b('1'));
    await t.put('gone', b('x'));
    ffs.failOn({ op: 'fdatasync', nth: 1 }).failOn({ op: 'truncate', nth: 1 }).failOn({ op: 'truncate', nth: 2 });
    const results = await outcomes([t.put('b', b('2')), t.delete('gone')]);
    for (const r of results) expect(r).toMatchObject({ name: 'StoreIoError', details: { operation: 'fsync' } });
    // Whole records of the rejected batch are still in the file, past the acknowledged ones.
    await t.close();
    expect(fs.existsSync(`${file()}.cut`)).toBe(true);
    expect(await reopenContents()).toEqual({ a: '1', gone: 'x' });
    expect(fs.existsSync(`${file()}.cut`)).toBe(false);
  });

  test('table file - when neither the cut nor a marker can be made, the rejection says the write may be there, and close tries the cut again', async () => {
    for (const closeCut of ['succeeds', 'fails'] as const) {
      fs.rmSync(file(), { force: true });
      const ffs = new FaultyFs();
      const t = await open(ffs);
      await t.put('a', b('1'));
      // Every fdatasync from now fails (the batch's and the marker's), and so does the cut (at close too, in the second run).
      ffs.failOn({ op: 'fdatasync', nth: 1, sticky: true }).failOn({ op: 'truncate', nth: 1, sticky: closeCut === 'fails' });
      const err = await t.put('b', b('2')).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'StoreIoError', code: 'IO_ERROR', details: { operation: 'fsync', undone: false } });
      expect((err as Error).message).toMatch(/could not be undone on disk and may be there once the table reopens/);
      expect(t.has('b')).toBe(false);
      expect(fs.readdirSync(tmp.dir)).toEqual(['t.tkt']);
      if (closeCut === 'succeeds') ffs.heal();
      await t.close();
      const r = await open();
      expect(r.get('a')?.toString()).toBe('1');
      // The one outcome the error allowed for: the write is back only when the cut never happened.
      expect(r.get('b')?.toString()).toBe(closeCut === 'succeeds' ? undefined : '2');
      await r.close();
    }
  });

  test('table file - an open of a file whose table is still closing waits for that close, which may still cut the file', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    await t.put('a', b('1'));
    ffs.failOn({ op: 'fdatasync', nth: 1, sticky: true }).failOn({ op: 'truncate', nth: 1 });
    await expect(t.put('b', b('2'))).rejects.toMatchObject({ details: { undone: false } });
    ffs.heal();
    // The close's second try at the cut is held; an owner restarting meanwhile opens the same file.
    const gate = ffs.hold('truncate');
    const closed = t.close();
    await gate.reached;
    const ffs2 = new FaultyFs();
    const reopening = open(ffs2);
    // It has not touched the file: it waits for the close.
    expect(Object.values(ffs2.calls).every((n) => n === 0)).toBe(true);
    gate.release();
    await closed;
    const r = await reopening;
    expect(r.has('b')).toBe(false);
    expect(r.get('a')?.toString()).toBe('1');
    await r.put('c', b('3'));
    await r.close();
    expect(await reopenContents()).toEqual({ a: '1', c: '3' });
  });

  test('table file - a cut marker of a file that was replaced since, or one that cannot be read, is removed unused', async () => {
    const t = await open();
    await t.put('a', b('1'));
    await t.put('b', b('2'));
    await t.close();
    const size = fs.statSync(file()).size;
    const st = fs.statSync(file(), { bigint: true });
    // A marker for this very file, then the file replaced by a copy (a restore renames a new file into place).
    fs.writeFileSync(`${file()}.cut`, JSON.stringify({ length: 16, dev: String(st.dev), ino: String(st.ino) }));
    fs.copyFileSync(file(), `${file()}.new`);
    fs.renameSync(`${file()}.new`, file());
    expect(await reopenContents()).toEqual({ a: '1', b: '2' });
    expect(fs.existsSync(`${file()}.cut`)).toBe(false);
    fs.writeFileSync(`${file()}.cut`, 'not json');
    expect(await reopenContents()).toEqual({ a: '1', b: '2' });
    expect(fs.readdirSync(tmp.dir)).toEqual(['t.tkt']);
    expect(fs.statSync(file()).size).toBe(size);
  });

  test("table file - an fsync failure under 'none' fails sync() and the file", async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs, 'none');
    await t.put('a', b('1'));
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    await expect(t.sync()).rejects.toMatchObject({ name: 'StoreIoError', details: { operation: 'fsync' } });
    expect(t.failed).toBeInstanceOf(StoreIoError);
    await expect(t.put('b', b('2'))).rejects.toThrow(StoreIoError);
    // An acknowledged write cannot be taken back: it stays readable.
    expect(t.get('a')?.toString()).toBe('1');
    await t.close();
    expect(await reopenContents()).toEqual({ a: '1' });
  });

  test('table file - failures while opening or creating are StoreIoError and leave no file behind', async () => {
    const ffs = new FaultyFs();
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    await expect(open(ffs)).rejects.toMatchObject({ name: 'StoreIoError', details: { operation: 'create' } });
    expect(fs.readdirSync(tmp.dir)).toEqual([]);
    ffs.failOn({ op: 'rename', nth: 1 });
    await expect(open(ffs)).rejects.toThrow(StoreIoError);
    expect(fs.readdirSync(tmp.dir)).toEqual([]);
    const t = await open(ffs);
    await t.put('a', b('1'));
    await t.close();
    ffs.failOn({ op: 'read', nth: 2 });
    await expect(open(ffs)).rejects.toMatchObject({ details: { operation: 'read' } });
    expect(await reopenContents()).toEqual({ a: '1' });
  });

  test('table file - group commit: concurrent puts share one write and one fsync', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    const writes = ffs.calls.write;
    const fsyncs = ffs.calls.fdatasync;
    const puts: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) puts.push(t.put(`k${i}`, b(`v${i}`)));
    await Promise.all(puts);
    expect(ffs.calls.write - writes).toBe(1);
    expect(ffs.calls.fdatasync - fsyncs).toBe(1);
    await t.close();
  });

  test('table file - group commit: 64 writers in a loop cost far fewer fsyncs than puts, and all resolve', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    const fsyncs = ffs.calls.fdatasync;
    const WRITERS = 64;
    const EACH = 25;
    let acked = 0;
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = 0; i < EACH; i++) {
          await t.put(`w${w}:${i % 5}`, b(`${w}-${i}`));
          acked++;
        }
      }),
    );
    expect(acked).toBe(WRITERS * EACH);
    const used = ffs.calls.fdatasync - fsyncs;
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThanOrEqual((WRITERS * EACH) / 16);
    expect(t.durableLength).toBe(t.stats().fileBytes);
    await t.close();
    const contents = await reopenContents();
    expect(Object.keys(contents)).toHaveLength(WRITERS * 5);
    expect(contents['w7:4']).toBe('7-24');
  });
});
