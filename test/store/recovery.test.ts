import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  backupTable,
  BackupManifest,
  chooseBackup,
  copyBackupTo,
  FILE_HEADER_BYTES,
  KIND_DELETE,
  rebuildTable,
  RebuildReport,
  RecoveryFailedError,
  TableFile,
} from '../../store';
import { FailsFirstOpenOf, FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { contentsOf, recordsOf, sha256Of } from './recovery-helpers';

const tmp = useTempDir('tk-recovery-');
const b = (s: string): Buffer => Buffer.from(s);
const live = (): string => path.join(tmp.dir, 't.tkt');
const damaged = (): string => path.join(tmp.dir, 'quarantine.tkt');
const rebuilt = (): string => path.join(tmp.dir, 'rebuilt.tkt');
const backups = (): string => path.join(tmp.dir, 'backups');
const at = (ms: number): Date => new Date(Date.UTC(2024, 0, 2, 3, 4, 5) + ms);

async function open(): Promise<TableFile> {
  return TableFile.open({ table: 't', path: live(), sync: 'none' });
}

/** Writes `n` keys k000.. with values `<tag>:<i>`. */
async function fill(t: TableFile, from: number, to: number, tag: string): Promise<void> {
  for (let i = from; i < to; i++) await t.put(`k${String(i).padStart(3, '0')}`, b(`${tag}:${i}`));
}

/** Copies the live table file to the quarantine path and applies `damage` to its bytes there. */
function quarantineWith(damage: (bytes: Buffer) => Buffer | undefined): void {
  const bytes = fs.readFileSync(live());
  const out = damage(bytes);
  if (out !== undefined) fs.writeFileSync(damaged(), out);
}

function rebuild(damagedPath: string | undefined = damaged()): Promise<RebuildReport> {
  return rebuildTable({ table: 't', damagedPath, backupDir: backups(), outPath: rebuilt() });
}

describe('table rebuild', () => {
  test('recovery - an undamaged file and no backup rebuild to the same records, sequences and tombstones, generation + 1', async () => {
    const t = await open();
    await fill(t, 0, 20, 'a');
    await t.delete('k003');
    await t.put('k004', b('again'));
    await t.close();
    quarantineWith((bytes) => bytes);
    const report = await rebuild();
    const before = await contentsOf(live());
    const after = await contentsOf(rebuilt());
    expect(after.entries).toEqual(before.entries);
    expect(report).toMatchObject({ backupUsed: null, liveKeys: 19, records: 20, fromDamaged: 19, fromBackup: 0, lostRecords: 0, damagedRanges: [], degraded: false, generation: 2, maxSeq: 22 });
    expect(after).toMatchObject({ fileRecords: 20, generation: 2, seq: 22 });
    // The tombstone of k003 is kept, with its sequence number.
    expect((await recordsOf(rebuilt())).find((r) => r.key === 'k003')).toMatchObject({ kind: 'delete', seq: 21 });
  });

  test('recovery - damage to records the backup holds loses nothing, and the damaged file is never modified', async () => {
    const t = await open();
    await fill(t, 0, 30, 'a');
    await backupTable(t, backups(), { now: at(0) });
    await fill(t, 30, 40, 'b');
    await t.close();
    const recs = await recordsOf(live());
    // Zero three whole records in the middle of the backed-up part.
    quarantineWith((bytes) => bytes.fill(0, recs[10].offset, recs[13].offset));
    const sha = sha256Of(damaged());
    const report = await rebuild();
    expect(sha256Of(damaged())).toBe(sha);
    expect(report).toMatchObject({ lostRecords: 0, lostKeys: [], unidentifiedRanges: 0, liveKeys: 40, fromBackup: 3, fromDamaged: 37 });
    expect(report.damagedRanges).toEqual([{ start: recs[10].offset, end: recs[13].offset, reason: 'invalid record kind 0' }]);
    expect((await contentsOf(rebuilt())).entries).toEqual((await contentsOf(live())).entries);
  });

  test('recovery - a damaged record written after the backup loses its key: absent, reported, and kept dead by a tombstone', async () => {
    const t = await open();
    await fill(t, 0, 10, 'a');
    const m = await backupTable(t, backups(), { now: at(0) });
    await t.put('k002', b('newer'));
    await t.put('k100', b('only-after'));
    await t.close();
    const recs = await recordsOf(live());
    const newer = recs.find((r) => r.key === 'k002' && r.seq === 11)!;
    // Damage the value of the newer k002: its header and key still read.
    quarantineWith((bytes) => ((bytes[newer.offset + newer.length - 1] ^= 0xff), (bytes[newer.offset + newer.length - 2] ^= 0xff), bytes));
    const report = await rebuild();
    expect(report).toMatchObject({ lostRecords: 1, lostKeys: ['k002'], unidentifiedRanges: 0, liveKeys: 10 });
    const got = await contentsOf(rebuilt());
    expect(got.entries.has('k002')).toBe(false);
    expect(got.entries.get('k100')).toBe('only-after');
    // The tombstone beats the backup's older k002, also in a later rebuild from the rebuilt file and the same backup.
    expect((await recordsOf(rebuilt())).find((r) => r.key === 'k002')).toMatchObject({ kind: 'delete', seq: 11 });
    fs.renameSync(rebuilt(), damaged());
    const again = await rebuild();
    expect(again).toMatchObject({ backupUsed: m.name, lostRecords: 0 });
    expect((await contentsOf(rebuilt())).entries.has('k002')).toBe(false);
  });

  test('recovery - a flipped bit anywhere in a record is repaired, so nothing is lost even without a backup', async () => {
    const t = await open();
    await fill(t, 0, 12, 'a');
    await t.close();
    const recs = await recordsOf(live());
    const expected = (await contentsOf(live())).entries;
    const target = recs[5];
    for (const at of [0, 4, 6, 9, 13, 20, target.length - 1]) {
      quarantineWith((bytes) => ((bytes[target.offset + at] ^= 0x10), bytes));
      const report = await rebuild();
      expect(report).toMatchObject({ repairedRecords: 1, lostRecords: 0, lostKeys: [], liveKeys: 12 });
      expect((await contentsOf(rebuilt())).entries).toEqual(expected);
    }
  });

  test('recovery - a record with a flipped length bit is repaired even when more damage follows it', async () => {
    const t = await open();
    await fill(t, 0, 8, 'a');
    await t.close();
    const recs = await recordsOf(live());
    const expected = (await contentsOf(live())).entries;
    // Bit 1 of the value length of record 3 (it then claims 2 more bytes), bit 0 of the key length of
    // record 5 (one more key byte); the record after each is zeroed.
    for (const [at, bit] of [[recs[3].offset + 8, 1], [recs[5].offset + 6, 0]] as const) {
      const i = recs.findIndex((r) => r.offset <= at && at < r.offset + r.length);
      quarantineWith((bytes) => {
        bytes[at] ^= 1 << bit;
        return bytes.fill(0, recs[i + 1].offset, recs[i + 2].offset);
      });
      const report = await rebuild();
      expect(report).toMatchObject({ repairedRecords: 1, lostRecords: 1, unidentifiedRanges: 1 });
      const got = (await contentsOf(rebuilt())).entries;
      expect(got.get(recs[i].key)).toBe(expected.get(recs[i].key));
      // The zeroed record is unknown: its key shows its last intact state, here none.
      expect(got.has(recs[i + 1].key)).toBe(false);
    }
  });

  test('recovery - every record of a damaged range larger than the search window is named, none twice', async () => {
    const t = await open();
    for (let i = 0; i < 5000; i++) await t.put(`key-${i}`, b(JSON.stringify({ i, pad: 'p'.repeat(70) })));
    await t.close();
    const recs = await recordsOf(live());
    // Two bits of every checksum from record 500 to 4500 (not one: that would be repaired): one range of ~400 KiB.
    const from = 500;
    const to = 4500;
    quarantineWith((bytes) => {
      for (let i = from; i < to; i++) bytes.writeUInt32LE((bytes.readUInt32LE(recs[i].offset) ^ 0x00010001) >>> 0, recs[i].offset);
      return bytes;
    });
    const report = await rebuild();
    expect(report.damagedRanges).toEqual([{ start: recs[from].offset, end: recs[to].offset, reason: 'checksum mismatch' }]);
    expect(recs[to].offset - recs[from].offset).toBeGreaterThan(300 * 1024);
    expect(report).toMatchObject({ repairedRecords: 0, lostRecords: to - from, unidentifiedRanges: 0, liveKeys: 5000 - (to - from) });
    expect(report.lostKeys).toEqual(recs.slice(from, to).map((r) => r.key));
  });

  test('recovery - a deleted file is rebuilt from the backup alone; tombstones in the backup are kept', async () => {
    const t = await open();
    await fill(t, 0, 8, 'a');
    await t.delete('k001');
    await backupTable(t, backups(), { now: at(0) });
    await t.close();
    const report = await rebuild(path.join(tmp.dir, 'gone.tkt'));
    expect(report).toMatchObject({ damagedFileMissing: true, fromBackup: 7, fromDamaged: 0, liveKeys: 7, records: 8, degraded: false });
    expect((await recordsOf(rebuilt())).filter((r) => r.kind === 'delete').map((r) => r.key)).toEqual(['k001']);
    const none = await rebuild(undefined);
    expect(none).toMatchObject({ damagedFileMissing: true, liveKeys: 7 });
  });

  test('recovery - a zeroed header does not stop the record scan; the generation comes from the backup', async () => {
    const t = await open();
    await fill(t, 0, 5, 'a');
    await backupTable(t, backups(), { now: at(0) });
    await fill(t, 5, 9, 'b');
    await t.close();
    quarantineWith((bytes) => bytes.fill(0, 0, FILE_HEADER_BYTES));
    const report = await rebuild();
    expect(report.damagedRanges).toEqual([{ start: 0, end: FILE_HEADER_BYTES, reason: expect.stringMatching(/^header: bad magic/) }]);
    expect(report).toMatchObject({ liveKeys: 9, fromDamaged: 9, lostRecords: 0, generation: 2 });
    expect((await contentsOf(rebuilt())).entries.size).toBe(9);
  });

  test('recovery - a damaged newest backup is rejected and the older one used; with none left and nothing intact it is degraded', async () => {
    const t = await open();
    await fill(t, 0, 5, 'a');
    const older = await backupTable(t, backups(), { now: at(0) });
    await fill(t, 5, 10, 'b');
    const newer = await backupTable(t, backups(), { now: at(1000) });
    await t.close();
    const newerFile = path.join(backups(), 't', `${newer.name}.tkt`);
    const bytes = fs.readFileSync(newerFile);
    bytes[bytes.length - 3] ^= 1;
    fs.writeFileSync(newerFile, bytes);

    expect(await chooseBackup(backups(), 't')).toMatchObject({ manifest: { name: older.name }, rejected: [{ name: newer.name }] });
    const report = await rebuild(undefined);
    expect(report.backupUsed).toBe(older.name);
    expect(report.backupsRejected.map((r) => r.name)).toEqual([newer.name]);
    expect(report.backupsRejected[0].problems.join(' ')).toMatch(/sha256/);
    expect(report).toMatchObject({ liveKeys: 5, degraded: false });

    fs.rmSync(path.join(backups(), 't', `${older.name}.tkt`));
    quarantineWith((bytes) => bytes.fill(0x5a, FILE_HEADER_BYTES));
    const none = await rebuild();
    expect(none).toMatchObject({ backupUsed: null, liveKeys: 0, records: 0, degraded: true, unidentifiedRanges: 1, lostRecords: 1 });
    expect((await contentsOf(rebuilt())).entries.size).toBe(0);
  });

  test('recovery - a backup rejected only this time still counts for the generation, so a later rebuild never takes it for a copy of the rebuilt file', async () => {
    const t = await open();
    await fill(t, 0, 20, 'a');
    const older = await backupTable(t, backups(), { now: at(0) });
    await t.compact({});
    // Dead records: the newer backup (generation 2) is much longer than the rebuilt file will be.
    for (let i = 0; i < 100; i++) await t.put('k000', b(`over:${i}`));
    const newer = await backupTable(t, backups(), { now: at(1000) });
    await fill(t, 100, 110, 'fresh'); // in no backup
    await t.close();
    expect([older.generation, newer.generation]).toEqual([1, 2]);
    quarantineWith((bytes) => bytes.fill(0, 0, FILE_HEADER_BYTES));
    // The newer backup's open fails once: it is rejected, and the older one used.
    const first = await rebuildTable({ table: 't', damagedPath: damaged(), backupDir: backups(), outPath: rebuilt(), fs: new FailsFirstOpenOf(`${newer.name}.tkt`) });
    expect(first).toMatchObject({ backupUsed: older.name, backupsRejected: [{ name: newer.name }], lostRecords: 0 });
    expect(first.generation).toBeGreaterThan(newer.generation);
    // The rebuilt file is damaged where k103..k105 are (records newer than every backup, at
    // offsets the newer backup's length spans); that backup verifies this time and is used.
    const recs = await recordsOf(rebuilt());
    const from = recs.findIndex((r) => r.key === 'k103');
    const to = recs.findIndex((r) => r.key === 'k106');
    expect(recs[to].offset).toBeLessThan(newer.length);
    fs.writeFileSync(damaged(), fs.readFileSync(rebuilt()).fill(0, recs[from].offset, recs[to].offset));
    const second = await rebuild();
    expect(second).toMatchObject({ backupUsed: newer.name, lostRecords: 1, unidentifiedRanges: 1 });
    expect([...(await contentsOf(rebuilt())).entries.keys()].filter((k) => k >= 'k103' && k < 'k106')).toEqual([]);
  });

  test('recovery - a file truncated mid-record loses only the cut record, named by its key', async () => {
    const t = await open();
    await fill(t, 0, 6, 'a');
    await t.put('k002', b('last'));
    await t.close();
    const recs = await recordsOf(live());
    const last = recs[recs.length - 1];
    quarantineWith((bytes) => bytes.subarray(0, last.offset + 25));
    const report = await rebuild();
    expect(report).toMatchObject({ lostKeys: ['k002'], lostRecords: 1, liveKeys: 5 });
    expect(report.damagedRanges).toEqual([{ start: last.offset, end: last.offset + 25, reason: expect.stringMatching(/runs past end/) }]);
  });

  test('recovery - a failed write leaves nothing at the output path and rejects RecoveryFailedError', async () => {
    const t = await open();
    await fill(t, 0, 5, 'a');
    await t.close();
    quarantineWith((bytes) => bytes);
    const ffs = new FaultyFs().failOn({ op: 'fdatasync', nth: 1 });
    const err = await rebuildTable({ table: 't', damagedPath: damaged(), backupDir: backups(), outPath: rebuilt(), fs: ffs }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RecoveryFailedError);
    expect(fs.readdirSync(tmp.dir).sort()).toEqual(['quarantine.tkt', 't.tkt']);
  });

  test('recovery - the output must not be the damaged file', async () => {
    await expect(rebuildTable({ table: 't', damagedPath: live(), backupDir: backups(), outPath: live() })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});

describe('exact rollback', () => {
  async function oneBackup(): Promise<BackupManifest> {
    const t = await open();
    await fill(t, 0, 7, 'a');
    await t.delete('k002');
    const m = await backupTable(t, backups(), { now: at(0) });
    await fill(t, 7, 9, 'b');
    await t.close();
    return m;
  }

  test('recovery - copyBackupTo puts the exact backup bytes in place', async () => {
    const m = await oneBackup();
    await copyBackupTo(m, backups(), rebuilt());
    expect(sha256Of(rebuilt())).toBe(m.sha256);
    expect((await contentsOf(rebuilt())).entries.size).toBe(6);
    expect(fs.existsSync(rebuilt() + '.restore')).toBe(false);
  });

  test('recovery - copyBackupTo refuses a backup whose bytes no longer match, leaving the target as it was', async () => {
    const m = await oneBackup();
    fs.writeFileSync(rebuilt(), 'previous');
    const file = path.join(backups(), 't', `${m.name}.tkt`);
    const bytes = fs.readFileSync(file);
    bytes[FILE_HEADER_BYTES + 2] ^= 1;
    fs.writeFileSync(file, bytes);
    await expect(copyBackupTo(m, backups(), rebuilt())).rejects.toBeInstanceOf(RecoveryFailedError);
    expect(fs.readFileSync(rebuilt(), 'utf8')).toBe('previous');
    expect(fs.existsSync(rebuilt() + '.restore')).toBe(false);
  });

  test('recovery - chooseBackup with no backups chooses none', async () => {
    expect(await chooseBackup(backups(), 't')).toEqual({ manifest: undefined, rejected: [] });
  });

  test('recovery - a rebuilt tombstone record is a plain delete record', async () => {
    const t = await open();
    await t.put('x', b('1'));
    await t.delete('x');
    await t.close();
    quarantineWith((bytes) => bytes);
    await rebuild();
    const recs = await recordsOf(rebuilt());
    expect(recs.map((r) => [r.kind, r.key, r.seq])).toEqual([['delete', 'x', 2]]);
    expect(KIND_DELETE).toBe(2);
  });
});
