import * as fs from 'node:fs';
import * as path from 'node:path';
import { FILE_HEADER_BYTES, nodeStoreFs, RecordCursor, TableFile } from '../../store';
import { checkRangeInWorker, RangeCheckResult } from '../../store/record-check-worker';
import { SeededRandom } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-check-');

/** What a record-by-record scan in this thread finds (the reference the worker must agree with), and the offsets of the records it read. */
async function scanHere(file: string): Promise<{ found: Omit<RangeCheckResult, 'liveKeys'>; offsets: number[] }> {
  const fd = await nodeStoreFs.open(file, 'r');
  try {
    const cursor = new RecordCursor(nodeStoreFs, fd, FILE_HEADER_BYTES, await nodeStoreFs.size(fd));
    const found: Omit<RangeCheckResult, 'liveKeys'> = { records: 0, maxSeq: 0 };
    const offsets: number[] = [];
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        found.records++;
        found.maxSeq = Math.max(found.maxSeq, cursor.record.seq);
        offsets.push(cursor.record.offset);
      } else if (step === 'more') await cursor.fill();
      else {
        if (step === 'damage') found.damage = { ...cursor.damage };
        return { found, offsets };
      }
    }
  } finally {
    await nodeStoreFs.close(fd);
  }
}

async function checkInWorker(file: string): Promise<RangeCheckResult> {
  const fd = fs.openSync(file, 'r');
  try {
    return await checkRangeInWorker({ fd, start: FILE_HEADER_BYTES, end: fs.statSync(file).size });
  } finally {
    fs.closeSync(fd);
  }
}

describe('record check worker', () => {
  // About 6 MiB of records of mixed sizes: the worker reads 4 MiB at a time, so some straddle its chunks.
  let file: string;
  let good: Buffer;
  let offsets: number[];
  beforeEach(async () => {
    file = path.join(tmp.dir, 't.tkt');
    const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
    const r = new SeededRandom(5);
    const puts: Promise<void>[] = [];
    for (let i = 0; i < 20000; i++) {
      if (i % 13 === 0) puts.push(t.delete(`key-${r.int(20000)}`).then(() => undefined));
      else puts.push(t.put(`key-${i}`, Buffer.alloc(r.chance(0.01) ? 20000 : 50 + r.int(400), i & 255)));
    }
    await Promise.all(puts);
    await t.close();
    good = fs.readFileSync(file);
    offsets = (await scanHere(file)).offsets;
  });

  test('record check worker - finds what a record-by-record scan finds in an intact file', async () => {
    const here = (await scanHere(file)).found;
    expect(here.damage).toBeUndefined();
    expect(here.records).toBe(offsets.length);
    expect(await checkInWorker(file)).toMatchObject(here);
  });

  test('record check worker - names the first damaged record, and counts only the records before it, wherever it is', async () => {
    const chunk = 4 * 1024 * 1024;
    const straddler = offsets.findIndex((o, i) => o < chunk && (offsets[i + 1] ?? Infinity) > chunk);
    const cases: { name: string; damage: (buf: Buffer) => void }[] = [
      { name: 'first record', damage: (buf) => (buf[offsets[0] + 25] ^= 1) },
      { name: 'a value mid-chunk', damage: (buf) => (buf[offsets[3000] + 22] ^= 0x80) },
      { name: 'a stored checksum', damage: (buf) => (buf[offsets[5000]] ^= 4) },
      { name: 'the record across the chunk boundary', damage: (buf) => (buf[offsets[straddler] + 21] ^= 2) },
      { name: 'the last record before the boundary', damage: (buf) => (buf[offsets[straddler - 1] + 21] ^= 2) },
      { name: 'the last record of the file', damage: (buf) => (buf[buf.length - 1] ^= 1) },
      {
        name: 'two records in one chunk',
        damage: (buf) => {
          buf[offsets[7000] + 30] ^= 1;
          buf[offsets[7100] + 30] ^= 1;
        },
      },
      {
        // The earlier checksum damage is the first damage, though the framing damage after it is found first.
        name: 'a checksum, then a bad kind, in one chunk',
        damage: (buf) => {
          buf[offsets[9000] + 40] ^= 1;
          buf[offsets[9010] + 4] = 9;
        },
      },
      { name: 'a bad kind alone', damage: (buf) => (buf[offsets[9010] + 4] = 9) },
      { name: 'a key length of zero', damage: (buf) => buf.writeUInt16LE(0, offsets[12000] + 6) },
      { name: 'the last record runs past the end', damage: (buf) => buf.writeUInt32LE(1 << 20, offsets[offsets.length - 1] + 8) },
      { name: 'a record mid-file claims more bytes than the file has', damage: (buf) => buf.writeUInt32LE(0x7fffffff, offsets[100] + 8) },
    ];
    expect(straddler).toBeGreaterThan(0);
    for (const c of cases) {
      const buf = Buffer.from(good);
      c.damage(buf);
      fs.writeFileSync(file, buf);
      const here = (await scanHere(file)).found;
      expect({ case: c.name, damage: here.damage }).toEqual({ case: c.name, damage: expect.objectContaining({ reason: expect.any(String) }) });
      const got = await checkInWorker(file);
      expect({ case: c.name, ...got }).toMatchObject({ case: c.name, ...here });
    }
  });
});
