/**
 * Reading what is left inside a damaged byte range of a table file: the
 * record headers that can still be read, and records that one flipped bit
 * made fail their checksum (which CRC-32 lets us repair exactly).
 *
 * Repair. CRC-32 is linear: flipping bit i of a record changes its checksum
 * by a value that depends only on i and the record's length, so the
 * "syndrome" (computed XOR stored checksum) names the flipped bit. For the
 * zlib polynomial the Hamming distance is 4 up to 91607 covered bits, so up
 * to that length a single flipped bit is located without ambiguity and two
 * flipped bits are never mistaken for one. A repair is accepted only when the
 * repaired bytes are a plausible record of exactly the expected length, with
 * a UTF-8 key and a sequence number inside the bounds its neighbours allow.
 *
 * Identification. A damaged record whose header and key bytes survived still
 * says which key it was written for and at which sequence number, even though
 * its checksum fails. A candidate header must have a valid kind, flags and
 * key length, a key that is valid UTF-8 and ends inside the range, and a
 * sequence number strictly between those of its neighbours (sequence numbers
 * grow in file order in every table file): random or zeroed bytes almost
 * never pass all of these at once.
 */
import { isUtf8 } from 'node:buffer';
import { checkRecordHeader, crc32Range, RecordKind, RECORD_HEADER_BYTES, readSeq, recordChecksumOk, recordLengthAt } from './format';

/** Longest record (checksum included) whose single flipped bit is repaired: 4 + 91607 / 8 bytes. */
export const MAX_REPAIR_RECORD_BYTES = 4 + Math.floor(91607 / 8);

/** A record header read inside a damaged range; the record itself failed its checksum. */
export interface IdentifiedRecord {
  /** File offset of the header. */
  offset: number;
  /** Length the header claims (may run past the range when the length bytes are damaged). */
  length: number;
  kind: RecordKind;
  seq: number;
  key: string;
  /** UTF-8 length of the key. */
  keyBytes: number;
}

/** Exclusive bounds on the sequence number of a record, from its intact neighbours. */
export interface SeqBounds {
  /** Every record here has a larger sequence number (0 when nothing is known). */
  above: number;
  /** Every record here has a smaller sequence number (Infinity when nothing is known). */
  below: number;
}

// Linear CRC register after one byte with only bit b set, from a zero register.
const SINGLE_BIT = makeSingleBitTable();
const BYTE_TABLE = makeByteTable();

/**
 * Tries to repair `rec` (one whole record, checksum field first) as a record
 * with exactly one flipped bit. Returns a repaired copy, or undefined when
 * the bytes are not such a record (or are longer than MAX_REPAIR_RECORD_BYTES).
 */
export function repairRecord(rec: Buffer, bounds: SeqBounds): Buffer | undefined {
  const n = rec.length;
  if (n < RECORD_HEADER_BYTES || n > MAX_REPAIR_RECORD_BYTES) return undefined;
  const stored = rec.readUInt32LE(0);
  const syndrome = (crc32Range(rec, 4, n) ^ stored) >>> 0;
  // Zero: the checksum holds over these bytes, so their damage is not a flipped bit.
  if (syndrome === 0) return undefined;
  const fixed = Buffer.from(rec);
  if ((syndrome & (syndrome - 1)) === 0) {
    // One bit of difference: the flipped bit is in the stored checksum itself.
    fixed.writeUInt32LE((stored ^ syndrome) >>> 0, 0);
  } else {
    const bit = locateFlippedBit(syndrome, n - 4);
    if (bit < 0) return undefined;
    fixed[4 + (bit >>> 3)] ^= 1 << (bit & 7);
  }
  if (checkRecordHeader(fixed, 0) !== undefined || recordLengthAt(fixed, 0) !== n) return undefined;
  if (!recordChecksumOk(fixed, 0, n)) return undefined;
  const seq = readSeq(fixed, 0);
  if (!(seq > bounds.above && seq < bounds.below)) return undefined;
  if (!isUtf8(fixed.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + fixed.readUInt16LE(6)))) return undefined;
  return fixed;
}

/**
 * The plausible record headers that start in buf[from, startBefore) and whose
 * key ends by `to` (file offset of buf[i] is `base + i`), in file order, each
 * with a sequence number above the previous one and inside `bounds`. After a
 * header the search goes on right after its key, so that a damaged length
 * field cannot hide the records behind it.
 */
export function findRecordHeaders(buf: Buffer, from: number, to: number, base: number, bounds: SeqBounds, startBefore: number = to): IdentifiedRecord[] {
  const found: IdentifiedRecord[] = [];
  let above = bounds.above;
  for (let p = from; p < startBefore && p + RECORD_HEADER_BYTES <= to; p++) {
    if (checkRecordHeader(buf, p) !== undefined) continue;
    const keyBytes = buf.readUInt16LE(p + 6);
    const keyEnd = p + RECORD_HEADER_BYTES + keyBytes;
    if (keyEnd > to) continue;
    const seq = readSeq(buf, p);
    if (!(seq > above && seq < bounds.below) || !Number.isSafeInteger(seq)) continue;
    const keyView = buf.subarray(p + RECORD_HEADER_BYTES, keyEnd);
    if (!isUtf8(keyView)) continue;
    found.push({
      offset: base + p,
      length: recordLengthAt(buf, p),
      // checkRecordHeader allowed only the two kinds.
      kind: buf[p + 4] as RecordKind,
      seq,
      key: keyView.toString('utf8'),
      keyBytes,
    });
    above = seq;
    p = keyEnd - 1;
  }
  return found;
}

/**
 * The bit (index into the covered bytes, 8 * byte + bit, LSB first) whose
 * flip changes the CRC of a `coveredBytes`-long message by `syndrome`, or -1.
 * Walks from the last byte backwards: the effect of a bit k bytes before the
 * end is its one-byte register followed by k zero bytes. 8 steps per byte.
 */
function locateFlippedBit(syndrome: number, coveredBytes: number): number {
  const t = BYTE_TABLE;
  const regs = Int32Array.from(SINGLE_BIT);
  const want = syndrome | 0;
  for (let k = 0; k < coveredBytes; k++) {
    for (let b = 0; b < 8; b++) {
      if (regs[b] === want) return (coveredBytes - 1 - k) * 8 + b;
      // One more zero byte after the bit.
      regs[b] = t[regs[b] & 0xff] ^ (regs[b] >>> 8);
    }
  }
  return -1;
}

function makeByteTable(): Int32Array {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
}

function makeSingleBitTable(): Int32Array {
  const t = makeByteTable();
  return Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7], (b) => t[1 << b]);
}
