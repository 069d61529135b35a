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
import { recordCrc } from './crc';

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
/** Checksums for this thread: records are checked one by one, and chunks of them at once (see crc.ts). */
const RECORD_CRC = recordCrc();
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

/**
 * Little-endian u16 at `i`. Buffer's readUInt16LE/readUInt32LE check their
 * arguments and are not inlined into the scan loops: ~11-20 ns a call there
 * against ~3 ns for these, several calls per record.
 */
export function u16(buf: Uint8Array, i: number): number {
  return buf[i] | (buf[i + 1] << 8);
}

/** Little-endian u32 at `i` (see u16). */
export function u32(buf: Uint8Array, i: number): number {
  return (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16)) + buf[i + 3] * 0x1000000;
}

/** Reads the u64 sequence number of the record whose header starts at `pos`. */
export function readSeq(buf: Buffer, pos: number): number {
  return u32(buf, pos + 12) + u32(buf, pos + 16) * TWO_32;
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
  const keyBytes = u16(buf, pos + 6);
  if (keyBytes === 0 || keyBytes > MAX_KEY_BYTES) return `invalid key length ${keyBytes}`;
  if (kind === KIND_DELETE && u32(buf, pos + 8) !== 0) return 'delete record with a value';
  return undefined;
}

/** Total length of the record whose (plausible) header starts at `pos`. */
export function recordLengthAt(buf: Buffer, pos: number): number {
  return RECORD_HEADER_BYTES + u16(buf, pos + 6) + u32(buf, pos + 8);
}

/** True when the stored checksum of the complete record at `pos` matches its bytes. */
export function recordChecksumOk(buf: Buffer, pos: number, length: number): boolean {
  return u32(buf, pos) === crc32Range(buf, pos + 4, pos + length);
}

/**
 * The end of the run of whole, plausible records that starts at `start` in
 * buf[start, end), when every checksum in it holds (all checked at once: see
 * crc.ts); `start` when one fails or no whole record is there. A reader that
 * then walks the same records need not check their checksums one by one.
 */
export function checkedRunEnd(buf: Buffer, start: number, end: number): number {
  let p = start;
  let acc = 0;
  while (p + RECORD_HEADER_BYTES <= end && checkRecordHeader(buf, p) === undefined) {
    const length = recordLengthAt(buf, p);
    if (p + length > end) break;
    acc = RECORD_CRC.fold(acc, buf, p, length);
    p += length;
  }
  return p > start && RECORD_CRC.spanHolds(acc, buf, start, p) ? p : start;
}

/** CRC-32 (the zlib polynomial, same result as zlib.crc32) of buf[start, end). */
export function crc32Range(buf: Buffer, start: number, end: number): number {
  return RECORD_CRC.crc32(buf, start, end);
}
