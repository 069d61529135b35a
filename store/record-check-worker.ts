/**
 * Record checks off the event loop, for maintenance of large files.
 *
 * A worker thread reads a range of an open file through its descriptor
 * (descriptors are shared by every thread of the process) and checks every
 * record in it: framing and checksum, as RecordCursor does. For a backup it
 * also hashes the bytes (sha256), compares them with the file they were
 * copied from, and counts records, live keys and the highest sequence. The
 * serving thread only waits for the answer, so this work never delays a
 * request. The checksums of each chunk's records are checked at once (one
 * native CRC of the chunk and ~40 ns per record, against ~200 ns per record
 * one by one; see crc.ts), and one by one only in a chunk where that check
 * fails, to find the first damaged record.
 *
 * The worker runs `workerMain` below from its source text (`eval`), so that
 * the same code runs from the compiled files and from the TypeScript sources
 * under ts-jest. It can therefore import nothing but the self-contained
 * functions it gets as deps: it repeats the record framing of format.ts
 * (the record tests check both against each other).
 * It reads with node:fs directly, not through a StoreFs: callers use it only
 * on the real disk, and check in-process when a StoreFs is injected.
 */
import { runSourceWorker, type SourceWorkerContext } from './source-worker';
import { MAX_KEY_BYTES } from './format';
import { recordCrc } from './crc';

/** What the worker gets from other modules (from their source text). */
interface WorkerDeps {
  [name: string]: (...args: never[]) => unknown;
  recordCrc: typeof recordCrc;
}

/** What to check. */
export interface RangeCheckJob {
  /** Descriptor to read (stays open until the promise settles). */
  fd: number;
  /** Offset of the first record. */
  start: number;
  /** End of the range (exclusive): a record must end exactly there. */
  end: number;
  /** Also sha256 the bytes [0, end) (the header included). */
  hash?: boolean;
  /** Also compare the bytes read with this descriptor's at the same offsets. */
  compareFd?: number;
  /** Also count the keys live at the end of the range (put last). */
  countKeys?: boolean;
  /** False: check framing only, not checksums (another worker checks them). Default true. */
  checksums?: boolean;
}

/** What the worker found. */
export interface RangeCheckResult {
  /** Records checked before the end or the damage. */
  records: number;
  liveKeys: number;
  maxSeq: number;
  /** sha256 hex of [0, end), when asked for and no damage stopped the read. */
  sha256?: string;
  /** The first record that is not valid: scanning stopped there. */
  damage?: { offset: number; reason: string };
  /** The first chunk [from, to) whose bytes differ from compareFd's. */
  differs?: [number, number];
}

/** Ranges shorter than this are not worth a thread (handing one over and back costs ~0.1-0.5 ms, starting one 25-70 ms of CPU). */
export const WORKER_MIN_BYTES = 4 * 1024 * 1024;

/** Runs `job` in a worker thread (see runSourceWorker). Rejects when the worker cannot run or a read fails, and with the signal's reason when aborted (see runSourceWorker). */
export function checkRangeInWorker(job: RangeCheckJob, signal?: AbortSignal): Promise<RangeCheckResult> {
  return runSourceWorker<RangeCheckResult, WorkerDeps>(workerMain, { ...job, maxKeyBytes: MAX_KEY_BYTES }, 'record check worker', signal, { recordCrc });
}

/**
 * The worker's code: self-contained (it runs from its source text), plain
 * JavaScript once compiled. Framing as in format.ts: crc u32 | kind u8 |
 * flags u8 | key length u16 | value length u32 | seq u64 | key | value.
 */
function workerMain(wt: SourceWorkerContext, deps: WorkerDeps): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const job = wt.workerData as RangeCheckJob & { maxKeyBytes: number };
  const port = wt.parentPort;
  const CHUNK = 4 * 1024 * 1024;
  const HEADER = 20;

  const rc = deps.recordCrc();

  // Counts the keys live after a sequence of puts and deletes. Random
  // access into one table of a million keys costs ~0.7 us a key (cache and
  // TLB misses), so the operations are first appended, in order, to 256
  // partitions by hash (sequential writes), and each partition, whose table
  // fits in the cache, is then replayed on its own: a key's operations all
  // fall into one partition, in their order.
  function newKeySet() {
    const ARENA = 1 << 20;
    const PARTS = 256;
    // Per partition: [hash, (arena position << 1 | put)] pairs, as float64 (positions pass 2^31).
    const ops: Float64Array[] = [];
    const lens = new Int32Array(PARTS);
    for (let i = 0; i < PARTS; i++) ops.push(new Float64Array(1024));
    const arena: Buffer[] = [Buffer.allocUnsafe(ARENA)];
    let used = 0;
    const hashOf = (b: Buffer, s: number, e: number): number => {
      let h = 0x811c9dc5;
      for (let i = s; i < e; i++) h = Math.imul(h ^ b[i], 0x01000193);
      h ^= h >>> 15;
      h = Math.imul(h, 0x85ebca6b);
      h ^= h >>> 13;
      return h >>> 0;
    };
    const note = (b: Buffer, s: number, e: number, put: number): void => {
      const n = e - s;
      if (used + 2 + n > ARENA) {
        arena.push(Buffer.allocUnsafe(ARENA));
        used = 0;
      }
      const chunk = arena[arena.length - 1];
      chunk[used] = n & 0xff;
      chunk[used + 1] = n >>> 8;
      for (let j = 0; j < n; j++) chunk[used + 2 + j] = b[s + j];
      const h = hashOf(b, s, e);
      const part = h >>> 24;
      let list = ops[part];
      const at = lens[part];
      if (at + 2 > list.length) {
        const grown = new Float64Array(list.length * 2);
        grown.set(list);
        list = ops[part] = grown;
      }
      list[at] = h;
      list[at + 1] = ((arena.length - 1) * ARENA + used) * 2 + put;
      lens[part] = at + 2;
      used += 2 + n;
    };
    const sameKey = (p: number, q: number): boolean => {
      const a = arena[Math.floor(p / ARENA)];
      const b = arena[Math.floor(q / ARENA)];
      const i = p % ARENA;
      const j = q % ARENA;
      const end = (a[i] | (a[i + 1] << 8)) + 2;
      if ((b[j] | (b[j + 1] << 8)) !== end - 2) return false;
      for (let k = 2; k < end; k++) if (a[i + k] !== b[j + k]) return false;
      return true;
    };
    const count = (): number => {
      let live = 0;
      for (let part = 0; part < PARTS; part++) {
        const list = ops[part];
        const n = lens[part] / 2;
        let size = 16;
        while (size < n * 2) size *= 2;
        const mask = size - 1;
        // Bucket -> op index + 1 of the key's first op; its live flag in `alive`.
        const table = new Int32Array(size);
        const alive = new Uint8Array(n);
        for (let k = 0; k < n; k++) {
          const h = list[2 * k];
          const word = list[2 * k + 1];
          const put = word % 2;
          const pos = (word - put) / 2;
          let i = h & mask;
          for (;;) {
            const at = table[i];
            if (at === 0) {
              table[i] = k + 1;
              alive[k] = put;
              break;
            }
            const first = at - 1;
            if (list[2 * first] === h && sameKey((list[2 * first + 1] - (list[2 * first + 1] % 2)) / 2, pos)) {
              alive[first] = put;
              break;
            }
            i = (i + 1) & mask;
          }
        }
        for (let k = 0; k < n; k++) live += alive[k];
      }
      return live;
    };
    return {
      size: count,
      add: (b: Buffer, s: number, e: number): void => note(b, s, e, 1),
      remove: (b: Buffer, s: number, e: number): void => note(b, s, e, 0),
    };
  }

  try {
    const result: RangeCheckResult = { records: 0, liveKeys: 0, maxSeq: 0 };
    const hash = job.hash === true ? crypto.createHash('sha256') : undefined;
    const keys = job.countKeys === true ? newKeySet() : undefined;
    const checksums = job.checksums !== false;
    let spare = Buffer.allocUnsafe(0);
    // Reads [at, at + n) fully, or fails.
    const readAt = (fd: number, buf: Buffer, off: number, n: number, at: number): void => {
      let done = 0;
      while (done < n) {
        const got = fs.readSync(fd, buf, off + done, n - done, at + done);
        if (got === 0) throw Object.assign(new Error(`file shrank while being read (wanted ${n} bytes at ${at})`), { code: 'EIO' });
        done += got;
      }
    };
    // Bytes [0, start) are not records (the file header): hashed and compared only.
    const seen = (buf: Buffer, from: number, to: number, at: number): void => {
      if (to <= from) return;
      if (job.compareFd !== undefined && result.differs === undefined) {
        const n = to - from;
        if (spare.length < n) spare = Buffer.allocUnsafe(n);
        readAt(job.compareFd, spare, 0, n, at);
        if (!buf.subarray(from, to).equals(spare.subarray(0, n))) result.differs = [at, at + n];
      }
      hash?.update(buf.subarray(from, to));
    };
    if (job.start > 0 && (hash !== undefined || job.compareFd !== undefined)) {
      const head = Buffer.allocUnsafe(job.start);
      readAt(job.fd, head, 0, job.start, 0);
      seen(head, 0, job.start, 0);
    }
    let buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(job.end - job.start, HEADER)));
    let bufStart = job.start;
    let bufLen = 0;
    let pos = job.start;
    const damaged = (offset: number, reason: string): void => {
      result.damage = { offset, reason };
    };
    // Buffer's readUInt16LE/readUInt32LE are not inlined here; these are.
    const u16 = (b: Buffer, i: number): number => b[i] | (b[i + 1] << 8);
    const u32 = (b: Buffer, i: number): number => (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16)) + b[i + 3] * 0x1000000;
    // The span: the records of buf[spanStart, pos - bufStart), framed and
    // counted in spanRecords and spanMaxSeq, their checksums folded into
    // `acc`; checked all at once (see crc.ts) before the buffer moves, before
    // damage of another kind after them is reported, and at the end.
    let spanStart = 0;
    const span = { acc: 0, records: 0, maxSeq: 0 };
    const maxKeyBytes = job.maxKeyBytes;
    // The loop over a buffer's well-framed whole records, as a function of
    // its own whose state is in locals: in the loop below, which shares its
    // variables with the closures above, every access was a context slot
    // (checking only the framing of 1M records, reads included, took
    // 95-111 ms that way and 74-87 ms this way).
    // Stops at the first record that is not whole in buf[p, bufLen), runs
    // past `limit` (the range's end, as a buffer position), or is framed
    // badly: the loop below deals with that one. Returns where it stopped.
    const frameRun = (buf: Buffer, p: number, bufLen: number, limit: number): number => {
      let acc = span.acc;
      let records = span.records;
      let maxSeq = span.maxSeq;
      while (bufLen - p >= HEADER) {
        const kind = buf[p + 4];
        const keyBytes = u16(buf, p + 6);
        const valueBytes = u32(buf, p + 8);
        if ((kind !== 1 && kind !== 2) || buf[p + 5] !== 0 || keyBytes === 0 || keyBytes > maxKeyBytes || (kind === 2 && valueBytes !== 0)) break;
        const length = HEADER + keyBytes + valueBytes;
        if (p + length > limit || length > bufLen - p) break;
        if (checksums) acc = rc.fold(acc, buf, p, length);
        const seq = u32(buf, p + 12) + u32(buf, p + 16) * 0x100000000;
        if (seq > maxSeq) maxSeq = seq;
        records++;
        p += length;
      }
      span.acc = acc;
      span.records = records;
      span.maxSeq = maxSeq;
      return p;
    };
    // Adds the span's records up to spanEnd to the result, or those before the first whose checksum fails (damage). False on damage.
    const settle = (spanEnd: number): boolean => {
      const from = spanStart;
      const held = !checksums || rc.spanHolds(span.acc, buf, from, spanEnd);
      const records = span.records;
      const maxSeq = span.maxSeq;
      spanStart = spanEnd;
      span.acc = 0;
      span.records = 0;
      span.maxSeq = 0;
      if (held && keys === undefined) {
        result.records += records;
        if (maxSeq > result.maxSeq) result.maxSeq = maxSeq;
        return true;
      }
      for (let q = from; q < spanEnd; ) {
        const keyBytes = u16(buf, q + 6);
        const length = HEADER + keyBytes + u32(buf, q + 8);
        if (!held && u32(buf, q) !== rc.crc32(buf, q + 4, q + length)) {
          damaged(bufStart + q, 'checksum mismatch');
          return false;
        }
        const seq = u32(buf, q + 12) + u32(buf, q + 16) * 0x100000000;
        if (seq > result.maxSeq) result.maxSeq = seq;
        if (keys !== undefined) {
          if (buf[q + 4] === 1) keys.add(buf, q + HEADER, q + HEADER + keyBytes);
          else keys.remove(buf, q + HEADER, q + HEADER + keyBytes);
        }
        result.records++;
        q += length;
      }
      // Folds only differ when a record's checksum fails: finding none is a fault of this code, not of the file.
      if (!held) throw new Error(`record checksums at [${bufStart + from}, ${bufStart + spanEnd}) disagree with the span's checksum`);
      return true;
    };
    while (pos < job.end && result.damage === undefined) {
      let p = pos - bufStart;
      if (bufLen - p < HEADER || bufLen - p < HEADER + u16(buf, p + 6) + u32(buf, p + 8)) {
        if (!settle(p)) break;
        // Refill from pos, keeping the partial record; grow for a record larger than a chunk.
        if (pos + HEADER > job.end) {
          damaged(pos, 'incomplete record header at end of file');
          break;
        }
        const kept = Math.max(0, bufLen - p);
        let want = Math.min(CHUNK, job.end - pos);
        if (kept >= HEADER) want = Math.max(want, Math.min(job.end - pos, HEADER + buf.readUInt16LE(p + 6) + buf.readUInt32LE(p + 8)));
        const next = want > buf.length ? Buffer.allocUnsafe(want) : buf;
        buf.copy(next, 0, p, p + kept);
        buf = next;
        readAt(job.fd, buf, kept, want - kept, pos + kept);
        seen(buf, kept, want, pos + kept);
        bufStart = pos;
        bufLen = want;
        p = 0;
        spanStart = 0;
        if (bufLen < HEADER) {
          damaged(pos, 'incomplete record header at end of file');
          break;
        }
      }
      const reached = frameRun(buf, p, bufLen, job.end - bufStart);
      if (reached !== p) {
        pos = bufStart + reached;
        continue;
      }
      // The record at p is not whole in the buffer (refilled on the next turn), or not valid.
      const kind = buf[p + 4];
      const keyBytes = u16(buf, p + 6);
      const valueBytes = u32(buf, p + 8);
      let bad: string | undefined;
      if (kind !== 1 && kind !== 2) bad = `invalid record kind ${kind}`;
      else if (buf[p + 5] !== 0) bad = `unknown record flags 0x${buf[p + 5].toString(16)}`;
      else if (keyBytes === 0 || keyBytes > job.maxKeyBytes) bad = `invalid key length ${keyBytes}`;
      else if (kind === 2 && valueBytes !== 0) bad = 'delete record with a value';
      const length = HEADER + keyBytes + valueBytes;
      if (bad === undefined && pos + length > job.end) bad = `record of ${length} bytes runs past end of file`;
      if (bad !== undefined) {
        // A record before this one whose checksum fails is the first damage.
        if (settle(p)) damaged(pos, bad);
        break;
      }
      if (length > bufLen - p) continue; // refilled on the next turn
      if (checksums) span.acc = rc.fold(span.acc, buf, p, length);
      const seq = u32(buf, p + 12) + u32(buf, p + 16) * 0x100000000;
      if (seq > span.maxSeq) span.maxSeq = seq;
      span.records++;
      pos += length;
    }
    if (result.damage === undefined) settle(pos - bufStart);
    result.liveKeys = keys?.size() ?? 0;
    if (hash !== undefined && result.damage === undefined) result.sha256 = hash.digest('hex');
    port.postMessage({ ok: true, result });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    port.postMessage({ ok: false, message: String(e?.message ?? err), code: e?.code });
  }
}
