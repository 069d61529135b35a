import { encodeRecord, findRecordHeaders, KIND_DELETE, KIND_PUT, MAX_REPAIR_RECORD_BYTES, recordBytes, repairRecord } from '../../store';

const ANY = { above: 0, below: Infinity };

function record(kind: typeof KIND_PUT | typeof KIND_DELETE, seq: number, key: string, value?: string): Buffer {
  const v = value === undefined ? undefined : Buffer.from(value);
  const keyBytes = Buffer.byteLength(key);
  const buf = Buffer.alloc(recordBytes(keyBytes, v?.length ?? 0));
  encodeRecord(buf, 0, kind, seq, key, keyBytes, v);
  return buf;
}

describe('record repair', () => {
  test('record repair - every single flipped bit of a record is repaired to the exact bytes', () => {
    for (const rec of [record(KIND_PUT, 77, 'user:42', '{"name":"ada","n":[1,2,3]}'), record(KIND_DELETE, 5, 'k')]) {
      for (let bit = 0; bit < rec.length * 8; bit++) {
        const damaged = Buffer.from(rec);
        damaged[bit >> 3] ^= 1 << (bit & 7);
        const fixed = repairRecord(damaged, ANY);
        if (fixed === undefined || !fixed.equals(rec)) throw new Error(`bit ${bit} of a ${rec.length}-byte record was not repaired`);
      }
    }
  });

  test('record repair - two flipped bits are never taken for one', () => {
    const rec = record(KIND_PUT, 1000, 'order:9', 'x'.repeat(300));
    let tried = 0;
    for (let a = 0; a < rec.length * 8; a += 7) {
      for (let b = a + 1; b < rec.length * 8; b += 131) {
        const damaged = Buffer.from(rec);
        damaged[a >> 3] ^= 1 << (a & 7);
        damaged[b >> 3] ^= 1 << (b & 7);
        expect(repairRecord(damaged, ANY)).toBeUndefined();
        tried++;
      }
    }
    expect(tried).toBeGreaterThan(1000);
  });

  test('record repair - a repair must land inside the sequence bounds, and long or intact records are left alone', () => {
    const rec = record(KIND_PUT, 50, 'a', 'v');
    const damaged = Buffer.from(rec);
    damaged[21] ^= 4;
    expect(repairRecord(damaged, { above: 49, below: 51 })?.equals(rec)).toBe(true);
    expect(repairRecord(damaged, { above: 50, below: 60 })).toBeUndefined();
    expect(repairRecord(rec, ANY)).toBeUndefined();
    const big = record(KIND_PUT, 1, 'big', 'x'.repeat(MAX_REPAIR_RECORD_BYTES));
    big[40] ^= 1;
    expect(repairRecord(big, ANY)).toBeUndefined();
  });

  test('record repair - findRecordHeaders reads headers among garbage, in growing sequence order, inside the bounds', () => {
    const a = record(KIND_PUT, 10, 'alpha', '{"x":1}');
    const b = record(KIND_DELETE, 11, 'beta');
    const c = record(KIND_PUT, 12, 'gamma', '"g"');
    // Damage a's value and zero c's checksum: headers and keys still read.
    a[a.length - 2] ^= 0xff;
    c.fill(0, 0, 4);
    const junk = Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x00, 0x00]);
    const buf = Buffer.concat([junk, a, b, junk, c]);
    const found = findRecordHeaders(buf, 0, buf.length, 1000, { above: 9, below: 13 });
    expect(found.map((h) => [h.offset - 1000, h.seq, h.key, h.kind])).toEqual([
      [junk.length, 10, 'alpha', KIND_PUT],
      [junk.length + a.length, 11, 'beta', KIND_DELETE],
      [2 * junk.length + a.length + b.length, 12, 'gamma', KIND_PUT],
    ]);
    // Bounds exclude what cannot be between the neighbours.
    expect(findRecordHeaders(buf, 0, buf.length, 0, { above: 10, below: 12 }).map((h) => h.key)).toEqual(['beta']);
    // A key that is not valid UTF-8 is not a key.
    const bad = record(KIND_PUT, 10, 'ab', 'v');
    bad[20] = 0xc3;
    bad[21] = 0x28;
    expect(findRecordHeaders(bad, 0, bad.length, 0, ANY)).toEqual([]);
  });
});
