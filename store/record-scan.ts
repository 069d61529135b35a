/**
 * Decoded records and damaged ranges of a table file, as an async iterator:
 * the form that dump, verify and (later) salvage and scrub consume. Each item
 * owns its key and value (copied out of the read buffer).
 */
import { KIND_PUT } from './format';
import { StoreFs } from './file-system';
import { RecordCursor } from './record-cursor';

/** A record whose checksum holds. */
export interface ScannedRecord {
  type: 'record';
  /** File offset of the record's first byte. */
  offset: number;
  /** Encoded length in bytes (header + key + value). */
  length: number;
  kind: 'put' | 'delete';
  seq: number;
  key: string;
  /** The value of a put; undefined for a delete. */
  value: Buffer | undefined;
}

/** Bytes that do not decode as valid records. */
export interface DamagedRange {
  type: 'damage';
  /** Offset of the first bad byte (the start of the record that failed). */
  start: number;
  /** Offset of the next valid record, or the end of the file. */
  end: number;
  /** Why the record at `start` failed (checksum mismatch, bad kind, runs past end, ...). */
  reason: string;
  /**
   * True when no valid record follows: open treats such a range as a torn
   * tail and truncates it; anywhere else damage is corruption.
   */
  tail: boolean;
}

/** One item of a scan. */
export type ScanItem = ScannedRecord | DamagedRange;

/**
 * Yields every record in [start, end) of an open file, in file order. After a
 * damaged record it resynchronises on the next offset where a valid record
 * begins, yields the damaged range, and goes on.
 */
export async function* scanRecords(sfs: StoreFs, fd: number, start: number, end: number): AsyncGenerator<ScanItem> {
  const cursor = new RecordCursor(sfs, fd, start, end);
  for (;;) {
    const step = cursor.step();
    if (step === 'record') {
      const r = cursor.record;
      // Copy out now: the cursor reuses its buffer on the next step or fill.
      yield {
        type: 'record',
        offset: r.offset,
        length: r.length,
        kind: r.kind === KIND_PUT ? 'put' : 'delete',
        seq: r.seq,
        key: r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes),
        value: r.kind === KIND_PUT ? Buffer.from(r.buf.subarray(r.valueStart, r.valueStart + r.valueBytes)) : undefined,
      };
    } else if (step === 'more') {
      await cursor.fill();
    } else if (step === 'end') {
      return;
    } else {
      const { offset, reason } = cursor.damage;
      const next = await cursor.resync();
      yield { type: 'damage', start: offset, end: next < 0 ? end : next, reason, tail: next < 0 };
    }
  }
}
