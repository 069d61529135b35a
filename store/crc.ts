/**
 * CRC-32 (zlib's polynomial: the same values as zlib.crc32) for records, and
 * a check of many records' checksums at once.
 *
 * Checking each short record on its own costs ~200 ns in JS (or as much in a
 * zlib.crc32 call, whose fixed cost per call dominates at ~160 bytes). Many
 * records can instead be checked with one native zlib.crc32 over the span
 * they fill, at ~5 GB/s, because a CRC is linear: the CRC of A || B is
 * x^(8|B|) * CRC(A) + CRC(B) mod P (zlib's crc32_combine). A record is its
 * stored checksum c (4 bytes) followed by the s bytes c covers; if c holds,
 * the CRC of the span so far grows by that record as
 *
 *   acc' = x^(8s) * crc4(acc, c) + c   (mod P, over GF(2))
 *
 * where crc4 runs the CRC on through the 4 bytes of c. So `fold` costs two
 * table lookups per byte of c and one multiplication by the constant x^(8s),
 * done as four lookups in a table made once per length s. If every record's
 * checksum holds, the folded value equals the span's real CRC. If exactly
 * one record's does not, they differ for certain (its error, times x^k, is
 * not zero mod P, since P does not divide x^k); with several bad records the
 * errors could cancel out, with odds of about 2^-32, the same odds with
 * which a single damaged record passes its own check. A span that does not
 * match is checked record by record to find the first bad one.
 *
 * `recordCrc` is self-contained (it imports nothing, and requires node:zlib
 * inside), so worker threads that run from source text get it as a
 * dependency (see runSourceWorker).
 */

/** What recordCrc makes. */
export interface RecordCrc {
  /** CRC-32 of buf[start, end). */
  crc32(buf: Uint8Array, start: number, end: number): number;
  /**
   * Folds the record at buf[pos, pos + length) (its stored checksum in its
   * first 4 bytes, little-endian) into `acc`, the CRC of the span's records
   * before it (0 for none), as if the record's checksum holds. The CRC is
   * kept as a signed 32-bit integer (`crc | 0`): a small integer to V8, so
   * that storing it never allocates.
   */
  fold(acc: number, buf: Uint8Array, pos: number, length: number): number;
  /**
   * True when `acc` (the fold of every record of buf[start, end)) says that
   * every record there holds its checksum (see the module doc for the odds).
   */
  spanHolds(acc: number, buf: Uint8Array, start: number, end: number): boolean;
}

/** Builds the tables: about 850 KiB (the CRC table, and per-length slots for record lengths under 64 KiB), plus 4 KiB for each record length folded, for at most `maxTables` lengths. */
export function recordCrc(maxTables = 512): RecordCrc {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const zlib = require('node:zlib') as typeof import('node:zlib');
  const POLY = 0xedb88320 | 0;
  // Below this many bytes the JS table loop beats zlib.crc32, whose fixed
  // cost per call (argument checks, a subarray, the native call) is ~350 ns;
  // measured crossover ~250 bytes.
  const JS_MAX_BYTES = 256;
  // Record lengths with a multiplication table (and a cached power) when short.
  const TABLE_LENGTHS = 65536;

  // Slicing by 16: t[k * 256 + b] is the CRC of byte b followed by k zero bytes.
  const t = new Int32Array(256 * 16);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? POLY ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 16; k++) {
      c = t[c & 255] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }

  const jsCrc = (buf: Uint8Array, start: number, end: number): number => {
    let c = -1;
    let i = start;
    for (; i + 16 <= end; i += 16) {
      const a = c ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
      c =
        t[3840 + (a & 255)] ^ t[3584 + ((a >>> 8) & 255)] ^ t[3328 + ((a >>> 16) & 255)] ^ t[3072 + (a >>> 24)] ^
        t[2816 + buf[i + 4]] ^ t[2560 + buf[i + 5]] ^ t[2304 + buf[i + 6]] ^ t[2048 + buf[i + 7]] ^
        t[1792 + buf[i + 8]] ^ t[1536 + buf[i + 9]] ^ t[1280 + buf[i + 10]] ^ t[1024 + buf[i + 11]] ^
        t[768 + buf[i + 12]] ^ t[512 + buf[i + 13]] ^ t[256 + buf[i + 14]] ^ t[buf[i + 15]];
    }
    for (; i < end; i++) c = t[(c ^ buf[i]) & 255] ^ (c >>> 8);
    return (c ^ -1) >>> 0;
  };
  const crc32 = (buf: Uint8Array, start: number, end: number): number =>
    end - start > JS_MAX_BYTES ? zlib.crc32(buf.subarray(start, end)) : jsCrc(buf, start, end);

  // a * b mod P, polynomials in zlib's bit order (x^0 in the top bit), as zlib's multmodp; a must not be 0
  // (callers pass a power of x there, never 0 mod P).
  const multmodp = (a: number, b: number): number => {
    let m = 0x80000000;
    let p = 0;
    for (;;) {
      if (a & m) {
        p ^= b;
        if ((a & (m - 1)) === 0) break;
      }
      m >>>= 1;
      b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
    }
    return p;
  };
  // x2n[k] = x^(2^k) mod P.
  const x2n = new Int32Array(32);
  x2n[0] = 1 << 30;
  for (let k = 1; k < 32; k++) x2n[k] = multmodp(x2n[k - 1], x2n[k - 1]);
  // x^(8n) mod P: the factor that moves a CRC past n bytes.
  const shiftOf = (n: number): number => {
    let p = 0x80000000 | 0;
    for (let k = 3; n > 0; k++, n = Math.floor(n / 2)) if (n % 2 === 1) p = multmodp(x2n[k & 31], p);
    return p;
  };
  // tables[s]: multiplication by x^(8s) as four byte-indexed tables (multiplication is linear in each factor).
  const tables: (Int32Array | null)[] = new Array<Int32Array | null>(TABLE_LENGTHS).fill(null);
  const shifts = new Int32Array(TABLE_LENGTHS);
  const shiftKnown = new Uint8Array(TABLE_LENGTHS);
  let made = 0;
  const tableOf = (s: number): Int32Array | null => {
    if (made >= maxTables) return null;
    const b = shiftOf(s);
    const m = new Int32Array(1024);
    for (let j = 0; j < 4; j++) {
      for (let v = 1; v < 256; v++) {
        const low = 31 - Math.clz32(v & -v);
        m[j * 256 + v] = m[j * 256 + (v & (v - 1))] ^ multmodp((1 << (8 * j + low)) >>> 0, b);
      }
    }
    made++;
    tables[s] = m;
    return m;
  };

  const fold = (acc: number, buf: Uint8Array, pos: number, length: number): number => {
    const c = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16) | (buf[pos + 3] << 24);
    // On through the 4 bytes of c.
    let a = ~acc ^ c;
    a = ~(t[768 + (a & 255)] ^ t[512 + ((a >>> 8) & 255)] ^ t[256 + ((a >>> 16) & 255)] ^ t[a >>> 24]);
    const s = length - 4;
    if (s < TABLE_LENGTHS) {
      const m = tables[s] ?? tableOf(s);
      if (m !== null) return m[a & 255] ^ m[256 + ((a >>> 8) & 255)] ^ m[512 + ((a >>> 16) & 255)] ^ m[768 + (a >>> 24)] ^ c;
      if (shiftKnown[s] === 0) {
        shifts[s] = shiftOf(s);
        shiftKnown[s] = 1;
      }
      return multmodp(shifts[s], a) ^ c;
    }
    return multmodp(shiftOf(s), a) ^ c;
  };

  const spanHolds = (acc: number, buf: Uint8Array, start: number, end: number): boolean =>
    (acc | 0) === (end > start ? zlib.crc32(buf.subarray(start, end)) | 0 : 0);

  return { crc32, fold, spanHolds };
}
