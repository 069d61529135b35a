import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import {
  decodeFileHeader,
  encodeFileHeader,
  encodeRecord,
  KIND_DELETE,
  KIND_PUT,
  nodeStoreFs,
  RecordCursor,
  recordBytes,
  TableFile,
} from '../../store';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir();

describe('table file format', () => {
  test('table file - format v1 bytes are stable (golden)', () => {
    expect(encodeFileHeader(1).toString('hex')).toBe('544b54310100000001000000efac624c');
    const buf = Buffer.alloc(64);
    const n1 = encodeRecord(buf, 0, KIND_PUT, 1, 'k', 1, Buffer.from('v'));
    const n2 = encodeRecord(buf, n1, KIND_DELETE, 2 ** 32 + 5, 'k', 1, undefined);
    //                                       crc     kind flags keyLen valueLen  seq lo   seq hi   key value
    expect(buf.subarray(0, n1).toString('hex')).toBe('1004836b' + '01' + '00' + '0100' + '01000000' + '01000000' + '00000000' + '6b' + '76');
    expect(buf.subarray(n1, n1 + n2).toString('hex')).toBe('bd6ebf09' + '02' + '00' + '0100' + '00000000' + '05000000' + '01000000' + '6b');
    // The checksum is zlib's CRC-32 of everything after it.
    expect(buf.readUInt32LE(0)).toBe(crc32(buf.subarray(4, n1)));
    expect(n1).toBe(recordBytes(1, 1));
  });

  test('table file - header decoding names what is wrong', () => {
    expect(decodeFileHeader(encodeFileHeader(7))).toEqual({ version: 1, flags: 0, generation: 7 });
    const v2 = encodeFileHeader(1);
    v2.writeUInt16LE(2, 4);
    v2.writeUInt32LE(crc32(v2.subarray(0, 12)), 12);
    expect(decodeFileHeader(v2)).toBe('unsupported format version 2');
    expect(() => encodeFileHeader(0)).toThrow(RangeError);
  });

  test('table file - the cursor reads records that straddle chunks and records larger than a chunk', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
    const expected: [number, string, number][] = [];
    for (let i = 0; i < 300; i++) {
      const size = i % 10 === 0 ? 2500 : (i * 37) % 200;
      expected.push([t.stats().fileBytes, `k${i}`, size]);
      void t.put(`k${i}`, Buffer.alloc(size, i & 255));
    }
    await t.close();
    const fd = fs.openSync(file, 'r');
    try {
      for (const chunk of [64, 1000, 4096]) {
        const cursor = new RecordCursor(nodeStoreFs, fd, 16, fs.statSync(file).size, chunk);
        const seen: [number, string, number][] = [];
        for (;;) {
          const step = cursor.step();
          if (step === 'record') {
            const r = cursor.record;
            seen.push([r.offset, r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes), r.valueBytes]);
            expect(r.buf[r.valueStart]).toBe(r.valueBytes === 0 ? r.buf[r.valueStart] : (seen.length - 1) & 255);
          } else if (step === 'more') {
            await cursor.fill();
          } else {
            expect(step).toBe('end');
            break;
          }
        }
        expect(seen).toEqual(expected);
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  test('table file - the cursor stops at the damaged record, wherever in a chunk it is, having returned only the records before it', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
    const offsets: number[] = [];
    for (let i = 0; i < 3000; i++) {
      offsets.push(t.stats().fileBytes);
      void t.put(`k${i}`, Buffer.alloc(i % 50 === 0 ? 3000 : 20 + ((i * 37) % 200), i & 255));
    }
    await t.close();
    const good = fs.readFileSync(file);
    const size = good.length;
    // Past the 256 KiB the cursor checks at once, so damage falls in the first and in later runs.
    expect(size).toBeGreaterThan(2 * 256 * 1024);
    // The records that straddle the end of each such run, in a cursor that reads it all at once.
    const straddlers: number[] = [];
    for (let start = 0; start < offsets.length; ) {
      let next = start;
      while (next < offsets.length && (offsets[next + 1] ?? size) <= offsets[start] + 256 * 1024) next++;
      if (next < offsets.length) straddlers.push(next, next - 1);
      start = next;
    }
    expect(straddlers.length).toBeGreaterThan(2);
    const cases = [...new Set([...Array.from({ length: 40 }, (_, i) => i), ...straddlers, ...Array.from({ length: 30 }, (_, i) => 40 + i * 97)])];
    // In a cursor of 1000-byte chunks (records straddle them) and of 8 MiB (one chunk).
    for (const i of cases) {
      const bad = Buffer.from(good);
      // A byte of the value (or of the key, for records without one): framing stays plausible, the checksum fails.
      bad[(offsets[i + 1] ?? size) - 1] ^= 0x10;
      fs.writeFileSync(file, bad);
      const fd = fs.openSync(file, 'r');
      try {
        for (const chunk of [1000, 8 * 1024 * 1024]) {
          const cursor = new RecordCursor(nodeStoreFs, fd, 16, size, chunk);
          const seen: number[] = [];
          for (;;) {
            const step = cursor.step();
            if (step === 'record') seen.push(cursor.record.offset);
            else if (step === 'more') await cursor.fill();
            else {
              expect({ i, chunk, step, damage: cursor.damage }).toEqual({ i, chunk, step: 'damage', damage: { offset: offsets[i], reason: 'checksum mismatch' } });
              break;
            }
          }
          expect(seen).toEqual(offsets.slice(0, i));
        }
      } finally {
        fs.closeSync(fd);
      }
    }
  });
});
