/**
 * What can still be read inside the damaged ranges of a table file (for a
 * rebuild or a salvage; the byte-level checks are in record-repair.ts).
 *
 * Each damaged range lies between intact records whose sequence numbers
 * bound those of every record inside it. The range is split at the record
 * headers that can still be read, and each piece is explained as one of:
 * - a record with one flipped bit: repaired (it then counts as intact);
 * - an identified damaged record: its header and key can be read, but its
 *   checksum fails and it cannot be repaired;
 * - a stretch where no header can be read: records of unknown keys, whose
 *   sequence numbers lie between the pieces around it.
 */
import { MAX_KEY_BYTES, RECORD_HEADER_BYTES } from './format';
import { readFully, StoreFs } from './file-system';
import { findRecordHeaders, IdentifiedRecord, MAX_REPAIR_RECORD_BYTES, repairRecord, SeqBounds } from './record-repair';
import { TimeSlicer } from './time-slicer';

const SCAN_WINDOW_BYTES = 4 * 1024 * 1024;

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
  for (const range of ranges) await search.range(range);
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
      const bounds = { above, below };
      const claimedEnd = h.offset + h.length;
      if (claimedEnd <= pieceEnd) {
        // The header's own length first; then the whole piece (its length bytes may be the damaged ones).
        if (await this.repair(h.offset, claimedEnd, bounds)) {
          if (claimedEnd < pieceEnd) await this.stretch(range, claimedEnd, pieceEnd, { above: h.seq, below });
        } else if (!(claimedEnd < pieceEnd && (await this.repair(h.offset, pieceEnd, bounds)))) {
          this.found.identified.push({ ...h, range, above, below });
          if (claimedEnd < pieceEnd) await this.stretch(range, claimedEnd, pieceEnd, { above: h.seq, below });
        }
      } else if (!(await this.repair(h.offset, pieceEnd, bounds))) {
        this.found.identified.push({ ...h, range, above, below });
      }
      above = h.seq;
    }
  }

  /** A piece with no readable header: one record with a flipped bit, or a stretch of unknown records. */
  private async stretch(range: DamagedRange, start: number, end: number, bounds: SeqBounds): Promise<void> {
    if (await this.repair(start, end, bounds)) return;
    this.found.stretches.push({ range, start, end, above: bounds.above, below: bounds.below });
  }

  /** Repairs [start, end) as one record with one flipped bit. */
  private async repair(start: number, end: number, bounds: SeqBounds): Promise<boolean> {
    const length = end - start;
    if (length < RECORD_HEADER_BYTES || length > MAX_REPAIR_RECORD_BYTES) return false;
    const bytes = Buffer.alloc(length);
    if ((await readFully(this.sfs, this.fd, bytes, 0, length, start)) !== length) return false;
    const fixed = repairRecord(bytes, bounds);
    if (fixed === undefined) return false;
    this.found.repaired.push({ offset: start, bytes: fixed });
    return true;
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
