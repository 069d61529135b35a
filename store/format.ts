/**
 * The table file format, version 1 (all integers little-endian).
 *
 * File header, 16 bytes:
 *
 * | bytes | field                                        |
 * |-------|----------------------------------------------|
 * | 0-3   | magic, ASCII `TKT1`                          |
 * | 4-5   | format version, u16 = 1                      |
 * | 6-7   | flags, u16 = 0                               |
 * | 8-11  | generation, u32 (1 for a new table; +1 per compaction) |
 * | 12-15 | crc32 of bytes 0-11                          |
 *
 * Record, a 20-byte header then the key then the value:
 *
 * | bytes | field                                                   |
 * |-------|---------------------------------------------------------|
 * | 0-3   | crc32 of every byte of the record after this field      |
 * | 4     | kind, u8: 1 = put, 2 = delete                           |
 * | 5     | flags, u8 = 0                                           |
 * | 6-7   | key length, u16, UTF-8 bytes, 1..1024                   |
 * | 8-11  | value length, u32 (0 for a delete)                      |
 * | 12-19 | sequence number, u64 as lo u32 + hi u32                 |
 *
 * Sequence numbers increase by one per record over the table's whole life,
 * across reopen and (later) compaction, so that copies of a table can be
 * merged by sequence. They are plain JS numbers: exact up to 2^53.
 *
 * This module only encodes and decodes bytes; it does no I/O.
 */
import { crc32 } from 'node:zlib';

/** ASCII `TKT1`, the first four bytes of every table file. */
export const FILE_MAGIC = 'TKT1';
/** The only format version this code reads and writes. */
export const FORMAT_VERSION = 1;
/** Size of the file header in bytes. */
export const FILE_HEADER_BYTES = 16;
/** Size of a record's fixed header in bytes (key and value follow it). */
export const RECORD_HEADER_BYTES = 20;
/** Longest key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;
/** Largest value length the u32 field can hold. */
export const MAX_VALUE_FIELD = 0xffffffff;
/** Record kind: the key now has this value. */
export const KIND_PUT = 1;
/** Record kind: the key no longer exists (a tombstone, no value). */
export const KIND_DELETE = 2;

/** A record kind. */
export type RecordKind = typeof KIND_PUT | typeof KIND_DELETE;

const TWO_32 = 0x100000000;
// Below this many bytes a table-driven CRC in JS beats zlib.crc32, whose fixed
// cost per call (argument checks, a subarray, the native call) is ~350 ns;
// measured crossover ~250 bytes.
const JS_CRC_MAX_BYTES = 256;
const CRC_TABLE = makeCrcTable();
const MAGIC_BYTES = Buffer.from(FILE_MAGIC, 'latin1');

/** The decoded fields of a file header. */
export interface FileHeader {
  version: number;
  flags: number;
  generation: number;
}

/** Encodes a version-1 file header for the given generation. */
export function encodeFileHeader(generation: number): Buffer {
  if (!Number.isInteger(generation) || generation < 1 || generation > 0xffffffff) {
    throw new RangeError(`generation must be an integer in 1..2^32-1, got ${generation}`);
  }
  const buf = Buffer.alloc(FILE_HEADER_BYTES);
  MAGIC_BYTES.copy(buf, 0);
  buf.writeUInt16LE(FORMAT_VERSION, 4);
  buf.writeUInt16LE(0, 6);
  buf.writeUInt32LE(generation, 8);
  buf.writeUInt32LE(crc32(buf.subarray(0, 12)), 12);
  return buf;
}

/**
 * Decodes a file header. Returns the header, or a string saying why the bytes
 * are not a valid version-1 header (the caller turns it into an error with the
 * table name; the offset is always 0).
 */
export function decodeFileHeader(buf: Buffer): FileHeader | string {
  if (buf.length < FILE_HEADER_BYTES) return `file is ${buf.length} bytes, shorter than the ${FILE_HEADER_BYTES}-byte header`;
  if (!buf.subarray(0, 4).equals(MAGIC_BYTES)) return `bad magic ${JSON.stringify(buf.toString('latin1', 0, 4))}`;
  if (buf.readUInt32LE(12) !== crc32(buf.subarray(0, 12))) return 'header checksum mismatch';
  const version = buf.readUInt16LE(4);
  if (version !== FORMAT_VERSION) return `unsupported format version ${version}`;
  const flags = buf.readUInt16LE(6);
  if (flags !== 0) return `unknown header flags 0x${flags.toString(16)}`;
  return { version, flags, generation: buf.readUInt32LE(8) };
}

/** Total encoded size of a record with these key and value lengths. */
export function recordBytes(keyBytes: number, valueBytes: number): number {
  return RECORD_HEADER_BYTES + keyBytes + valueBytes;
}

/**
 * Encodes one record into `target` at `pos` and returns its length. The
 * caller guarantees the room (`recordBytes(keyBytes, value.length)`), that
 * `keyBytes` is the key's UTF-8 length, and that the key is valid.
 */
export function encodeRecord(
  target: Buffer,
  pos: number,
  kind: RecordKind,
  seq: number,
  key: string,
  keyBytes: number,
  value: Uint8Array | undefined,
): number {
  const valueBytes = value === undefined ? 0 : value.length;
  const length = RECORD_HEADER_BYTES + keyBytes + valueBytes;
  target[pos + 4] = kind;
  target[pos + 5] = 0;
  target.writeUInt16LE(keyBytes, pos + 6);
  target.writeUInt32LE(valueBytes, pos + 8);
  // u64 as two u32 halves: number arithmetic is exact below 2^53.
  target.writeUInt32LE(seq % TWO_32, pos + 12);
  target.writeUInt32LE(Math.floor(seq / TWO_32), pos + 16);
  target.write(key, pos + RECORD_HEADER_BYTES, keyBytes, 'utf8');
  if (value !== undefined && valueBytes > 0) target.set(value, pos + RECORD_HEADER_BYTES + keyBytes);
  // The checksum goes last: it covers everything written above.
  target.writeUInt32LE(crc32Range(target, pos + 4, pos + length), pos);
  return length;
}

/** Reads the u64 sequence number of the record whose header starts at `pos`. */
export function readSeq(buf: Buffer, pos: number): number {
  return buf.readUInt32LE(pos + 12) + buf.readUInt32LE(pos + 16) * TWO_32;
}

/**
 * Checks the fixed fields of a record header at `pos` (which must have
 * RECORD_HEADER_BYTES readable bytes). Returns undefined when they are
 * plausible, otherwise the reason. Does not check the checksum.
 */
export function checkRecordHeader(buf: Buffer, pos: number): string | undefined {
  const kind = buf[pos + 4];
  if (kind !== KIND_PUT && kind !== KIND_DELETE) return `invalid record kind ${kind}`;
  if (buf[pos + 5] !== 0) return `unknown record flags 0x${buf[pos + 5].toString(16)}`;
  const keyBytes = buf.readUInt16LE(pos + 6);
  if (keyBytes === 0 || keyBytes > MAX_KEY_BYTES) return `invalid key length ${keyBytes}`;
  if (kind === KIND_DELETE && buf.readUInt32LE(pos + 8) !== 0) return 'delete record with a value';
  return undefined;
}

/** Total length of the record whose (plausible) header starts at `pos`. */
export function recordLengthAt(buf: Buffer, pos: number): number {
  return RECORD_HEADER_BYTES + buf.readUInt16LE(pos + 6) + buf.readUInt32LE(pos + 8);
}

/** True when the stored checksum of the complete record at `pos` matches its bytes. */
export function recordChecksumOk(buf: Buffer, pos: number, length: number): boolean {
  return buf.readUInt32LE(pos) === crc32Range(buf, pos + 4, pos + length);
}

/** CRC-32 (the zlib polynomial, same result as zlib.crc32) of buf[start, end). */
export function crc32Range(buf: Buffer, start: number, end: number): number {
  if (end - start > JS_CRC_MAX_BYTES) return crc32(buf.subarray(start, end));
  // Slicing-by-16: CRC_TABLE[k * 256 + b] is the CRC of byte b followed by k zero bytes.
  const t = CRC_TABLE;
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
}

function makeCrcTable(): Int32Array {
  const t = new Int32Array(256 * 16);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 16; k++) {
      c = t[c & 255] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}
