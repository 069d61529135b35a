/**
 * The merge behind rebuildTable (recovery.ts) and salvageFile (salvage.ts):
 * the intact records of a verified backup and of a damaged table file
 * compete per key by sequence number, the damaged ranges are searched for
 * what can still be read (damage-search.ts), and the winners are written, in
 * sequence order and with their original sequence numbers, into a new table
 * file.
 *
 * Why merging by sequence number is sound: a backup is a byte copy of the
 * table file as it was, and a table file only ever gains records with new,
 * higher sequence numbers or (compaction) loses records. So every record of
 * the damaged file whose sequence number is at most the backup's maxSeq is
 * also in the backup, and a record with the same sequence number in both is
 * the same record.
 *
 * Decisions on what the damage hides:
 * - a repaired record (one flipped bit) counts as intact;
 * - an identified damaged record (key K, seq S) is covered when the backup
 *   holds S, or when an intact record of K with a higher sequence number
 *   exists; otherwise K's newest state is lost: K is left out (a tombstone
 *   at S is written, so that no older copy can bring a superseded value
 *   back) and reported;
 * - an unreadable stretch is covered when every sequence number it could
 *   hold is in the backup, or the backup is a byte-for-byte prefix copy of
 *   the file that includes it, or no sequence number fits between its
 *   neighbours; otherwise it counts as one lost record of unknown key.
 *
 * Loops are synchronous per chunk and yield to the event loop every time
 * slice, so a rebuild does not stall the other tables of the process.
 */
import { createHash, Hash } from 'node:crypto';
import type { BackupManifest } from './backup';
import { decodeFileHeader, encodeRecord, FILE_HEADER_BYTES, FileHeader, KIND_DELETE, KIND_PUT, RecordKind, RECORD_HEADER_BYTES, readSeq } from './format';
import { isErrno, readFully, StoreFs } from './file-system';
import { DamagedRange, DamagedRecord, searchDamage, Stretch } from './damage-search';
import { MergeKeys, NumList } from './merge-keys';
import { RecordCursor } from './record-cursor';
import { SourceReader, TableWriter } from './rebuild-output';
import { TimeSlicer } from './time-slicer';

// Where a winning record's bytes are.
const SRC_BACKUP = 0;
const SRC_DAMAGED = 1;
const SRC_MEMORY = 2;
type Source = typeof SRC_BACKUP | typeof SRC_DAMAGED | typeof SRC_MEMORY;

const BACKUP_CHUNK_BYTES = 1024 * 1024;

/** A damaged byte range of the damaged file: [start, end) and why the first record there failed. */
export interface DamageSpan {
  start: number;
  end: number;
  reason: string;
}

/** What a finished merge wrote and found. */
export interface MergeResult {
  /** Records written: puts and kept tombstones. */
  records: number;
  liveKeys: number;
  /** Live keys whose record came from the backup / from the damaged file (repaired records included). */
  fromBackup: number;
  fromDamaged: number;
  /** Highest sequence number written (0 for none). */
  maxSeq: number;
  /** Damaged ranges of the damaged file, header first, in file order. */
  damagedRanges: DamageSpan[];
  damagedBytes: number;
  /** Records with one flipped bit, repaired. */
  repairedRecords: number;
  /** Identified damaged records that an intact record covers (the backup's copy, or a newer record of the key). */
  coveredRecords: number;
  lostRecords: number;
  /** Keys whose newest state was lost, in sequence order. */
  lostKeys: string[];
  unidentifiedRanges: number;
  /** Intact records read from the damaged file (repaired ones not included). */
  damagedIntactRecords: number;
}

/**
 * Records of one source that won their key when offered, in sequence order.
 * Candidate i is still its key's winner at the end when the slot still has
 * that sequence number and this source.
 */
interface Candidates {
  slots: NumList;
  seqs: NumList;
}

/** Records of a backup being read, kept aside until the backup has verified. */
interface Pending {
  slots: NumList;
  seqs: NumList;
  kinds: NumList;
  offsets: NumList;
  lengths: NumList;
}

interface LoadedBackup {
  fd: number;
  length: number;
  generation: number;
  maxSeq: number;
}

/** One merge: loadDamaged (optional), then loadBackup (optional; again after a failure), then finish. Always `close`. */
export class RebuildMerge {
  /** Header of the damaged file, when it is intact. */
  damagedHeader: FileHeader | undefined;
  private readonly keys = new MergeKeys();
  // Bytes of the winners held in memory (repaired records, tombstones of lost keys), by slot.
  private readonly memory = new Map<number, Buffer>();
  // The damaged file's list holds every intact record of it, in file order: each one wins when offered
  // (the file is read first, and sequence numbers grow in file order).
  private readonly candidates: [Candidates, Candidates, Candidates] = [
    { slots: new NumList(), seqs: new NumList() },
    { slots: new NumList(), seqs: new NumList() },
    { slots: new NumList(), seqs: new NumList() },
  ];
  // Sequence numbers of the backup's records, ascending.
  private backupSeqs = new NumList();
  private backup: LoadedBackup | undefined;
  private damagedFd: number | undefined;
  private damagedSize = 0;
  private headerDamage: DamageSpan | undefined;
  private ranges: DamagedRange[] = [];
  private damagedIntact = 0;
  private readonly slicer = new TimeSlicer();

  constructor(private readonly sfs: StoreFs) {}

  /**
   * Scans the damaged file's header and records (only its first `length`
   * bytes when given: the rest was cut off, see RebuildOptions.cutMarkerOf).
   * Resolves false when the file does not exist.
   */
  async loadDamaged(file: string, length?: number): Promise<boolean> {
    if (this.backup !== undefined || this.damagedFd !== undefined) throw new Error('loadDamaged must come first, once');
    let fd: number;
    try {
      fd = await this.sfs.open(file, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw err;
    }
    this.damagedFd = fd;
    const size = (this.damagedSize = Math.min(await this.sfs.size(fd), length ?? Infinity));
    const head = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(this.sfs, fd, head, 0, FILE_HEADER_BYTES, 0);
    const header = decodeFileHeader(head.subarray(0, got));
    if (typeof header === 'string') this.headerDamage = { start: 0, end: Math.min(FILE_HEADER_BYTES, size), reason: `header: ${header}` };
    else this.damagedHeader = header;
    if (size > FILE_HEADER_BYTES) await this.scanDamaged(fd, size);
    return true;
  }

  /**
   * Reads the backup described by `manifest` from `file` in one pass and
   * checks it against the manifest: length, header, framing of every record,
   * growing sequence numbers, record count, maxSeq and sha256. (A backup's
   * checksums and counts were all verified when it was taken; a matching
   * sha256 shows these are still the same bytes.) Every record then joins
   * the merge. Resolves the problems found; when there are any, nothing of
   * the backup is used.
   */
  async loadBackup(file: string, manifest: BackupManifest): Promise<string[]> {
    if (this.backup !== undefined) throw new Error('a backup is already loaded');
    let fd: number;
    try {
      fd = await this.sfs.open(file, 'r');
    } catch (err) {
      return [`cannot open ${file}: ${messageOf(err)}`];
    }
    const problems: string[] = [];
    const pending: Pending = { slots: new NumList(), seqs: new NumList(), kinds: new NumList(), offsets: new NumList(), lengths: new NumList() };
    const backupSeqs = new NumList();
    try {
      await this.readBackup(fd, manifest, problems, pending, backupSeqs);
    } catch (err) {
      problems.push(`cannot read ${file}: ${messageOf(err)}`);
    }
    if (problems.length > 0) {
      // Slots the failed backup added stay, with no record: they change nothing.
      await this.sfs.close(fd).catch(() => undefined);
      return problems;
    }
    for (let i = 0; i < pending.slots.length; i++) {
      this.take(pending.slots.data[i], pending.seqs.data[i], pending.kinds.data[i] as RecordKind, SRC_BACKUP, pending.offsets.data[i], pending.lengths.data[i], undefined);
    }
    this.backupSeqs = backupSeqs;
    this.backup = { fd, length: manifest.length, generation: manifest.generation, maxSeq: manifest.maxSeq };
    return [];
  }

  /**
   * Searches the damaged ranges, decides what is covered and what is lost,
   * and writes every winning record into `writer` in sequence order (the
   * caller commits or abandons the writer).
   */
  async finish(writer: TableWriter): Promise<MergeResult> {
    const found = this.damagedFd === undefined ? { repaired: [], identified: [], stretches: [] } : await searchDamage(this.sfs, this.damagedFd, this.ranges, this.slicer);
    for (const r of found.repaired) {
      const keyEnd = RECORD_HEADER_BYTES + r.bytes.readUInt16LE(6);
      const slot = this.keys.slotFor(r.bytes, RECORD_HEADER_BYTES, keyEnd);
      this.take(slot, readSeq(r.bytes, 0), r.bytes[4] as RecordKind, SRC_MEMORY, r.offset, r.bytes.length, r.bytes);
    }
    const verdict = this.decide(found.identified, found.stretches);
    const written = await this.write(writer);
    const spans: DamageSpan[] = this.headerDamage === undefined ? [] : [this.headerDamage];
    for (const r of this.ranges) spans.push({ start: r.start, end: r.end, reason: r.reason });
    return {
      ...written,
      coveredRecords: verdict.coveredRecords,
      lostRecords: verdict.lostRecords,
      lostKeys: verdict.lostKeys,
      unidentifiedRanges: verdict.unidentifiedRanges,
      damagedRanges: spans,
      damagedBytes: spans.reduce((sum, s) => sum + (s.end - s.start), 0),
      repairedRecords: found.repaired.length,
      damagedIntactRecords: this.damagedIntact,
    };
  }

  /** Closes the source files. */
  async close(): Promise<void> {
    if (this.backup !== undefined) await this.sfs.close(this.backup.fd).catch(() => undefined);
    if (this.damagedFd !== undefined) await this.sfs.close(this.damagedFd).catch(() => undefined);
    this.backup = undefined;
    this.damagedFd = undefined;
  }

  /**
   * Offers a record for its key's slot: a higher sequence number wins, and
   * on a tie anything beats the backup's copy of the same record. A winner
   * is noted as a candidate of its source.
   */
  private take(slot: number, seq: number, kind: RecordKind, src: Source, offset: number, length: number, bytes: Buffer | undefined): void {
    const keys = this.keys;
    const cur = keys.seqs[slot];
    if (!(seq > cur || (seq === cur && src !== SRC_BACKUP))) return;
    keys.seqs[slot] = seq;
    keys.kinds[slot] = kind;
    keys.srcs[slot] = src;
    keys.offsets[slot] = offset;
    keys.lengths[slot] = length;
    if (bytes !== undefined) this.memory.set(slot, bytes);
    const cands = this.candidates[src];
    cands.slots.push(slot);
    cands.seqs.push(seq);
  }

  private async scanDamaged(fd: number, size: number): Promise<void> {
    const cursor = new RecordCursor(this.sfs, fd, FILE_HEADER_BYTES, size);
    let lastSeq = 0;
    // The range just found, waiting for the sequence number of the record after it.
    let open: DamagedRange | undefined;
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        const slot = this.keys.slotFor(r.buf, r.keyStart, r.keyStart + r.keyBytes);
        this.take(slot, r.seq, r.kind, SRC_DAMAGED, r.offset, r.length, undefined);
        if (open !== undefined) {
          open.below = r.seq;
          open = undefined;
        }
        lastSeq = r.seq;
        this.damagedIntact++;
        if (this.slicer.due()) await this.slicer.yield();
      } else if (step === 'more') {
        await cursor.fill();
        this.slicer.restart();
      } else if (step === 'end') {
        break;
      } else {
        const { offset, reason } = cursor.damage;
        const next = await cursor.resync();
        open = { start: offset, end: next < 0 ? size : next, reason, above: lastSeq, below: Infinity };
        this.ranges.push(open);
        this.slicer.restart();
      }
    }
  }

  private async readBackup(fd: number, manifest: BackupManifest, problems: string[], pending: Pending, backupSeqs: NumList): Promise<void> {
    const size = await this.sfs.size(fd);
    if (size !== manifest.length) {
      problems.push(`file is ${size} bytes, the manifest says ${manifest.length}`);
      return;
    }
    const hash = createHash('sha256');
    const head = Buffer.alloc(FILE_HEADER_BYTES);
    const got = await readFully(this.sfs, fd, head, 0, Math.min(FILE_HEADER_BYTES, size), 0);
    hash.update(head.subarray(0, got));
    const header = decodeFileHeader(head.subarray(0, got));
    if (typeof header === 'string') problems.push(`header: ${header}`);
    else if (header.generation !== manifest.generation) problems.push(`generation is ${header.generation}, the manifest says ${manifest.generation}`);
    if (problems.length > 0) return;
    const found = size > FILE_HEADER_BYTES ? await this.scanBackup(fd, size, hash, problems, pending, backupSeqs) : { records: 0, maxSeq: 0 };
    if (problems.length > 0) return;
    const expect = (what: string, got: unknown, want: unknown): void => {
      if (got !== want) problems.push(`${what} is ${String(got)}, the manifest says ${String(want)}`);
    };
    expect('sha256', hash.digest('hex'), manifest.sha256);
    expect('records', found.records, manifest.records);
    expect('maxSeq', found.maxSeq, manifest.maxSeq);
  }

  private async scanBackup(fd: number, size: number, hash: Hash, problems: string[], pending: Pending, backupSeqs: NumList): Promise<{ records: number; maxSeq: number }> {
    const cursor = new RecordCursor(this.sfs, fd, FILE_HEADER_BYTES, size, BACKUP_CHUNK_BYTES, {
      // The sha256 check stands for the checksums (see loadBackup).
      checksums: false,
      onRead: (buf, start, end) => {
        hash.update(buf.subarray(start, end));
      },
    });
    // A backup record whose sequence number is intact in the damaged file is that same record, which
    // already competed and wins the tie: it needs no key lookup. Both lists ascend, so one pointer walks them.
    const intact = this.candidates[SRC_DAMAGED].seqs;
    let ii = 0;
    let records = 0;
    let maxSeq = 0;
    for (;;) {
      const step = cursor.step();
      if (step === 'record') {
        const r = cursor.record;
        if (r.seq <= maxSeq) {
          problems.push(`sequence number ${r.seq} at offset ${r.offset} does not grow`);
          break;
        }
        maxSeq = r.seq;
        records++;
        backupSeqs.push(r.seq);
        while (ii < intact.length && intact.data[ii] < r.seq) ii++;
        if (ii < intact.length && intact.data[ii] === r.seq) {
          if (this.slicer.due()) await this.slicer.yield();
          continue;
        }
        pending.slots.push(this.keys.slotFor(r.buf, r.keyStart, r.keyStart + r.keyBytes));
        pending.seqs.push(r.seq);
        pending.kinds.push(r.kind);
        pending.offsets.push(r.offset);
        pending.lengths.push(r.length);
        if (this.slicer.due()) await this.slicer.yield();
      } else if (step === 'more') {
        await cursor.fill();
        this.slicer.restart();
      } else if (step === 'end') {
        break;
      } else {
        problems.push(`damaged record at offset ${cursor.damage.offset}: ${cursor.damage.reason}`);
        break;
      }
    }
    return { records, maxSeq };
  }

  /** Decides, for each identified damaged record and unreadable stretch, whether an intact record covers it. */
  private decide(identified: DamagedRecord[], stretches: Stretch[]): { coveredRecords: number; lostRecords: number; lostKeys: string[]; unidentifiedRanges: number } {
    const maxSeq = this.backup?.maxSeq ?? 0;
    let covered = 0;
    const lost: DamagedRecord[] = [];
    const unattributed = stretches.slice();
    for (const d of identified) {
      if (d.seq <= maxSeq) {
        if (this.backupHas(d.seq)) covered++;
        // The backup would hold this sequence number: the header lies, so the piece is unattributed.
        else unattributed.push({ range: d.range, start: d.offset, end: Math.min(d.offset + d.length, d.range.end), above: d.above, below: d.below });
        continue;
      }
      const key = Buffer.from(d.key, 'utf8');
      const slot = this.keys.slotOf(key, 0, key.length);
      if (slot >= 0 && this.keys.seqs[slot] >= d.seq) covered++;
      else lost.push(d);
    }
    let lostRecords = lost.length;
    const unidentified = new Set<DamagedRange>();
    for (const s of unattributed) {
      if (this.stretchCovered(s)) continue;
      lostRecords++;
      unidentified.add(s.range);
    }
    // Tombstones only now: coverage above is decided against intact records alone.
    const lostKeys: string[] = [];
    const seen = new Set<string>();
    lost.sort((a, b) => a.seq - b.seq);
    for (const d of lost) {
      if (!seen.has(d.key)) {
        seen.add(d.key);
        lostKeys.push(d.key);
      }
      const bytes = Buffer.allocUnsafe(RECORD_HEADER_BYTES + d.keyBytes);
      encodeRecord(bytes, 0, KIND_DELETE, d.seq, d.key, d.keyBytes, undefined);
      const slot = this.keys.slotFor(bytes, RECORD_HEADER_BYTES, bytes.length);
      this.take(slot, d.seq, KIND_DELETE, SRC_MEMORY, d.offset, bytes.length, bytes);
    }
    return { coveredRecords: covered, lostRecords, lostKeys, unidentifiedRanges: unidentified.size };
  }

  /** True when no record that could be in the stretch is missing from the backup. */
  private stretchCovered(s: Stretch): boolean {
    // No sequence number fits between the neighbours: the stretch holds no record of its own.
    if (s.below - s.above <= 1) return true;
    const b = this.backup;
    if (b === undefined) return false;
    if (s.below - 1 <= b.maxSeq) return true;
    // Same generation: the backup is a byte copy of this file's first b.length bytes.
    return this.damagedHeader !== undefined && this.damagedHeader.generation === b.generation && s.end <= b.length;
  }

  private backupHas(seq: number): boolean {
    const seqs = this.backupSeqs.data;
    let lo = 0;
    let hi = this.backupSeqs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (seqs[mid] === seq) return true;
      if (seqs[mid] < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  /**
   * Writes the winners in sequence order: a merge of the three candidate
   * lists (each in sequence order; the memory one is sorted here), skipping
   * candidates a later record displaced. Consecutive records of one source
   * file are copied as one run.
   */
  private async write(writer: TableWriter): Promise<{ records: number; liveKeys: number; fromBackup: number; fromDamaged: number; maxSeq: number }> {
    const keys = this.keys;
    const lists = this.candidates;
    sortCandidates(lists[SRC_MEMORY]);
    const readers: (SourceReader | undefined)[] = [
      this.backup === undefined ? undefined : new SourceReader(this.sfs, this.backup.fd, this.backup.length),
      this.damagedFd === undefined ? undefined : new SourceReader(this.sfs, this.damagedFd, this.damagedSize),
    ];
    const stats = { records: 0, liveKeys: 0, fromBackup: 0, fromDamaged: 0, maxSeq: 0 };
    // The run of file bytes noted but not yet copied.
    let runSrc = -1;
    let runStart = 0;
    let runEnd = 0;
    const copyRun = async (): Promise<void> => {
      const reader = readers[runSrc];
      if (reader === undefined) throw new Error(`no reader for source ${runSrc}`);
      if (!reader.copySync(writer, runStart, runEnd)) await reader.copy(writer, runStart, runEnd);
      runSrc = -1;
      if (writer.full) await writer.flush();
    };
    const seqs = keys.seqs;
    const srcs = keys.srcs;
    // Position of each source's next candidate that is still its key's winner.
    const next = [0, 0, 0];
    const skipStale = (s: number): number => {
      const slots = lists[s].slots.data;
      const cseqs = lists[s].seqs.data;
      const n = lists[s].seqs.length;
      let i = next[s];
      while (i < n && (seqs[slots[i]] !== cseqs[i] || srcs[slots[i]] !== s)) i++;
      next[s] = i;
      return i < n ? cseqs[i] : Infinity;
    };
    const heads = [skipStale(0), skipStale(1), skipStale(2)];
    for (;;) {
      const src = heads[0] < heads[1] ? (heads[0] < heads[2] ? 0 : 2) : heads[1] < heads[2] ? 1 : 2;
      const seq = heads[src];
      if (seq === Infinity) break;
      const slot = lists[src].slots.data[next[src]++];
      heads[src] = skipStale(src);
      if (src === SRC_MEMORY) {
        if (runSrc >= 0) await copyRun();
        const bytes = this.memory.get(slot);
        if (bytes === undefined) throw new Error(`no bytes for a record held in memory (slot ${slot})`);
        writer.append(bytes, 0, bytes.length);
      } else {
        const offset = keys.offsets[slot];
        if (src === runSrc && offset === runEnd) {
          runEnd += keys.lengths[slot];
        } else {
          if (runSrc >= 0) await copyRun();
          runSrc = src;
          runStart = offset;
          runEnd = offset + keys.lengths[slot];
        }
      }
      stats.records++;
      stats.maxSeq = seq;
      if (keys.kinds[slot] === KIND_PUT) {
        stats.liveKeys++;
        if (src === SRC_BACKUP) stats.fromBackup++;
        else stats.fromDamaged++;
      }
      if (this.slicer.due()) {
        if (runSrc >= 0) await copyRun();
        await this.slicer.yield();
      }
    }
    if (runSrc >= 0) await copyRun();
    return stats;
  }
}

/** Sorts a candidate list by sequence number (the memory one is built out of order). */
function sortCandidates(c: Candidates): void {
  const order = Array.from({ length: c.seqs.length }, (_, i) => i).sort((a, b) => c.seqs.data[a] - c.seqs.data[b]);
  const slots = new NumList();
  const seqs = new NumList();
  for (const i of order) {
    slots.push(c.slots.data[i]);
    seqs.push(c.seqs.data[i]);
  }
  c.slots = slots;
  c.seqs = seqs;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
