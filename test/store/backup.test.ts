import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BackupFailedError,
  BackupManifest,
  FILE_HEADER_BYTES,
  recordBytes,
  backupTable,
  BadRequestError,
  chooseBackup,
  listBackups,
  MaintenanceConflictError,
  pruneBackups,
  scanFile,
  StoreFsOp,
  StoreIoError,
  TableClosedError,
  TableCorruptError,
  TableFile,
  verifyBackup,
} from '../../store';
import { checkRangeInWorker, WORKER_MIN_BYTES } from '../../store/record-check-worker';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { contents, Workload } from '../helpers/store-workload';

const tmp = useTempDir('tk-backup-');
const b = (s: string): Buffer => Buffer.from(s);
const dataDir = (): string => path.join(tmp.dir, 'data');
const backupDir = (): string => path.join(tmp.dir, 'backups');
const tableDir = (): string => path.join(backupDir(), 't');
const open = (ffs?: FaultyFs): Promise<TableFile> => {
  fs.mkdirSync(dataDir(), { recursive: true });
  return TableFile.open({ table: 't', path: path.join(dataDir(), 't.tkt'), fs: ffs });
};
const at = (ms: number): Date => new Date(Date.UTC(2024, 0, 2, 3, 4, 5) + ms);
const tableFile = (): string => path.join(dataDir(), 't.tkt');
const backupFiles = (): string[] => (fs.existsSync(tableDir()) ? fs.readdirSync(tableDir()).sort() : []);

/** Opens a copy of a backup's data file as a table (the backup itself stays untouched). */
async function openCopyOf(m: BackupManifest): Promise<TableFile> {
  const dir = fs.mkdtempSync(path.join(tmp.dir, 'restore-'));
  fs.copyFileSync(path.join(tableDir(), `${m.name}.tkt`), path.join(dir, 't.tkt'));
  return TableFile.open({ table: 't', path: path.join(dir, 't.tkt') });
}

/** The TableCorruptError in `err` or its causes (as the table owner looks for it), or null. */
function corruptionIn(err: unknown): TableCorruptError | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) if (e instanceof TableCorruptError) return e;
  return null;
}

/** Flips the bits of one byte of a file in place (through its own descriptor, as bit rot would). */
function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, offset);
    fs.writeSync(fd, Buffer.from([byte[0] ^ 0x55]), 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** The offset of the record of a table file that holds byte `offset`. */
async function recordAround(file: string, offset: number): Promise<number> {
  for await (const item of scanFile(file)) if (item.type === 'record' && item.offset <= offset && offset < item.offset + item.length) return item.offset;
  throw new Error(`no record holds byte ${offset}`);
}

/** A backup of `t` fails verification with the table's damage at `offset` in its cause chain, and keeps nothing. */
async function expectTableCorrupt(t: TableFile, offset: number, reason: string, now: Date): Promise<void> {
  const err = await backupTable(t, backupDir(), { now }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(BackupFailedError);
  expect(err).toMatchObject({ details: { reason: 'verification' } });
  const corrupt = corruptionIn(err);
  expect(corrupt).toBeInstanceOf(TableCorruptError);
  expect(corrupt).toMatchObject({ table: 't', offset, reason, details: { during: 'backup' } });
  expect(backupFiles()).toEqual([]);
}

/** Runs `fn` with the manifests of `hidden` moved out of the backup directory, so that listBackups does not see them. */
async function unseen<T>(hidden: BackupManifest[], fn: () => Promise<T>): Promise<T> {
  const aside = (m: BackupManifest): string => path.join(tmp.dir, `${m.name}.json.aside`);
  for (const m of hidden) fs.renameSync(path.join(tableDir(), `${m.name}.json`), aside(m));
  try {
    return await fn();
  } finally {
    for (const m of hidden) fs.renameSync(aside(m), path.join(tableDir(), `${m.name}.json`));
  }
}

/** Records, live keys and highest sequence of a table file, counted by the offline scanner. */
async function countsOf(file: string): Promise<{ records: number; liveKeys: number; maxSeq: number }> {
  const keys = new Set<string>();
  let records = 0;
  let maxSeq = 0;
  for await (const item of scanFile(file)) {
    if (item.type !== 'record') continue;
    records++;
    maxSeq = Math.max(maxSeq, item.seq);
    if (item.kind === 'put') keys.add(item.key);
    else keys.delete(item.key);
  }
  return { records, liveKeys: keys.size, maxSeq };
}

describe('table backups', () => {
  test('backup - a backup taken while writers run is the exact state after a prefix of the operations, from before the sync on', async () => {
    const t = await open();
    const w = new Workload(t, { keys: 4000, valueBytes: 100, seed: 3 });
    await w.fill();
    // Every operation before this id was acknowledged before the backup started.
    const ackedBefore = [...w.history.values()].flat().length;
    let issuedAtSync = -1;
    const sync = t.sync.bind(t);
    // Note how far the writers got when the backup's sync resolved (test-only wrapper).
    t.sync = async () => {
      await sync();
      issuedAtSync = [...w.history.values()].flat().length;
    };
    w.start(4);
    const m = await backupTable(t, backupDir(), { now: at(0) });
    const issuedAfter = [...w.history.values()].flat().length;
    await w.stop();
    expect(issuedAfter).toBeGreaterThan(issuedAtSync);

    const restored = await openCopyOf(m);
    const state = contents(restored);
    // Values name the operation that wrote them: the backup shows, per key,
    // the last operation below some cut C, and that C is the same for every key.
    const ops = [...w.history.entries()].flatMap(([key, list]) => list.map((op) => ({ key, ...op }))).sort((x, y) => x.id - y.id);
    const shown = new Set([...state.values()].map((v) => Number(v.slice(0, v.indexOf(':')))));
    const cut = Math.max(...shown) + 1;
    expect(cut).toBeGreaterThanOrEqual(ackedBefore);
    expect(cut).toBeLessThanOrEqual(issuedAtSync);
    const prefixState = new Map<string, string>();
    for (const op of ops) {
      if (op.id >= cut) break;
      if (op.value === undefined) prefixState.delete(op.key);
      else prefixState.set(op.key, op.value);
    }
    expect(state).toEqual(prefixState);

    // The manifest describes the copy exactly.
    const copy = fs.readFileSync(path.join(tableDir(), `${m.name}.tkt`));
    let records = 0;
    for await (const item of scanFile(path.join(tableDir(), `${m.name}.tkt`))) if (item.type === 'record') records++;
    expect(m).toEqual({
      table: 't',
      name: 't-20240102T030405000Z-g1',
      generation: 1,
      length: copy.length,
      records,
      liveKeys: state.size,
      maxSeq: restored.stats().seq,
      sha256: createHash('sha256').update(copy).digest('hex'),
      createdAt: '2024-01-02T03:04:05.000Z',
      formatVersion: 1,
    });
    expect(restored.openReport.tornTailBytes).toBe(0);
    await restored.close();
    expect(JSON.parse(fs.readFileSync(path.join(tableDir(), `${m.name}.json`), 'utf8'))).toEqual(m);
    expect(backupFiles()).toEqual([`${m.name}.json`, `${m.name}.tkt`]);
    expect(await listBackups(backupDir(), 't')).toEqual([m]);
    expect(await verifyBackup(m, backupDir())).toEqual({ ok: true, problems: [] });
    await t.close();
  });

  test('backup - manifest counts are exact for a known history', async () => {
    const t = await open();
    await t.put('a', b('1'));
    await t.put('b', b('2'));
    await t.put('a', b('3'));
    await t.delete('b');
    await t.put('c', b('4'));
    const m = await backupTable(t, backupDir(), { now: at(678) });
    expect(m).toMatchObject({ name: 't-20240102T030405678Z-g1', records: 5, liveKeys: 2, maxSeq: 5, length: t.durableLength, generation: 1 });
    // After a compaction the generation is in the name.
    await t.compact();
    const m2 = await backupTable(t, backupDir(), { now: at(679) });
    expect(m2).toMatchObject({ name: 't-20240102T030405679Z-g2', records: 2, liveKeys: 2, maxSeq: 5, generation: 2 });
    expect((await listBackups(backupDir(), 't')).map((x) => x.name)).toEqual([m2.name, m.name]);
    // The same instant again is taken 1 ms after the newest backup, so it sorts as the newer one.
    const m3 = await backupTable(t, backupDir(), { now: at(679) });
    expect(m3).toMatchObject({ name: 't-20240102T030405680Z-g2', createdAt: '2024-01-02T03:04:05.680Z' });
    // A leftover of the same name (a crashed backup's partial copy) gets a suffix rather than failing or being overwritten.
    fs.writeFileSync(path.join(tableDir(), 't-20240102T030405681Z-g2.tkt.partial'), 'leftover');
    const m4 = await backupTable(t, backupDir(), { now: at(679) });
    expect(m4.name).toBe('t-20240102T030405681Z-g2-001');
    fs.rmSync(path.join(tableDir(), 't-20240102T030405681Z-g2.tkt.partial'));
    expect((await listBackups(backupDir(), 't')).map((x) => x.name)).toEqual([m4.name, m3.name, m2.name, m.name]);
    expect(await verifyBackup(m2, backupDir())).toMatchObject({ ok: true });
    expect(await verifyBackup(m4, backupDir())).toMatchObject({ ok: true });
    await t.close();
  });

  test('backup - a table large enough to be verified in worker threads gets the same manifest that an in-process read-back finds', async () => {
    const t = await open();
    // Over WORKER_MIN_BYTES, with overwrites, deletes and non-ASCII keys.
    const value = Buffer.alloc(400, 'v');
    let i = 0;
    while (t.durableLength < WORKER_MIN_BYTES + 64 * 1024) {
      const puts: Promise<void>[] = [];
      for (let j = 0; j < 500; j++, i++) puts.push(t.put(`k${i % 7000}-é${i % 3}`, value));
      await Promise.all(puts);
      for (let j = 0; j < 50; j++) await t.delete(`k${(i + j * 13) % 7000}-é${j % 3}`);
    }
    const m = await backupTable(t, backupDir(), { now: at(1) });
    expect(m.length).toBe(t.durableLength);
    expect(m).toMatchObject(await countsOf(path.join(dataDir(), 't.tkt')));
    expect(m.liveKeys).toBe(t.stats().records);
    // verifyBackup reads it back in-process and recounts everything.
    expect(await verifyBackup(m, backupDir())).toEqual({ ok: true, problems: [] });
    expect(m.sha256).toBe(createHash('sha256').update(fs.readFileSync(path.join(tableDir(), `${m.name}.tkt`))).digest('hex'));
    await t.close();
  });

  test('backup - a large table backed up while writers run gets the counts of its copy', async () => {
    const t = await open();
    // Over WORKER_MIN_BYTES, so the copy is made and checked in worker threads and the live keys come from the index.
    const w = new Workload(t, { keys: 16000, valueBytes: 300, seed: 5, deleteEvery: 7 });
    await w.fill();
    expect(t.durableLength).toBeGreaterThan(WORKER_MIN_BYTES);
    w.start(4);
    // Right after the backup's sync, before it reads the durable length, new
    // keys and deletes land above that length (test-only wrapper).
    const sync = t.sync.bind(t);
    const late: Promise<unknown>[] = [];
    t.sync = async () => {
      await sync();
      for (let i = 0; i < 30; i++) late.push(t.put(`late-${i}`, b('x')));
      for (const key of t.select({ limit: 10 }).items.map((item) => item.key)) late.push(t.delete(key));
    };
    const m = await backupTable(t, backupDir(), { now: at(4) });
    await Promise.all(late);
    await w.stop();
    expect(t.durableLength).toBeGreaterThan(m.length);
    const copy = path.join(tableDir(), `${m.name}.tkt`);
    expect(m).toMatchObject(await countsOf(copy));
    expect(m.sha256).toBe(createHash('sha256').update(fs.readFileSync(copy)).digest('hex'));
    expect(await verifyBackup(m, backupDir())).toEqual({ ok: true, problems: [] });
    await t.close();
  });

  test('backup - the worker check finds damage, a copy that differs from its source, and counts keys exactly', async () => {
    const t = await open();
    const value = Buffer.alloc(300, 'w');
    for (let round = 0; round < 3; round++) {
      const puts: Promise<void>[] = [];
      for (let k = 0; k < 6000; k++) if ((k + round) % 5 !== 0) puts.push(t.put(`key-${k}`, value));
      await Promise.all(puts);
      for (let k = round; k < 6000; k += 97) await t.delete(`key-${k}`);
    }
    await t.close();
    const file = path.join(dataDir(), 't.tkt');
    const copy = path.join(tmp.dir, 'copy.tkt');
    fs.copyFileSync(file, copy);
    const length = fs.statSync(file).size;
    const counts = await countsOf(file);
    const check = async (compareWith?: string) => {
      const fd = fs.openSync(copy, 'r');
      const other = compareWith === undefined ? undefined : fs.openSync(compareWith, 'r');
      try {
        return await checkRangeInWorker({ fd, start: FILE_HEADER_BYTES, end: length, hash: true, compareFd: other, countKeys: true });
      } finally {
        fs.closeSync(fd);
        if (other !== undefined) fs.closeSync(other);
      }
    };
    const good = await check(file);
    expect(good).toEqual({
      ...counts,
      sha256: createHash('sha256').update(fs.readFileSync(file)).digest('hex'),
    });
    // One byte changed in a value, in the second half: a checksum mismatch there, and a difference from the source.
    const fd = fs.openSync(copy, 'r+');
    const where = Math.floor(length * 0.7);
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, where);
    fs.writeSync(fd, Buffer.from([byte[0] ^ 0x55]), 0, 1, where);
    fs.closeSync(fd);
    const bad = await check(file);
    expect(bad.damage).toMatchObject({ reason: 'checksum mismatch' });
    expect(bad.damage!.offset).toBeLessThanOrEqual(where);
    expect(bad.differs).toBeDefined();
    expect(bad.differs![0]).toBeLessThanOrEqual(where);
    expect(bad.differs![1]).toBeGreaterThan(where);
    expect(bad.sha256).toBeUndefined();
  });

  test('backup - a corrupted, truncated or missing backup fails verifyBackup', async () => {
    const t = await open();
    for (let i = 0; i < 200; i++) await t.put(`k${i}`, b(`value-${i}`));
    const m = await backupTable(t, backupDir(), { now: at(0) });
    await t.close();
    const data = path.join(tableDir(), `${m.name}.tkt`);
    const good = fs.readFileSync(data);

    const flipped = Buffer.from(good);
    flipped[good.length >> 1] ^= 0x01;
    fs.writeFileSync(data, flipped);
    const corrupt = await verifyBackup(m, backupDir());
    expect(corrupt.ok).toBe(false);
    expect(corrupt.problems.join('\n')).toMatch(/damaged record at offset \d+: checksum mismatch/);
    expect(corrupt.problems.join('\n')).toMatch(/sha256/);

    fs.writeFileSync(data, good.subarray(0, good.length - 5));
    expect((await verifyBackup(m, backupDir())).problems.join('\n')).toMatch(/expected \d+/);

    // Two records swapped: every record is valid, the sha256 is not.
    const swapped = Buffer.from(good);
    // Records k0-k9, then k10-k99, then k100-k199, each group of one length.
    const len = recordBytes(4, 'value-100'.length);
    const at100 = FILE_HEADER_BYTES + 10 * recordBytes(2, 'value-0'.length) + 90 * recordBytes(3, 'value-10'.length);
    swapped.copy(swapped, at100, at100 + len, at100 + 2 * len);
    good.copy(swapped, at100 + len, at100, at100 + len);
    fs.writeFileSync(data, swapped);
    const reordered = await verifyBackup(m, backupDir());
    expect(reordered).toEqual({ ok: false, problems: [expect.stringMatching(/^sha256 is [0-9a-f]{64}, the manifest says/)] });

    fs.rmSync(data);
    expect(await verifyBackup(m, backupDir())).toMatchObject({ ok: false });
    // Without its data file the backup is not listed either.
    expect(await listBackups(backupDir(), 't')).toEqual([]);
  });

  test.each<[string, StoreFsOp, number, string]>([
    ['the table sync fails', 'fdatasync', 0, 'sync'],
    ['the copy write fails', 'write', 1, 'copy'],
    ['the copy fdatasync fails', 'fdatasync', 1, 'copy'],
    ['a read-back read fails', 'read', 3, 'verify'],
    ['the rename of the copy fails', 'rename', 1, 'rename'],
    ['the manifest fdatasync fails', 'fdatasync', 2, 'manifest'],
    ['the manifest rename fails', 'rename', 2, 'manifest'],
    ['the directory fsync fails', 'syncDir', 1, 'manifest'],
  ])('backup - when %s it rejects with BackupFailedError and keeps nothing', async (_name, op, nth, stage) => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 100; i++) await t.put(`k${i}`, b(`value-${i}`));
    if (nth === 0) {
      // The write loop is still winding down: the backup's sync costs an fdatasync.
      ffs.failOn({ op, nth: 1 });
    } else {
      // Let the write loop go idle, so the backup's sync costs nothing and the nth call is the backup's.
      await new Promise((resolve) => setImmediate(resolve));
      ffs.failOn({ op, nth });
    }
    const err = await backupTable(t, backupDir(), { now: at(1) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupFailedError);
    expect(err).toMatchObject({ code: 'BACKUP_FAILED', details: { table: 't', reason: stage } });
    // The injected EIO, directly or inside the table's StoreIoError.
    expect(['EIO', 'IO_ERROR']).toContain(((err as Error).cause as { code: string }).code);
    expect(ffs.fired).toHaveLength(1);
    expect(backupFiles()).toEqual([]);
    expect(await listBackups(backupDir(), 't')).toEqual([]);
    // The table is unaffected and the next backup works.
    await t.put('after', b('x'));
    const m = await backupTable(t, backupDir(), { now: at(2) });
    expect(await listBackups(backupDir(), 't')).toEqual([m]);
    await t.close();
  });

  test('backup - a copy that reads back different from the table, or a damaged table, fails verification and is deleted', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 100; i++) await t.put(`k${i}`, b(`value-${i}`));
    // A silent corruption of the copy's only write.
    ffs.failOn({ op: 'write', nth: 1, corrupt: true });
    await expect(backupTable(t, backupDir(), { now: at(1) })).rejects.toMatchObject({
      code: 'BACKUP_FAILED',
      details: { reason: 'verification', problems: expect.arrayContaining([expect.stringMatching(/^copy read back differs from the bytes copied/)]) },
    });
    expect(backupFiles()).toEqual([]);

    // Two records swapped: every checksum still holds, only the comparison with the table can tell.
    // Swaps k10 and k11 (after k0-k9, which are shorter).
    const recordLength = recordBytes(3, 'value-10'.length);
    ffs.failOn({
      op: 'write',
      nth: 1,
      corrupt: (bytes) => {
        const first = FILE_HEADER_BYTES + 10 * recordBytes(2, 'value-0'.length);
        const a = Buffer.from(bytes.subarray(first, first + recordLength));
        bytes.copy(bytes, first, first + recordLength, first + 2 * recordLength);
        a.copy(bytes, first + recordLength);
      },
    });
    await expect(backupTable(t, backupDir(), { now: at(3) })).rejects.toMatchObject({
      details: { reason: 'verification', problems: [expect.stringMatching(/^copy read back differs from the bytes copied, in \[16, /)] },
    });
    expect(backupFiles()).toEqual([]);

    // Damage in the table file itself (a record no read has touched).
    const file = path.join(dataDir(), 't.tkt');
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([0xee]), 0, 1, 40);
    fs.closeSync(fd);
    await expect(backupTable(t, backupDir(), { now: at(2) })).rejects.toMatchObject({
      details: { reason: 'verification', problems: [expect.stringMatching(/^damaged record at offset 16/)] },
    });
    expect(backupFiles()).toEqual([]);
    await t.close();
  });

  test('backup - damage in the table file itself, found by the in-process scan, is reported as a TableCorruptError at its offset; a bad copy is not', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 200; i++) await t.put(`k${i}`, b(`value-${i}`));
    await t.sync();
    expect(t.durableLength).toBeLessThan(WORKER_MIN_BYTES);
    // A copy written wrong (its first byte, in the header) differs from the table: a bad copy, not damage of the table.
    ffs.failOn({ op: 'write', nth: 1, corrupt: true });
    const badCopy = await backupTable(t, backupDir(), { now: at(0) }).catch((e: unknown) => e);
    expect(badCopy).toMatchObject({ code: 'BACKUP_FAILED', details: { reason: 'verification' } });
    expect(corruptionIn(badCopy)).toBeNull();
    // Bit rot in a record after the table was opened (no read has touched it).
    const where = Math.floor(t.durableLength / 2);
    const damaged = await recordAround(tableFile(), where);
    flipByte(tableFile(), where);
    await expectTableCorrupt(t, damaged, 'checksum mismatch', at(1));
    // The header (its generation field): offset 0.
    flipByte(tableFile(), 8);
    await expectTableCorrupt(t, 0, 'header checksum mismatch', at(2));
    await t.close();
  });

  test('backup - damage in the table file itself, found by the worker check of a large table, is reported as a TableCorruptError at its offset', async () => {
    const t = await open();
    const value = Buffer.alloc(400, 'v');
    for (let i = 0; t.durableLength < WORKER_MIN_BYTES + 64 * 1024; ) {
      const puts: Promise<void>[] = [];
      for (let j = 0; j < 500; j++, i++) puts.push(t.put(`k${i}`, value));
      await Promise.all(puts);
    }
    await t.sync();
    const where = Math.floor(t.durableLength * 0.7);
    const damaged = await recordAround(tableFile(), where);
    flipByte(tableFile(), where);
    await expectTableCorrupt(t, damaged, 'checksum mismatch', at(3));
    flipByte(tableFile(), 8);
    await expectTableCorrupt(t, 0, 'header checksum mismatch', at(4));
    await t.close();
  });

  test('backup - after the wall clock is set back, a new backup is still timed after the newest one, so it is the one recovery, restore and retention take as newest', async () => {
    const t = await open();
    for (let i = 0; i < 40; i++) await t.put(`a${i}`, b(`a${i}`));
    // Taken while the host clock ran a day ahead.
    const ahead = await backupTable(t, backupDir(), { now: new Date('2025-01-02T12:00:00Z') });
    for (let i = 0; i < 40; i++) await t.put(`b${i}`, b(`b${i}`));
    // The clock is corrected; the next backup holds more.
    const after = await backupTable(t, backupDir(), { now: new Date('2025-01-01T12:30:00Z') });
    expect(after).toMatchObject({ name: 't-20250102T120000001Z-g1', createdAt: '2025-01-02T12:00:00.001Z' });
    expect(after.maxSeq).toBeGreaterThan(ahead.maxSeq);
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([after.name, ahead.name]);
    // Restore (and recovery, through the same listing) start from the later backup.
    expect((await chooseBackup(backupDir(), 't')).manifest).toEqual(after);
    // Retention keeps the later one.
    expect(await pruneBackups(backupDir(), 't', 1, { verify: 'until-verified', trusted: [after.name] })).toEqual([ahead]);
    // An hour later by the (still behind) clock: again after the newest.
    await t.put('c', b('c'));
    const next = await backupTable(t, backupDir(), { now: new Date('2025-01-01T13:30:00Z') });
    expect(next.createdAt).toBe('2025-01-02T12:00:00.002Z');
    expect(await pruneBackups(backupDir(), 't', 1, { verify: 'until-verified', trusted: [next.name] })).toEqual([after]);
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([next.name]);
    // Once the clock passes the newest backup, backups take its time again.
    await t.put('d', b('d'));
    expect(await backupTable(t, backupDir(), { now: new Date('2025-01-03T00:00:00Z') })).toMatchObject({ createdAt: '2025-01-03T00:00:00.000Z' });
    await t.close();
  });

  test('backup - a write rolled back after an fsync failure during the backup does not disturb it', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 100; i++) await t.put(`k${i}`, b(`value-${i}`));
    const model = contents(t);
    // Hold the backup at its first read of the table file, after L was taken.
    const gate = ffs.hold('read');
    const backup = backupTable(t, backupDir(), { now: at(1) });
    await gate.reached;
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    await expect(t.put('k1', b('rolled back'))).rejects.toThrow(StoreIoError);
    await t.put('k2', b('after the backup point'));
    gate.release();
    const m = await backup;
    const restored = await openCopyOf(m);
    expect(contents(restored)).toEqual(model);
    await restored.close();
    expect(await verifyBackup(m, backupDir())).toMatchObject({ ok: true });
    await t.close();
  });

  test('backup - a write not yet durable when the backup starts is not copied, and its rollback does not matter', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 100; i++) await t.put(`k${i}`, b(`value-${i}`));
    await new Promise((resolve) => setImmediate(resolve));
    const model = contents(t);
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    const backup = backupTable(t, backupDir(), { now: at(1) });
    // Appended (visible) before the backup notes its length; its fsync then fails and it is cut off.
    const doomed = t.put('k1', b('never durable'));
    await expect(doomed).rejects.toThrow(StoreIoError);
    const m = await backup;
    const restored = await openCopyOf(m);
    expect(contents(restored)).toEqual(model);
    await restored.close();
    await t.close();
  });

  test('backup - retention keeps the newest N, never the last verified one, and clears old leftovers', async () => {
    const t = await open();
    const made: BackupManifest[] = [];
    for (let i = 0; i < 5; i++) {
      await t.put(`k${i}`, b(`v${i}`));
      made.push(await backupTable(t, backupDir(), { now: at(i * 1000) }));
    }
    await expect(pruneBackups(backupDir(), 't', 0)).rejects.toBeInstanceOf(BadRequestError);
    await expect(pruneBackups(backupDir(), 't', 1.5)).rejects.toBeInstanceOf(BadRequestError);
    expect(await pruneBackups(backupDir(), 't', 5)).toEqual([]);
    // Leftovers: a partial copy and an orphan data file older than the newest backup, a newer partial (in progress).
    fs.writeFileSync(path.join(tableDir(), 't-20240102T030406500Z-g1.tkt.partial'), 'old partial');
    fs.writeFileSync(path.join(tableDir(), 't-20240102T030401000Z-g1.tkt'), 'orphan');
    fs.writeFileSync(path.join(tableDir(), 't-20240102T030500000Z-g1.tkt.partial'), 'in progress');

    const deleted = await pruneBackups(backupDir(), 't', 2);
    expect(deleted.map((m) => m.name).sort()).toEqual(made.slice(0, 3).map((m) => m.name).sort());
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([made[4].name, made[3].name]);
    expect(backupFiles()).toEqual([
      `${made[3].name}.json`,
      `${made[3].name}.tkt`,
      `${made[4].name}.json`,
      `${made[4].name}.tkt`,
      't-20240102T030500000Z-g1.tkt.partial',
    ]);
    // Idle (no backup of the table runs): a leftover named after the newest, from a backup cut short while the clock ran ahead, goes too.
    expect(await pruneBackups(backupDir(), 't', 2, { idle: true })).toEqual([]);
    expect(backupFiles()).toEqual([`${made[3].name}.json`, `${made[3].name}.tkt`, `${made[4].name}.json`, `${made[4].name}.tkt`]);

    // With verify, a damaged newest backup does not count and is not deleted; the last good one stays.
    fs.writeFileSync(path.join(tableDir(), `${made[4].name}.tkt`), 'damaged');
    expect(await pruneBackups(backupDir(), 't', 1, { verify: true })).toEqual([]);
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([made[4].name, made[3].name]);
    // Without verify, keep 1 keeps the newest.
    expect((await pruneBackups(backupDir(), 't', 1)).map((m) => m.name)).toEqual([made[3].name]);
    expect(await pruneBackups(path.join(tmp.dir, 'nothing-here'), 't', 1)).toEqual([]);
    await t.close();
  });

  test('backup - retention that verifies until one survivor verifies never deletes the last good backup, and trusts a fresh one', async () => {
    const t = await open();
    const made: BackupManifest[] = [];
    for (let i = 0; i < 4; i++) {
      await t.put(`k${i}`, b(`v${i}`));
      made.push(await backupTable(t, backupDir(), { now: at(i * 1000) }));
    }
    // The two newest rotted on disk; keep 2 would otherwise delete the two good ones.
    fs.writeFileSync(path.join(tableDir(), `${made[3].name}.tkt`), 'rotted');
    fs.writeFileSync(path.join(tableDir(), `${made[2].name}.tkt`), 'rotted');
    const deleted = await pruneBackups(backupDir(), 't', 2, { verify: 'until-verified' });
    // Damaged ones neither count nor go; made[1] is the verified survivor, made[0] counts unread.
    expect(deleted).toEqual([]);
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([made[3], made[2], made[1], made[0]].map((m) => m.name));
    // A trusted fresh backup counts without a read (its file is damaged here, so a read would reject it) and is never deleted.
    await t.put('k9', b('v9'));
    // Sorts below made[3], as a backup can when made[3]'s manifest could not be read while it was taken (it is then not
    // "the newest" to come after): the manifest is moved away meanwhile.
    const fresh = await unseen([made[3]], () => backupTable(t, backupDir(), { now: at(2500) }));
    expect(fresh.createdAt < made[3].createdAt).toBe(true);
    fs.writeFileSync(path.join(tableDir(), `${fresh.name}.tkt`), 'x');
    const second = await pruneBackups(backupDir(), 't', 1, { verify: 'until-verified', trusted: [fresh.name] });
    expect(second.map((m) => m.name).sort()).toEqual([made[2].name, made[1].name, made[0].name].sort());
    expect((await listBackups(backupDir(), 't')).map((m) => m.name)).toEqual([made[3].name, fresh.name]);
    // Trusted but older than `keep` allows: still kept.
    const older = await unseen([made[3], fresh], () => backupTable(t, backupDir(), { now: at(100) }));
    expect(await pruneBackups(backupDir(), 't', 1, { verify: 'until-verified', trusted: [older.name] })).toEqual([]);
    await t.close();
  });

  test('backup - closing the table cancels a backup under way: it rejects TableClosedError and leaves no file', async () => {
    // In-process copy: held at its first write, then the table is closed.
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 2000; i++) await t.put(`k${i}`, b(`v${i}`));
    const gate = ffs.hold('write');
    const backup = backupTable(t, backupDir(), { now: at(1) }).catch((err: unknown) => err);
    await gate.reached;
    const closing = t.close();
    gate.release();
    expect(await backup).toMatchObject({ name: 'TableClosedError', details: { table: 't', during: 'backup' } });
    await closing;
    expect(backupFiles()).toEqual([]);

    // A table big enough for the copy in worker threads, closed at once: the
    // backup stops at its first step (that the workers themselves stop is
    // tested in source-worker.test.ts).
    fs.rmSync(dataDir(), { recursive: true });
    const big = await open();
    const value = Buffer.alloc(1000, 'v');
    for (let i = 0; big.durableLength < WORKER_MIN_BYTES * 2; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => big.put(`k${i + j}`, value)));
    const records = big.stats().records;
    const cancelled = backupTable(big, backupDir(), { now: at(2) }).catch((err: unknown) => err);
    await big.close();
    expect(await cancelled).toMatchObject({ name: 'TableClosedError', details: { during: 'backup' } });
    expect(backupFiles()).toEqual([]);
    const again = await open();
    expect(again.stats().records).toBe(records);
    const m = await backupTable(again, backupDir(), { now: at(3) });
    expect(await verifyBackup(m, backupDir())).toEqual({ ok: true, problems: [] });
    await again.close();
  });

  test('backup - backup and compaction of one table never run at the same time', async () => {
    const ffs = new FaultyFs();
    const t = await open(ffs);
    for (let i = 0; i < 100; i++) await t.put(`k${i}`, b(`value-${i}`));
    const gate = ffs.hold('read');
    const backup = backupTable(t, backupDir(), { now: at(1) });
    await gate.reached;
    await expect(t.compact()).rejects.toBeInstanceOf(MaintenanceConflictError);
    await expect(backupTable(t, backupDir(), { now: at(2) })).rejects.toMatchObject({
      code: 'MAINTENANCE_CONFLICT',
      details: { requested: 'backup', running: 'backup' },
    });
    gate.release();
    await backup;

    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const compaction = t.compact({ onStep: (step) => (step === 'started' ? held : undefined) });
    await expect(backupTable(t, backupDir(), { now: at(3) })).rejects.toMatchObject({
      code: 'MAINTENANCE_CONFLICT',
      details: { requested: 'backup', running: 'compaction' },
    });
    release();
    await compaction;
    expect((await backupTable(t, backupDir(), { now: at(4) })).generation).toBe(2);
    await t.close();
    await expect(backupTable(t, backupDir(), { now: at(5) })).rejects.toBeInstanceOf(TableClosedError);
  });
});
