/**
 * A backup's copy off the event loop: a worker thread copies bytes [0, length)
 * of one open file into another, hashes them (sha256), and reads every
 * window back after its fdatasync to compare it with the bytes it copied.
 *
 * Window by window (WINDOW_BYTES): read the source, write the copy, start
 * the copy's fdatasync (in the thread pool, while this thread hashes the
 * window), then read the window back from the copy and compare. Syncing
 * every window keeps the dirty data of the copy small, so the serving
 * thread's own fsync never waits behind tens of megabytes of it (ext4 in
 * data=ordered mode commits them together), and at most one fdatasync of
 * the copy is in flight, so it holds at most one thread of the pool. The
 * reads, writes, hashing and comparing run synchronously on this thread.
 *
 * Like record-check-worker.ts, the worker runs `copyMain` from its source
 * text, so it imports nothing.
 */
import { Worker } from 'node:worker_threads';

/** What to copy. */
export interface CopyJob {
  /** Descriptor to copy from (stays open until the promise settles). */
  src: number;
  /** Descriptor of the new file, opened for reading and writing. */
  dst: number;
  /** Bytes to copy, from offset 0. */
  length: number;
}

/** What the copy found. */
export interface CopyResult {
  /** sha256 hex of the bytes copied. */
  sha256: string;
  /** The first window [from, to) whose bytes read back differ from the bytes copied: the copy stopped there. */
  differs?: [number, number];
}

/** Where a copy failed: 'copy' for the source read, the write and the fdatasync; 'verify' for the read-back. */
export type CopyStage = 'copy' | 'verify';

/** Bytes copied between two fdatasyncs of the copy. */
const WINDOW_BYTES = 8 * 1024 * 1024;

/** Runs `job` in a new worker thread. Rejects (with `stage` on the error) when the worker cannot run or a file operation fails. */
export function copyInWorker(job: CopyJob): Promise<CopyResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(`(${copyMain.toString()})(require('node:worker_threads'));`, {
      eval: true,
      workerData: { ...job, window: WINDOW_BYTES },
    });
    let settled = false;
    worker.once('message', (msg: { ok: true; result: CopyResult } | { ok: false; message: string; code?: string; stage: CopyStage }) => {
      settled = true;
      if (msg.ok) resolve(msg.result);
      else reject(Object.assign(new Error(msg.message), { code: msg.code, stage: msg.stage }));
    });
    worker.once('error', (err) => {
      settled = true;
      reject(Object.assign(err, { stage: 'copy' }));
    });
    worker.once('exit', (code) => {
      if (!settled) reject(Object.assign(new Error(`copy worker exited with code ${code}`), { stage: 'copy' }));
    });
  });
}

/** The worker's code: self-contained (it runs from its source text). */
function copyMain(wt: typeof import('node:worker_threads')): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const job = wt.workerData as CopyJob & { window: number };
  const port = wt.parentPort!;
  let stage: CopyStage = 'copy';

  // Reads [at, at + n) fully, or fails.
  const readAt = (fd: number, buf: Buffer, n: number, at: number): void => {
    let done = 0;
    while (done < n) {
      const got = fs.readSync(fd, buf, done, n - done, at + done);
      if (got === 0) throw Object.assign(new Error(`file is shorter than ${at + n} bytes`), { code: 'EIO' });
      done += got;
    }
  };
  const writeAt = (fd: number, buf: Buffer, n: number, at: number): void => {
    let done = 0;
    while (done < n) done += fs.writeSync(fd, buf, done, n - done, at + done);
  };
  const datasync = (fd: number): Promise<void> =>
    new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));

  async function run(): Promise<CopyResult> {
    const hash = crypto.createHash('sha256');
    const size = Math.min(job.window, Math.max(job.length, 1));
    const copied = Buffer.allocUnsafe(size);
    const readBack = Buffer.allocUnsafe(size);
    for (let pos = 0; pos < job.length; ) {
      const n = Math.min(size, job.length - pos);
      stage = 'copy';
      readAt(job.src, copied, n, pos);
      writeAt(job.dst, copied, n, pos);
      const syncing = datasync(job.dst);
      // Settled below; this keeps a failure from being reported as unhandled meanwhile.
      syncing.catch(() => undefined);
      hash.update(copied.subarray(0, n));
      await syncing;
      stage = 'verify';
      readAt(job.dst, readBack, n, pos);
      if (!readBack.subarray(0, n).equals(copied.subarray(0, n))) return { sha256: '', differs: [pos, pos + n] };
      pos += n;
    }
    return { sha256: hash.digest('hex') };
  }

  run().then(
    (result) => port.postMessage({ ok: true, result }),
    (err: unknown) => {
      const e = err as NodeJS.ErrnoException;
      port.postMessage({ ok: false, message: String(e?.message ?? err), code: e?.code, stage });
    },
  );
}
