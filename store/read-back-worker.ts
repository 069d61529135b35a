/**
 * A backup's read-back off the event loop: once the copy is made (by the
 * kernel, see backup.ts) and fdatasynced, a worker thread reads it back
 * window by window, compares every byte with the table's bytes at the same
 * offset and hashes the copy (sha256).
 *
 * Like record-check-worker.ts, the worker runs `readBackMain` from its
 * source text, so it imports nothing.
 */
import { runSourceWorker } from './source-worker';

/** What to read back. */
export interface ReadBackJob {
  /** Descriptor of the copy (stays open until the promise settles). */
  copy: number;
  /** Descriptor of the file it was copied from. */
  source: number;
  /** Bytes to compare and hash, from offset 0. */
  length: number;
}

/** What the read-back found. */
export interface ReadBackResult {
  /** sha256 hex of the copy's bytes [0, length) ('' when they differ from the source). */
  sha256: string;
  /** The first window [from, to) whose bytes differ from the source's: the read-back stopped there. */
  differs?: [number, number];
}

/** Bytes read and compared at a time. */
const WINDOW_BYTES = 8 * 1024 * 1024;

/** Runs `job` in a new worker thread. Rejects when the worker cannot run or a read fails. */
export function readBackInWorker(job: ReadBackJob): Promise<ReadBackResult> {
  return runSourceWorker<ReadBackResult>(readBackMain, { ...job, window: WINDOW_BYTES }, 'read-back worker');
}

/** The worker's code: self-contained (it runs from its source text). */
function readBackMain(wt: typeof import('node:worker_threads')): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const job = wt.workerData as ReadBackJob & { window: number };
  const port = wt.parentPort!;

  // Reads [at, at + n) fully, or fails.
  const readAt = (fd: number, buf: Buffer, n: number, at: number): void => {
    let done = 0;
    while (done < n) {
      const got = fs.readSync(fd, buf, done, n - done, at + done);
      if (got === 0) throw Object.assign(new Error(`file is shorter than ${at + n} bytes`), { code: 'EIO' });
      done += got;
    }
  };

  function run(): ReadBackResult {
    const hash = crypto.createHash('sha256');
    const size = Math.min(job.window, Math.max(job.length, 1));
    const copied = Buffer.allocUnsafe(size);
    const source = Buffer.allocUnsafe(size);
    for (let pos = 0; pos < job.length; pos += size) {
      const n = Math.min(size, job.length - pos);
      readAt(job.copy, copied, n, pos);
      readAt(job.source, source, n, pos);
      if (!copied.subarray(0, n).equals(source.subarray(0, n))) return { sha256: '', differs: [pos, pos + n] };
      hash.update(copied.subarray(0, n));
    }
    return { sha256: hash.digest('hex') };
  }

  try {
    port.postMessage({ ok: true, result: run() });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    port.postMessage({ ok: false, message: String(e?.message ?? err), code: e?.code });
  }
}
