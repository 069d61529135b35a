import * as fs from 'node:fs';
import * as path from 'node:path';
import { countLiveKeys, FileScanItem, recordBytes, scanFile, TableFile, verifyFile } from '../../store';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();
const b = (s: string): Buffer => Buffer.from(s);

/** A table with four records: put a, put b, put a (overwrite), delete b. */
async function sample(file: string): Promise<number[]> {
  const t = await TableFile.open({ table: 't', path: file, generation: 4 });
  const offsets: number[] = [];
  const ops: [string, string | undefined][] = [['a', 'one'], ['b', 'two'], ['a', 'three'], ['b', undefined]];
  for (const [key, value] of ops) {
    offsets.push(t.stats().fileBytes);
    if (value === undefined) await t.delete(key);
    else await t.put(key, b(value));
  }
  await t.close();
  return offsets;
}

async function collect(file: string): Promise<FileScanItem[]> {
  const items: FileScanItem[] = [];
  for await (const item of scanFile(file)) items.push(item);
  return items;
}

describe('table file offline tools', () => {
  test('table file - scanFile yields the header and every record with its offset and sequence', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const offsets = await sample(file);
    expect(await collect(file)).toEqual([
      { type: 'header', header: { version: 1, flags: 0, generation: 4 }, damage: undefined },
      { type: 'record', offset: offsets[0], length: recordBytes(1, 3), kind: 'put', seq: 1, key: 'a', value: b('one') },
      { type: 'record', offset: offsets[1], length: recordBytes(1, 3), kind: 'put', seq: 2, key: 'b', value: b('two') },
      { type: 'record', offset: offsets[2], length: recordBytes(1, 5), kind: 'put', seq: 3, key: 'a', value: b('three') },
      { type: 'record', offset: offsets[3], length: recordBytes(1, 0), kind: 'delete', seq: 4, key: 'b', value: undefined },
    ]);
  });

  test('table file - TableFile.scan yields the same records from an open table', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await sample(file);
    const t = await TableFile.open({ table: 't', path: file });
    const fromTable = [];
    for await (const item of t.scan()) fromTable.push(item);
    expect(fromTable).toEqual((await collect(file)).slice(1));
    const fromThird = [];
    for await (const item of t.scan((fromTable[2] as { offset: number }).offset)) fromThird.push(item);
    expect(fromThird).toEqual(fromTable.slice(2));
    await t.close();
  });

  test('table file - verifyFile counts a clean file and lists damaged ranges without modifying the file', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const offsets = await sample(file);
    const clean = await verifyFile(file);
    expect(clean).toMatchObject({ ok: true, records: 4, puts: 3, deletes: 1, maxSeq: 4, damaged: [], header: { generation: 4 } });
    expect(clean.fileBytes).toBe(fs.statSync(file).size);

    // Damage in the middle: the range runs to the next valid record; the rest still counts.
    const bytes = fs.readFileSync(file);
    const mid = Buffer.from(bytes);
    mid[offsets[1] + 22] ^= 0xff;
    fs.writeFileSync(file, mid);
    const report = await verifyFile(file);
    expect(report).toMatchObject({ ok: false, records: 3, puts: 2, deletes: 1 });
    expect(report.damaged).toEqual([{ type: 'damage', start: offsets[1], end: offsets[2], reason: 'checksum mismatch', tail: false }]);
    expect(fs.readFileSync(file).equals(mid)).toBe(true);

    // A torn tail is a damaged range marked `tail`, which open would cut.
    const torn = bytes.subarray(0, bytes.length - 3);
    fs.writeFileSync(file, torn);
    const tail = await verifyFile(file);
    expect(tail.damaged).toEqual([
      { type: 'damage', start: offsets[3], end: torn.length, reason: 'incomplete record header at end of file', tail: true },
    ]);
    expect(tail.records).toBe(3);
    expect(fs.readFileSync(file).equals(torn)).toBe(true);

    // A damaged header is reported as [0, 16); the records after it are still checked.
    const badHeader = Buffer.from(bytes);
    badHeader[1] = 0;
    fs.writeFileSync(file, badHeader);
    const header = await verifyFile(file);
    expect(header.header).toBeUndefined();
    expect(header.damaged).toEqual([{ type: 'damage', start: 0, end: 16, reason: expect.stringMatching(/bad magic/), tail: false }]);
    expect(header.records).toBe(4);
  });

  test('table file - countLiveKeys replays a clean file and stops at the first damage, a torn tail included', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const offsets = await sample(file);
    expect(await countLiveKeys(file)).toEqual({ headerDamage: undefined, damage: undefined, records: 4, liveKeys: 1 });
    const bytes = fs.readFileSync(file);
    const mid = Buffer.from(bytes);
    mid[offsets[2] + 22] ^= 0xff;
    fs.writeFileSync(file, mid);
    expect(await countLiveKeys(file)).toMatchObject({ damage: { offset: offsets[2], reason: 'checksum mismatch' }, records: 2 });
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 3));
    expect((await countLiveKeys(file)).damage).toMatchObject({ offset: offsets[3] });
    const badHeader = Buffer.from(bytes);
    badHeader[1] = 0;
    fs.writeFileSync(file, badHeader);
    expect((await countLiveKeys(file)).headerDamage).toMatch(/bad magic/);
    expect(fs.readFileSync(file).equals(badHeader)).toBe(true);
  });

  test('table file - the scanner resynchronises across several damaged ranges in large files', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
    const offsets: number[] = [];
    for (let i = 0; i < 3000; i++) {
      offsets.push(t.stats().fileBytes);
      void t.put(`key-${i}`, Buffer.alloc(i % 7 === 0 ? 5000 : 100, i % 251));
    }
    await t.close();
    const bytes = fs.readFileSync(file);
    for (const i of [10, 11, 1500, 2999]) bytes[offsets[i] + 25] ^= 1;
    fs.writeFileSync(file, bytes);
    const report = await verifyFile(file);
    expect(report.records).toBe(2996);
    expect(report.damaged.map((d) => [d.start, d.end, d.tail])).toEqual([
      // Two adjacent damaged records make one range: it ends at the next valid record.
      [offsets[10], offsets[12], false],
      [offsets[1500], offsets[1501], false],
      [offsets[2999], bytes.length, true],
    ]);
  });
});
