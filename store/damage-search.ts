/**
 * What can still be read inside the damaged ranges of a table file (for a
 * rebuild or a salvage; the byte-level checks are in record-repair.ts).
 *
 * Each damaged range lies between intact records whose sequence numbers
 * bound those of every record inside it. The range is split at the record
 * headers that can still be read, and each piece is explained, from its
 * start, as:
 * - records with one flipped bit each: repaired (they then count as intact);
 * - an identified damaged record: its header and key can be read, but its
 *   checksum fails and it cannot be repaired;
 * - a stretch where no header can be read: records of unknown keys, whose
 *   sequence numbers lie between the pieces around it.
 */
import { MAX_KEY_BYTES, RECORD_HEADER_BYTES, readSeq } from './format';
import { readFully, StoreFs } from './file-system';
import { findRecordHeaders, IdentifiedRecord, MAX_REPAIR_RECORD_BYTES, repairRecord, SeqBounds } from './record-repair';
import { TimeSlicer } from './time-slicer';

// About a millisecond of header checks per window; the search yields between windows.
const SCAN_WINDOW_BYTES = 256 * 1024;

/** A damaged range of a file, between intact records. */
export interface DamagedRange extends SeqBounds {
  start: number;
  end: number;
  /** Why the first record of the range failed. */
  reason: string;
}

/** A piece of a damaged range from which no record header can be read. */
export interface Stretch extends SeqBounds {
  range: DamagedRange;
  start: number;
  end: number;
}

/** A record whose header and key can be read but whose checksum fails. */
export interface DamagedRecord extends IdentifiedRecord, SeqBounds {
  range: DamagedRange;
}

/** A record repaired by flipping one bit back. */
export interface RepairedRecord {
  offset: number;
  /** The record's corrected bytes (checksum holds). */
  bytes: Buffer;
}

/** Everything found in the damaged ranges. */
export interface DamageFindings {
  repaired: RepairedRecord[];
  identified: DamagedRecord[];
  stretches: Stretch[];
}

/** Searches every damaged range of the file open as `fd`. */
export async function searchDamage(sfs: StoreFs, fd: number, ranges: DamagedRange[], slicer: TimeSlicer): Promise<DamageFindings> {
  const search = new DamageSearch(sfs, fd, slicer);
  for (const range of ranges) {
    await search.range(range);
    if (slicer.dueNow()) await slicer.yield();
  }
  return search.found;
}

class DamageSearch {
  readonly found: DamageFindings = { repaired: [], identified: [], stretches: [] };

  constructor(
    private readonly sfs: StoreFs,
    private readonly fd: number,
    private readonly slicer: TimeSlicer,
  ) {}

  /** Splits a range at its readable headers and explains each piece. */
  async range(range: DamagedRange): Promise<void> {
    const headers = await this.headers(range);
    const first = headers[0];
    if (first === undefined || first.offset > range.start) {
      const end = first === undefined ? range.end : first.offset;
      await this.stretch(range, range.start, end, { above: range.above, below: first === undefined ? range.below : first.seq });
    }
    let above = range.above;
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i];
      const next = headers[i + 1];
      const pieceEnd = next === undefined ? range.end : next.offset;
      const below = next === undefined ? range.below : next.seq;
      const fixed = await this.repairAt(h.offset, pieceEnd, { above, below });
      if (fixed !== undefined) {
        if (fixed < pieceEnd) await this.stretch(range, fixed, pieceEnd, { above: h.seq, below });
      } else {
        this.found.identified.push({ ...h, range, above, below });
        const claimedEnd = h.offset + h.length;
        if (claimedEnd < pieceEnd) await this.stretch(range, claimedEnd, pieceEnd, { above: h.seq, below });
      }
      above = h.seq;
      if (this.slicer.dueNow()) await this.slicer.yield();
    }
  }

  /**
   * A piece with no readable header: records with a flipped bit are
   * repaired from its start, one after another; what remains is a stretch
   * of unknown records.
   */
  private async stretch(range: DamagedRange, start: number, end: number, bounds: SeqBounds): Promise<void> {
    let pos = start;
    let above = bounds.above;
    while (pos < end) {
      const fixed = await this.repairAt(pos, end, { above, below: bounds.below });
      if (fixed === undefined) {
        this.found.stretches.push({ range, start: pos, end, above, below: bounds.below });
        return;
      }
      above = readSeq(this.found.repaired[this.found.repaired.length - 1].bytes, 0);
      pos = fixed;
      if (this.slicer.dueNow()) await this.slicer.yield();
    }
  }

  /**
   * Repairs the record starting at `start` (ending by `limit`) as one with a
   * single flipped bit, and resolves where it ends, or undefined. Lengths
   * tried: the whole piece, the length its header states, and that length
   * with any one bit of the key or value length flipped (the flipped bit
   * may be in the length itself).
   */
  private async repairAt(start: number, limit: number, bounds: SeqBounds): Promise<number | undefined> {
    const room = Math.min(limit - start, MAX_REPAIR_RECORD_BYTES);
    if (room < RECORD_HEADER_BYTES) return undefined;
    const bytes = Buffer.alloc(room);
    const got = await readFully(this.sfs, this.fd, bytes, 0, room, start);
    const lengths = new Set<number>();
    if (limit - start === got) lengths.add(got);
    if (got >= RECORD_HEADER_BYTES) {
      const keyBytes = bytes.readUInt16LE(6);
      const valueBytes = bytes.readUInt32LE(8);
      lengths.add(RECORD_HEADER_BYTES + keyBytes + valueBytes);
      for (let b = 0; b < 16; b++) lengths.add(RECORD_HEADER_BYTES + (keyBytes ^ (1 << b)) + valueBytes);
      for (let b = 0; b < 32; b++) lengths.add(RECORD_HEADER_BYTES + keyBytes + ((valueBytes ^ (1 << b)) >>> 0));
    }
    for (const length of lengths) {
      if (length < RECORD_HEADER_BYTES || length > got) continue;
      const fixed = repairRecord(bytes.subarray(0, length), bounds);
      if (fixed !== undefined) {
        this.found.repaired.push({ offset: start, bytes: fixed });
        return start + length;
      }
    }
    return undefined;
  }

  /** The readable record headers of a range, read in windows (a range may be the whole file). */
  private async headers(range: DamagedRange): Promise<IdentifiedRecord[]> {
    const found: IdentifiedRecord[] = [];
    // Enough for a header that starts in one window to have its key read whole.
    const overlap = RECORD_HEADER_BYTES + MAX_KEY_BYTES;
    let pos = range.start;
    let above = range.above;
    while (pos + RECORD_HEADER_BYTES <= range.end) {
      const windowEnd = Math.min(range.end, pos + SCAN_WINDOW_BYTES + overlap);
      const last = windowEnd === range.end;
      const startBefore = last ? windowEnd : pos + SCAN_WINDOW_BYTES;
      const buf = Buffer.alloc(windowEnd - pos);
      const got = await readFully(this.sfs, this.fd, buf, 0, buf.length, pos);
      const more = findRecordHeaders(buf, 0, got, pos, { above, below: range.below }, startBefore - pos);
      for (const h of more) found.push(h);
      if (last) break;
      const tail = more[more.length - 1];
      if (tail !== undefined) above = tail.seq;
      pos = Math.max(startBefore, tail === undefined ? 0 : tail.offset + RECORD_HEADER_BYTES + tail.keyBytes);
      await this.slicer.yield();
    }
    return found;
  }
}
