import { crc32 } from 'node:zlib';
import { recordCrc } from '../../store/crc';
import { SeededRandom } from '../helpers/rng';

/** Records laid end to end: each is a stored checksum (of the bytes after it) and then those bytes. */
function recordsOf(lengths: number[], r: SeededRandom): { buf: Buffer; starts: number[] } {
  const buf = Buffer.alloc(lengths.reduce((a, b) => a + b, 0));
  const starts: number[] = [];
  let at = 0;
  for (const n of lengths) {
    for (let i = 4; i < n; i++) buf[at + i] = r.int(256);
    buf.writeUInt32LE(crc32(buf.subarray(at + 4, at + n)), at);
    starts.push(at);
    at += n;
  }
  return { buf, starts };
}

function foldAll(rc: ReturnType<typeof recordCrc>, buf: Buffer, starts: number[], lengths: number[]): number {
  let acc = 0;
  for (let i = 0; i < starts.length; i++) acc = rc.fold(acc, buf, starts[i], lengths[i]);
  return acc >>> 0;
}

describe('record checksums', () => {
  test('crc32 matches zlib for every length and alignment, short and long', () => {
    const rc = recordCrc();
    const data = Buffer.alloc(700);
    for (let i = 0; i < data.length; i++) data[i] = (i * 151 + 17) & 255;
    for (let start = 0; start < 17; start++) {
      for (let end = start; end <= data.length; end += start + 1) {
        expect(rc.crc32(data, start, end)).toBe(crc32(data.subarray(start, end)));
      }
    }
  });

  test('the fold of valid records equals the span CRC, for short, long and repeated lengths', () => {
    const r = new SeededRandom(7);
    // Lengths from the smallest record (4 + 20 + 1) to past the per-length tables (65536 + 4).
    const lengths: number[] = [];
    for (let i = 0; i < 300; i++) lengths.push(25 + r.int(400));
    lengths.push(4096, 65539, 65540, 65541, 200_000, 25, 25, 25);
    const { buf, starts } = recordsOf(lengths, r);
    const rc = recordCrc();
    expect(foldAll(rc, buf, starts, lengths)).toBe(crc32(buf));
    expect(rc.spanHolds(foldAll(rc, buf, starts, lengths), buf, 0, buf.length)).toBe(true);
    // Any sub-span of whole records, not only one that starts at 0.
    const from = 10;
    const to = 200;
    let acc = 0;
    for (let i = from; i < to; i++) acc = rc.fold(acc, buf, starts[i], lengths[i]);
    expect(rc.spanHolds(acc, buf, starts[from], starts[to])).toBe(true);
    expect(rc.spanHolds(0, buf, 5, 5)).toBe(true);
  });

  test('past its table budget the fold gives the same values', () => {
    const r = new SeededRandom(11);
    const lengths: number[] = [];
    for (let i = 0; i < 120; i++) lengths.push(30 + i * 3);
    const { buf, starts } = recordsOf(lengths, r);
    // Two tables: almost every length takes the slower multiplication.
    expect(foldAll(recordCrc(2), buf, starts, lengths)).toBe(crc32(buf));
    expect(foldAll(recordCrc(0), buf, starts, lengths)).toBe(crc32(buf));
  });

  test('one changed bit anywhere in a span is always seen', () => {
    const r = new SeededRandom(3);
    const lengths = [25, 40, 33, 25, 90, 61];
    const { buf, starts } = recordsOf(lengths, r);
    const rc = recordCrc();
    for (let byte = 0; byte < buf.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        buf[byte] ^= 1 << bit;
        expect(rc.spanHolds(foldAll(rc, buf, starts, lengths), buf, 0, buf.length)).toBe(false);
        buf[byte] ^= 1 << bit;
      }
    }
    expect(rc.spanHolds(foldAll(rc, buf, starts, lengths), buf, 0, buf.length)).toBe(true);
  });

  test('damaged records anywhere in a large span are seen: random bytes, checksums swapped, bursts', () => {
    const r = new SeededRandom(99);
    const lengths: number[] = [];
    for (let i = 0; i < 2000; i++) lengths.push(25 + r.int(300));
    const { buf, starts } = recordsOf(lengths, r);
    const rc = recordCrc();
    for (let round = 0; round < 200; round++) {
      const copy = Buffer.from(buf);
      const kind = round % 3;
      if (kind === 0) {
        for (let n = 1 + r.int(3); n > 0; n--) copy[r.int(copy.length)] ^= 1 + r.int(255);
      } else if (kind === 1) {
        // Two records' checksums exchanged: each record is then wrong, though the bytes are all still there.
        const a = r.int(starts.length);
        const b = (a + 1 + r.int(starts.length - 1)) % starts.length;
        copy.writeUInt32LE(buf.readUInt32LE(starts[b]), starts[a]);
        copy.writeUInt32LE(buf.readUInt32LE(starts[a]), starts[b]);
      } else {
        const at = r.int(copy.length - 64);
        for (let i = 0; i < 1 + r.int(64); i++) copy[at + i] = r.int(256);
      }
      if (copy.equals(buf)) continue;
      expect(rc.spanHolds(foldAll(rc, copy, starts, lengths), copy, 0, copy.length)).toBe(false);
    }
  });
});
