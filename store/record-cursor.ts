/**
 * A sequential reader of the records of a table file, shared by open, verify,
 * dump and (later) salvage and scrub.
 *
 * It reads the file in large chunks (CHUNK_BYTES; one syscall per chunk, not
 * per record) and decodes records out of the chunk buffer synchronously, so a
 * scan of a million records costs a few dozen awaits, not a million:
 *
 * ```ts
 * for (;;) {
 *   const step = cursor.step();
 *   if (step === 'record') use(cursor.record);   // views valid until the next step/fill
 *   else if (step === 'more') await cursor.fill();
 *   else break;                                   // 'end' or 'damage'
 * }
 * ```
 *
 * After 'damage', `resync()` searches the following offsets for the next
 * record that is plausible and whose checksum holds, so callers can tell a
 * torn tail (nothing valid follows) from damage in the middle of the file.
 */
import { checkedRunEnd, checkRecordHeader, KIND_PUT, RecordKind, RECORD_HEADER_BYTES, readSeq, recordChecksumOk, recordLengthAt, u16 } from './format';
import { readFully, StoreFs } from './file-system';

/** Default size of one sequential read. */
export const CHUNK_BYTES = 8 * 1024 * 1024;
/**
 * Bytes of records whose checksums one step checks at once (see
 * checkedRunEnd): ~0.1 ms of work, so that a step stays short for callers
 * that slice their loops by time beside a serving table.
 */
const CHECK_RUN_BYTES = 256 * 1024;

/** Result of one `step()`. */
export type CursorStep = 'record' | 'more' | 'end' | 'damage';

/** The record decoded by the last successful `step()`; `buf` is the cursor's chunk buffer. */
export interface RecordView {
  offset: number;
  length: number;
  kind: RecordKind;
  seq: number;
  /** Chunk buffer holding the record; only valid until the next step() or fill(). */
  buf: Buffer;
  keyStart: number;
  keyBytes: number;
  valueStart: number;
  valueBytes: number;
}

/** Options of a RecordCursor beyond its range. */
export interface RecordCursorOptions {
  /**
   * False skips the checksum of each record (framing is still checked): for
   * a quick pre-pass whose results are only used if a checked pass over the
   * same bytes succeeds. Default true.
   */
  checksums?: boolean;
  /**
   * Sees every byte the cursor reads, once each and in file order (until a
   * resync after damage): buf[start, end) holds the file's bytes from
   * `position`. For a pass that also hashes what it scans.
   */
  onRead?: (buf: Buffer, start: number, end: number, position: number) => void;
}

/** Where and why the scan stopped at a record that is not valid. */
export interface DamageView {
  offset: number;
  reason: string;
}

/** A chunked, forward-only record reader over [start, end) of an open file. */
export class RecordCursor {
  /** The record decoded by the last 'record' step. */
  readonly record: RecordView;
  /** The damaged record found by the last 'damage' step. */
  readonly damage: DamageView = { offset: -1, reason: '' };
  private buf: Buffer;
  private bufStart: number;
  private bufLen = 0;
  private pos: number;
  // Bytes from `pos` the next fill() must make available (0 = one chunk).
  private need = 0;
  private readonly checksums: boolean;
  // File offset below which the records of the last run were all checked at once (see checkedRunEnd).
  private checkedTo = 0;
  // Records before this offset are checked one by one: the run over them did not hold.
  private batchFrom = 0;

  constructor(
    private readonly sfs: StoreFs,
    private readonly fd: number,
    start: number,
    /** File length: the scan never reads at or beyond it. */
    readonly end: number,
    private readonly chunkBytes: number = CHUNK_BYTES,
    private readonly options: RecordCursorOptions = {},
  ) {
    this.checksums = options.checksums ?? true;
    this.buf = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(end - start, RECORD_HEADER_BYTES)));
    this.pos = start;
    this.bufStart = start;
    this.record = { offset: 0, length: 0, kind: KIND_PUT, seq: 0, buf: this.buf, keyStart: 0, keyBytes: 0, valueStart: 0, valueBytes: 0 };
  }

  /** File offset of the next record (the end of the last good one). */
  get offset(): number {
    return this.pos;
  }

  /** Decodes the next record if it is wholly in the buffer. Synchronous. */
  step(): CursorStep {
    const pos = this.pos;
    if (pos >= this.end) return 'end';
    const p = pos - this.bufStart;
    const avail = this.bufLen - p;
    if (avail < RECORD_HEADER_BYTES) {
      if (pos + RECORD_HEADER_BYTES > this.end) return this.damaged(pos, 'incomplete record header at end of file');
      this.need = RECORD_HEADER_BYTES;
      return 'more';
    }
    const buf = this.buf;
    const bad = checkRecordHeader(buf, p);
    if (bad !== undefined) return this.damaged(pos, bad);
    const length = recordLengthAt(buf, p);
    if (pos + length > this.end) return this.damaged(pos, `record of ${length} bytes runs past end of file`);
    if (length > avail) {
      this.need = length;
      return 'more';
    }
    if (this.checksums && pos + length > this.checkedTo) {
      if (pos >= this.batchFrom) {
        // The checksums of the records of the next CHECK_RUN_BYTES, at once.
        const runTo = Math.min(this.bufLen, p + CHECK_RUN_BYTES);
        const runEnd = checkedRunEnd(buf, p, runTo);
        if (runEnd > p) this.checkedTo = this.bufStart + runEnd;
        else this.batchFrom = this.bufStart + runTo;
      }
      if (pos + length > this.checkedTo && !recordChecksumOk(buf, p, length)) return this.damaged(pos, 'checksum mismatch');
    }
    const r = this.record;
    r.offset = pos;
    r.length = length;
    r.kind = buf[p + 4] as RecordKind;
    r.seq = readSeq(buf, p);
    r.buf = buf;
    r.keyStart = p + RECORD_HEADER_BYTES;
    r.keyBytes = u16(buf, p + 6);
    r.valueStart = r.keyStart + r.keyBytes;
    r.valueBytes = length - RECORD_HEADER_BYTES - r.keyBytes;
    this.pos = pos + length;
    return 'record';
  }

  /** Refills the buffer from the current offset (after a 'more' step). */
  async fill(): Promise<void> {
    await this.load(this.pos, Math.max(this.need, RECORD_HEADER_BYTES));
    this.need = 0;
  }

  /**
   * After a 'damage' step: finds the first offset after the damaged record's
   * start where a plausible record with a good checksum begins, moves the
   * cursor there and returns it; returns -1 (cursor at end) when none exists.
   * Costs one header check per byte, plus a checksum for plausible headers.
   */
  async resync(): Promise<number> {
    for (let q = this.damage.offset + 1; q + RECORD_HEADER_BYTES <= this.end; q++) {
      if (q + RECORD_HEADER_BYTES > this.bufStart + this.bufLen) await this.load(q, RECORD_HEADER_BYTES);
      let p = q - this.bufStart;
      if (checkRecordHeader(this.buf, p) !== undefined) continue;
      const length = recordLengthAt(this.buf, p);
      if (q + length > this.end) continue;
      if (q + length > this.bufStart + this.bufLen) {
        await this.load(q, length);
        p = 0;
      }
      if (recordChecksumOk(this.buf, p, length)) {
        this.pos = q;
        return q;
      }
    }
    this.pos = this.end;
    return -1;
  }

  private damaged(offset: number, reason: string): CursorStep {
    this.damage.offset = offset;
    this.damage.reason = reason;
    return 'damage';
  }

  /** Makes [at, at + need) (clipped to the end) available, reading a whole chunk when possible. */
  private async load(at: number, need: number): Promise<void> {
    const want = Math.min(Math.max(this.chunkBytes, need), this.end - at);
    const old = this.buf;
    const target = want > old.length ? Buffer.allocUnsafe(want) : old;
    // Keep the bytes already read past `at` (the head of a record that straddled the chunk).
    const keepFrom = at - this.bufStart;
    let kept = 0;
    if (keepFrom >= 0 && keepFrom < this.bufLen) {
      kept = Math.min(this.bufLen - keepFrom, want);
      old.copy(target, 0, keepFrom, keepFrom + kept);
    }
    this.buf = target;
    const got = await readFully(this.sfs, this.fd, target, kept, want - kept, at + kept);
    this.options.onRead?.(target, kept, kept + got, at + kept);
    this.bufStart = at;
    this.bufLen = kept + got;
    this.record.buf = this.buf;
    if (this.bufLen < Math.min(need, this.end - at)) {
      throw Object.assign(new Error(`file shrank while being read (wanted ${want} bytes at ${at})`), { code: 'EIO' });
    }
  }
}
