import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { backupTable, FILE_HEADER_BYTES, rebuildTable, RECORD_HEADER_BYTES, recordBytes, TableCorruptError, TableFile, verifyFile } from '../../store';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();
const b = (s: string): Buffer => Buffer.from(s);
const open = (file: string): Promise<TableFile> => TableFile.open({ table: 't', path: file });

/** Writes the given puts (and `null` = delete) into a new file; returns its bytes and each record's offset. */
async function build(file: string, ops: [string, string | null][]): Promise<{ bytes: Buffer; offsets: number[] }> {
  const t = await open(file);
  const offsets: number[] = [];
  for (const [key, value] of ops) {
    offsets.push(t.stats().fileBytes);
    if (value === null) await t.delete(key);
    else await t.put(key, b(value));
  }
  await t.close();
  return { bytes: fs.readFileSync(file), offsets };
}

/** Opens `bytes` as a table and expects corruption at `offset`. */
async function expectCorrupt(file: string, bytes: Buffer, offset: number, reason: RegExp): Promise<void> {
  fs.writeFileSync(file, bytes);
  const err = await open(file).then(
    (t) => t.close().then(() => undefined),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TableCorruptError);
  expect(err).toMatchObject({ code: 'TABLE_CORRUPT', table: 't', offset });
  expect((err as TableCorruptError).reason).toMatch(reason);
  // Corruption is reported, never repaired behind the caller's back.
  expect(fs.readFileSync(file).equals(bytes)).toBe(true);
}

describe('table file torn tail and corruption', () => {
  const OPS: [string, string | null][] = [
    ['alpha', 'first value'],
    ['beta', 'second'],
    ['alpha', 'overwritten value, 33 bytes long'],
  ];

  test('table file - a torn last put at every byte is cut off and earlier records survive', async () => {
    const src = path.join(tmp.dir, 'src.tkt');
    const { bytes, offsets } = await build(src, OPS);
    const last = offsets[2];
    const lastLength = recordBytes(5, 32);
    expect(bytes.length).toBe(last + lastLength);
    const warnings: unknown[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    for (let kept = 0; kept < lastLength; kept++) {
      const file = path.join(tmp.dir, `cut-${kept}.tkt`);
      fs.writeFileSync(file, bytes.subarray(0, last + kept));
      const t = await TableFile.open({ table: 't', path: file, logger });
      expect(t.openReport.tornTailBytes).toBe(kept);
      // The cut bytes are kept beside the table file, exactly.
      if (kept === 0) expect(t.openReport.tornTailFile).toBeUndefined();
      else expect(fs.readFileSync(t.openReport.tornTailFile!).subarray(FILE_HEADER_BYTES).equals(bytes.subarray(last, last + kept))).toBe(true);
      expect(t.openReport.records).toBe(2);
      expect(t.get('alpha')?.toString()).toBe('first value');
      expect(t.get('beta')?.toString()).toBe('second');
      // Once the cut record's header is whole, its number (3) is not handed out again.
      const seq = kept >= RECORD_HEADER_BYTES ? 3 : 2;
      expect(t.stats()).toMatchObject({ records: 2, fileRecords: 2, fileBytes: last, seq });
      expect(fs.statSync(file).size).toBe(last);
      // The table goes on normally after the cut.
      await t.put('gamma', b('after'));
      await t.close();
      const r = await open(file);
      expect(r.openReport.tornTailBytes).toBe(0);
      expect(r.get('gamma')?.toString()).toBe('after');
      expect(r.stats().seq).toBe(seq + 1);
      await r.close();
    }
    expect(warnings).toHaveLength(lastLength - 1);
    expect(warnings[4]).toMatchObject({ table: 't', bytes: 5, offset: last, msg: 'torn tail truncated' });
  });

  test('table file - a torn last delete at every byte leaves the key in place', async () => {
    const src = path.join(tmp.dir, 'src.tkt');
    const { bytes, offsets } = await build(src, [...OPS, ['beta', null]]);
    const last = offsets[3];
    expect(bytes.length - last).toBe(recordBytes(4, 0));
    for (let kept = 1; kept < bytes.length - last; kept++) {
      const file = path.join(tmp.dir, `cut-${kept}.tkt`);
      fs.writeFileSync(file, bytes.subarray(0, last + kept));
      const t = await open(file);
      expect(t.openReport.tornTailBytes).toBe(kept);
      expect(t.get('beta')?.toString()).toBe('second');
      expect(fs.statSync(file).size).toBe(last);
      await t.close();
    }
  });

  test('table file - a complete last record that did not reach the disk whole is a torn tail', async () => {
    const src = path.join(tmp.dir, 'src.tkt');
    const { bytes, offsets } = await build(src, OPS);
    const last = offsets[2];
    const cases: [string, (buf: Buffer) => void][] = [
      ['all zeros', (buf) => buf.fill(0, last)],
      ['zeroed second half', (buf) => buf.fill(0, last + 30)],
      ['flipped value byte', (buf) => (buf[buf.length - 1] ^= 0x01)],
      ['bad kind', (buf) => (buf[last + 4] = 9)],
    ];
    for (const [name, damage] of cases) {
      const copy = Buffer.from(bytes);
      damage(copy);
      const file = path.join(tmp.dir, `${name}.tkt`);
      fs.writeFileSync(file, copy);
      const t = await open(file);
      expect({ name, torn: t.openReport.tornTailBytes }).toEqual({ name, torn: bytes.length - last });
      // Kept for salvage unless there is nothing but zeros to keep.
      if (name === 'all zeros') expect(t.openReport.tornTailFile).toBeUndefined();
      else expect(fs.readFileSync(t.openReport.tornTailFile!).subarray(FILE_HEADER_BYTES).equals(copy.subarray(last))).toBe(true);
      // ... as a table file: the offline tools read it, and see the damaged record in it.
      if (name === 'flipped value byte') {
        const report = await verifyFile(t.openReport.tornTailFile!);
        expect(report).toMatchObject({ ok: false, header: { generation: 1 }, records: 0, damaged: [{ start: FILE_HEADER_BYTES, end: copy.length - last + FILE_HEADER_BYTES, reason: 'checksum mismatch' }] });
      }
      expect(t.get('alpha')?.toString()).toBe('first value');
      await t.close();
    }
  });

  test('table file - the number of a cut last record is not handed out again, so a later rebuild merging a backup that holds it loses nothing silently', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const backups = path.join(tmp.dir, 'backups');
    let t = await open(file);
    for (let i = 0; i < 10; i++) await t.put(`k${i}`, b(`"v${i}"`));
    await t.put('A', b('"a1"'));
    await t.put('A', b('"a2"'));
    const backup = await backupTable(t, backups);
    expect(backup.maxSeq).toBe(12);
    const aEnd = t.stats().fileBytes;
    await t.close();
    // Damage in the last record (acknowledged, and in the backup): the open takes it for a torn write.
    const bytes = fs.readFileSync(file);
    bytes[aEnd - 2] ^= 1;
    fs.writeFileSync(file, bytes);
    t = await open(file);
    expect(t.get('A')).toEqual(b('"a1"'));
    // Number 12 is the backup's "A = a2": the next record gets 13.
    expect(t.stats().seq).toBe(12);
    const bAt = t.stats().fileBytes;
    await t.put('B', b('"b1"'));
    expect(t.stats().seq).toBe(13);
    const bEnd = t.stats().fileBytes;
    await t.close();
    // B's value damaged past repair: B is in no backup, so the rebuild must report it lost.
    const again = fs.readFileSync(file);
    again[bEnd - 3] = 0;
    again[bEnd - 2] = 0;
    fs.writeFileSync(file, again);
    expect(bEnd - bAt).toBe(recordBytes(1, 4));
    const quarantined = path.join(tmp.dir, 'quarantined.tkt');
    fs.renameSync(file, quarantined);
    const report = await rebuildTable({ table: 't', damagedPath: quarantined, backupDir: backups, outPath: file });
    expect(report.lostKeys).toEqual(['B']);
    const r = await open(file);
    expect(r.get('B')).toBeUndefined();
    // A's acknowledged value comes back from the backup.
    expect(r.get('A')).toEqual(b('"a2"'));
    expect(r.get('k9')).toEqual(b('"v9"'));
    await r.close();
  });

  test('table file - when the cut bytes cannot be kept, the open fails, nothing is cut and no partial copy stays', async () => {
    const src = path.join(tmp.dir, 'src.tkt');
    const { bytes, offsets } = await build(src, OPS);
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 1] ^= 0x01; // the last record no longer checks out
    const file = path.join(tmp.dir, 't.tkt');
    fs.writeFileSync(file, damaged);
    const ffs = new FaultyFs().failOn({ op: 'fdatasync', nth: 1, code: 'ENOSPC' });
    await expect(TableFile.open({ table: 't', path: file, fs: ffs })).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(fs.readFileSync(file).equals(damaged)).toBe(true);
    expect(fs.readdirSync(tmp.dir).filter((f) => f.includes('.torn-'))).toEqual([]);
    // Once there is room again the open keeps them, then cuts.
    const t = await open(file);
    expect(t.openReport.tornTailBytes).toBe(bytes.length - offsets[2]);
    expect(fs.readdirSync(tmp.dir).filter((f) => f.includes('.torn-'))).toHaveLength(1);
    await t.close();
  });

  test('table file - a flipped byte in an earlier record is corruption at that record', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const { bytes, offsets } = await build(file, [...OPS, ['delta', 'd'], ['gamma', 'g']]);
    const second = offsets[1];
    // Each field of the second record: crc, kind, flags, key length, value length, seq, key, value.
    const cases: [number, RegExp][] = [
      [second + 0, /checksum mismatch/],
      [second + 4, /invalid record kind/],
      [second + 5, /unknown record flags/],
      [second + 6, /checksum mismatch|invalid key length|runs past end/],
      [second + 9, /runs past end of file/],
      [second + 12, /checksum mismatch/],
      [second + 20, /checksum mismatch/],
      [offsets[2] - 1, /checksum mismatch/],
    ];
    for (const [at, reason] of cases) {
      const copy = Buffer.from(bytes);
      copy[at] ^= 0x10;
      await expectCorrupt(file, copy, second, reason);
    }
    // A length that points exactly at the end of the file is still not a tail:
    // valid records follow the damaged one's real end.
    const copy = Buffer.from(bytes);
    copy.writeUInt32LE(copy.length - second - 20 - 4, second + 8);
    await expectCorrupt(file, copy, second, /checksum mismatch/);
  });

  test('table file - a damaged file header is corruption at offset 0', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const { bytes } = await build(file, OPS);
    const cases: [(buf: Buffer) => Buffer, RegExp][] = [
      [(buf) => ((buf[0] = 0x58), buf), /bad magic/],
      [(buf) => ((buf[9] ^= 1), buf), /header checksum mismatch/],
      [(buf) => ((buf[15] ^= 1), buf), /header checksum mismatch/],
      [(buf) => buf.subarray(0, 10), /shorter than the 16-byte header/],
      [() => Buffer.alloc(0), /0 bytes/],
    ];
    for (const [damage, reason] of cases) await expectCorrupt(file, damage(Buffer.from(bytes)), 0, reason);
  });

  test('table file - a flipped value byte in an open table makes get and select throw, never a wrong value', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const t = await open(file);
    await t.put('a', b('aaaa'));
    await t.put('b', b('bbbb'));
    await t.put('c', b('cccc'));
    const offsetOfB = FILE_HEADER_BYTES + recordBytes(1, 4);
    const fd = fs.openSync(file, 'r+');
    try {
      fs.writeSync(fd, b('X'), 0, 1, offsetOfB + 20 + 1 + 2);
    } finally {
      fs.closeSync(fd);
    }
    expect(t.get('a')?.toString()).toBe('aaaa');
    expect(() => t.get('b')).toThrow(TableCorruptError);
    try {
      t.get('b');
    } catch (err) {
      expect(err).toMatchObject({ table: 't', offset: offsetOfB, reason: 'checksum mismatch' });
    }
    expect(() => t.select({ prefix: 'b' })).toThrow(TableCorruptError);
    expect(t.select({ prefix: 'c' }).items.map((i) => i.value.toString())).toEqual(['cccc']);
    expect(t.has('b')).toBe(true);
    await t.close();
  });
});
