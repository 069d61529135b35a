/**
 * Offline tools over a table file that is not open in a TableFile (for the
 * CLI's `verify` and `dump`). They open the file read-only and never modify it.
 */
import { decodeFileHeader, FILE_HEADER_BYTES, FileHeader, KIND_PUT } from './format';
import { nodeStoreFs, readFully, StoreFs } from './file-system';
import { pendingCutOf } from './cut-marker';
import { RecordCursor } from './record-cursor';
import { DamagedRange, scanRecords, ScanItem } from './record-scan';

/** The header item that starts a scanFile: the decoded header, or why it is not valid. */
export interface ScannedHeader {
  type: 'header';
  header: FileHeader | undefined;
  /** Set when the header is damaged; records are still scanned after it. */
  damage: string | undefined;
}

/** One item of scanFile: the header first, then records and damaged ranges in file order. */
export type FileScanItem = ScannedHeader | ScanItem;

/** What verifyFile found. */
export interface VerifyReport {
  path: string;
  fileBytes: number;
  /** Undefined when the header is damaged (then `damaged` starts with [0, 16)). */
  header: FileHeader | undefined;
  /** Records whose checksum holds. */
  records: number;
  puts: number;
  deletes: number;
  /** Highest sequence number among the good records. */
  maxSeq: number;
  /** Damaged byte ranges in file order; a final range with `tail` is what open would truncate. */
  damaged: DamagedRange[];
  /** True when the header and every byte after it decode as valid records. */
  ok: boolean;
  /**
   * Set when a cut marker beside the file names it: the bytes from this
   * offset on are writes that were rejected, which the table's next open
   * cuts off (see cut-marker.ts). They are still checked like the rest.
   */
  pendingCut?: number;
}

/**
 * Yields the header, then every record (key and value copied) and damaged
 * range of the file at `path`. Damage does not stop the scan: it resumes at
 * the next valid record. With a damaged header no range is a `tail`: an
 * open refuses such a file as corrupt and cuts nothing.
 */
export async function* scanFile(path: string, sfs: StoreFs = nodeStoreFs): AsyncGenerator<FileScanItem> {
  const fd = await sfs.open(path, 'r');
  try {
    const size = await sfs.size(fd);
    const buf = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(sfs, fd, buf, 0, FILE_HEADER_BYTES, 0);
    const decoded = decodeFileHeader(buf.subarray(0, got));
    if (typeof decoded === 'string') yield { type: 'header', header: undefined, damage: decoded };
    else yield { type: 'header', header: decoded, damage: undefined };
    if (size <= FILE_HEADER_BYTES) return;
    if (typeof decoded !== 'string') {
      yield* scanRecords(sfs, fd, FILE_HEADER_BYTES, size);
      return;
    }
    for await (const item of scanRecords(sfs, fd, FILE_HEADER_BYTES, size)) yield item.type === 'damage' ? { ...item, tail: false } : item;
  } finally {
    await sfs.close(fd);
  }
}

/** Checks every checksum of the file at `path` and lists the damaged ranges. Never modifies the file. */
export async function verifyFile(path: string, sfs: StoreFs = nodeStoreFs): Promise<VerifyReport> {
  const report: VerifyReport = { path, fileBytes: 0, header: undefined, records: 0, puts: 0, deletes: 0, maxSeq: 0, damaged: [], ok: false };
  const fd = await sfs.open(path, 'r');
  try {
    report.fileBytes = await sfs.size(fd);
  } finally {
    await sfs.close(fd);
  }
  for await (const item of scanFile(path, sfs)) {
    if (item.type === 'header') {
      report.header = item.header;
      if (item.damage !== undefined) {
        const end = Math.min(FILE_HEADER_BYTES, report.fileBytes);
        // Not a torn write even when the file is shorter than a header: an open refuses it as corrupt.
        report.damaged.push({ type: 'damage', start: 0, end, reason: item.damage, tail: false });
      }
    } else if (item.type === 'record') {
      report.records++;
      if (item.kind === 'put') report.puts++;
      else report.deletes++;
      if (item.seq > report.maxSeq) report.maxSeq = item.seq;
    } else {
      report.damaged.push(item);
    }
  }
  report.ok = report.damaged.length === 0;
  const cut = await pendingCutOf(path, sfs);
  if (cut !== undefined && cut < report.fileBytes) report.pendingCut = cut;
  return report;
}

/** What countLiveKeys found: the counts, or the first problem. */
export interface LiveKeyCount {
  /** Why the header is not valid, if it is not. */
  headerDamage: string | undefined;
  /** The first damaged record, if any (the count stops there). */
  damage: { offset: number; reason: string } | undefined;
  /** Records whose checksum holds (puts and deletes). */
  records: number;
  /** Keys live after replaying the records in order, as opening the table would. */
  liveKeys: number;
}

/**
 * Checks the header and every record's checksum of the file at `path` and
 * counts its live keys, without copying values (a check of a freshly built
 * file before anything serves it). Never modifies the file.
 */
export async function countLiveKeys(path: string, sfs: StoreFs = nodeStoreFs): Promise<LiveKeyCount> {
  const fd = await sfs.open(path, 'r');
  try {
    const size = await sfs.size(fd);
    const head = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(sfs, fd, head, 0, FILE_HEADER_BYTES, 0);
    const header = decodeFileHeader(head.subarray(0, got));
    const out: LiveKeyCount = { headerDamage: typeof header === 'string' ? header : undefined, damage: undefined, records: 0, liveKeys: 0 };
    const live = new Set<string>();
    const cursor = new RecordCursor(sfs, fd, FILE_HEADER_BYTES, Math.max(size, FILE_HEADER_BYTES));
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        const key = r.buf.toString('utf8', r.keyStart, r.keyStart + r.keyBytes);
        if (r.kind === KIND_PUT) live.add(key);
        else live.delete(key);
        out.records++;
      } else if (step === 'more') {
        await cursor.fill();
      } else if (step === 'end') {
        break;
      } else {
        out.damage = { offset: cursor.damage.offset, reason: cursor.damage.reason };
        break;
      }
    }
    out.liveKeys = live.size;
    return out;
  } finally {
    await sfs.close(fd);
  }
}
