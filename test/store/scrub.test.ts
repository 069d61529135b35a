import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { runMaintenance } from '../../actors/maintenance-job';
import { backupTable, FILE_HEADER_BYTES, MaintenanceConflictError, scrubTable, TableClosedError, TableCorruptError, TableFile } from '../../store';
import { useTempDir } from '../helpers/store-temp';
import { contentsOf, recordsOf } from './recovery-helpers';

const tmp = useTempDir('tk-scrub-');
const b = (s: string): Buffer => Buffer.from(s);
const file = (): string => path.join(tmp.dir, 't.tkt');
const open = (): Promise<TableFile> => TableFile.open({ table: 't', path: file(), sync: 'none' });

async function filled(n: number): Promise<TableFile> {
  const t = await open();
  for (let i = 0; i < n; i++) await t.put(`k${i}`, b(`value-${i}`));
  await t.sync();
  return t;
}

/** Overwrites bytes of the file on disk behind the open table's back. */
function poke(at: number, bytes: Buffer): void {
  const fd = fs.openSync(file(), 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, at);
  } finally {
    fs.closeSync(fd);
  }
}

describe('scrub', () => {
  test('scrub - a clean table: every record checked, nothing damaged', async () => {
    const t = await filled(50);
    const report = await scrubTable(t);
    expect(report).toMatchObject({ records: 50, bytes: t.durableLength, damaged: [], fileMissing: false });
    expect(report.headerDamage).toBeUndefined();
    await t.close();
  });

  test('scrub - damage below the durable length is reported as ranges, including at the very end', async () => {
    const t = await filled(20);
    await t.close();
    const recs = await recordsOf(file());
    const t2 = await open();
    poke(recs[4].offset + 22, b('X'));
    const last = recs[recs.length - 1];
    poke(last.offset + last.length - 1, b('Y'));
    const report = await scrubTable(t2);
    expect(report.records).toBe(18);
    expect(report.damaged).toEqual([
      { type: 'damage', start: recs[4].offset, end: recs[5].offset, reason: 'checksum mismatch', tail: false },
      { type: 'damage', start: last.offset, end: t2.durableLength, reason: 'checksum mismatch', tail: true },
    ]);
    await t2.close();
  });

  test('scrub - a damaged header is reported', async () => {
    const t = await filled(3);
    poke(4, b('\x07'));
    const report = await scrubTable(t);
    expect(report.headerDamage).toMatch(/header checksum mismatch|unsupported format version/);
    expect(report.records).toBe(3);
    await t.close();
  });

  test('scrub - a deleted or replaced table file is reported as missing', async () => {
    const t = await filled(3);
    fs.rmSync(file());
    expect(await scrubTable(t)).toMatchObject({ fileMissing: true, records: 0, bytes: 0 });
    fs.writeFileSync(file(), 'something else');
    expect(await scrubTable(t)).toMatchObject({ fileMissing: true, records: 0 });
    await t.close();
  });

  test('scrub - a file that shrank below its durable length is damage, not a read failure', async () => {
    const t = await filled(20);
    const recs = await recordsOf(file());
    const cut = recs[15].offset + 3; // in the middle of a record
    fs.truncateSync(file(), cut);
    const report = await scrubTable(t);
    expect(report.records).toBe(15);
    expect(report.damaged.at(-1)).toEqual({ type: 'damage', start: cut, end: t.durableLength, reason: expect.stringMatching(/shrank below its durable length/), tail: true });
    const outcome = await runMaintenance(t, { kind: 'scrub' }, pino({ level: 'silent' }));
    expect(outcome).toMatchObject({ kind: 'scrub', damage: expect.any(TableCorruptError) });
    await t.close();
  });

  test('scrub - it yields to the event loop while it works, and stops when aborted', async () => {
    const t = await filled(3000);
    let turns = 0;
    let ticking = true;
    const tick = (): void => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const report = await scrubTable(t, { sliceMs: 0 });
    ticking = false;
    expect(report.records).toBe(3000);
    // A slice of 0 ms yields every 64 records: the loop above ran in between.
    expect(turns).toBeGreaterThan(10);

    const controller = new AbortController();
    const reason = new Error('stop');
    const scrub = scrubTable(t, { sliceMs: 0, signal: controller.signal });
    controller.abort(reason);
    await expect(scrub).rejects.toBe(reason);
    // The maintenance slot was released.
    expect((await scrubTable(t)).records).toBe(3000);
    await t.close();
  });

  test('scrub - closing the table stops a scrub, even one waiting out its throttle pause', async () => {
    const t = await filled(3000);
    // A pause after every slice that would outlast the test: only the close can end it.
    const scrub = scrubTable(t, { sliceMs: 0, pauseMs: 600_000 });
    const outcome = scrub.then(
      () => 'finished',
      (err: unknown) => err,
    );
    // Let it start its scan (and its first pause) before closing.
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    await t.close();
    expect(await outcome).toMatchObject({ name: 'TableClosedError', details: { during: 'scrub' } });
  });

  test('scrub - it takes the maintenance slot: not beside a backup, and not on a closed table', async () => {
    const t = await filled(2000);
    const backup = backupTable(t, path.join(tmp.dir, 'backups'));
    await expect(scrubTable(t)).rejects.toBeInstanceOf(MaintenanceConflictError);
    await backup;
    await t.close();
    await expect(scrubTable(t)).rejects.toBeInstanceOf(TableClosedError);
  });
});

describe('preserving a deleted table file', () => {
  test('table file - preserveIfMissing rewrites a deleted file from the open descriptor, with every write so far', async () => {
    const t = await filled(10);
    fs.rmSync(file());
    // Written after the delete: still in the open (deleted) file, and preserved too.
    await t.put('late', b('still here'));
    expect(await t.preserveIfMissing()).toBe(true);
    expect(fs.existsSync(`${file()}.preserve`)).toBe(false);
    expect(await t.preserveIfMissing()).toBe(false);
    await t.close();
    const got = await contentsOf(file());
    expect(got.entries.size).toBe(11);
    expect(got.entries.get('late')).toBe('still here');
  });

  test('table file - preserveIfMissing leaves an existing file alone', async () => {
    const t = await filled(2);
    const before = fs.readFileSync(file());
    expect(await t.preserveIfMissing()).toBe(false);
    expect(fs.readFileSync(file()).equals(before)).toBe(true);
    await t.close();
  });
});

describe('read checks', () => {
  test('table file - a record damaged while still in the write batch makes get and select throw, never a wrong value', async () => {
    const t = await open();
    await t.put('a', b('aaaa'));
    const offset = t.stats().fileBytes;
    // Not awaited: the record stays in the pending batch, readable from memory, until the write loop runs.
    const pending = t.put('b', b('bbbb'));
    // Test-only reach into the write queue: damage the batch bytes that a read would use.
    const batch = (t as any).queue.locate(offset);
    expect(batch).toBeDefined();
    batch.buf[offset - batch.base + 22] ^= 0xff;
    expect(() => t.get('b')).toThrow(TableCorruptError);
    expect(() => t.select({ prefix: 'b' })).toThrow(TableCorruptError);
    expect(t.get('a')?.toString()).toBe('aaaa');
    await pending;
    await t.close();
  });

  test('table file - a record damaged on disk makes get and every select page that holds it throw', async () => {
    const t = await filled(5);
    const recs = await recordsOf(file());
    poke(recs[2].offset + FILE_HEADER_BYTES, b('!'));
    expect(() => t.get('k2')).toThrow(TableCorruptError);
    expect(() => t.select({})).toThrow(TableCorruptError);
    expect(() => t.select({ after: 'k1', limit: 1 })).toThrow(TableCorruptError);
    expect(t.select({ after: 'k2' }).items.map((i) => i.key)).toEqual(['k3', 'k4']);
    await t.close();
  });
});
