/**
 * A backup's copy off the event loop: a worker thread copies bytes [0, length)
 * of one open file into another, reads every window of the copy back to
 * compare it with the source, and hashes what it read back (sha256).
 *
 * Window by window (WINDOW_BYTES): read the source, write the copy, read the
 * window back and compare, while one fdatasync of the copy at a time runs in
 * the thread pool behind the writes (each covering all that was written when
 * it started). The read-back comes right after the write: a read after the
 * fdatasync would see the same page-cache pages, and this way the source's
 * bytes are still in memory to compare with (reading them again cost a
 * third read of the data). A failed write-back shows as a failed fdatasync.
 * The copy never waits for a sync unless it is more than MAX_AHEAD windows
 * ahead of the synced point, so the dirty data of the copy stays small (the
 * serving thread's own fsync never waits behind much of it: ext4 in
 * data=ordered mode commits them together) without paying a sync's latency
 * per window; and at most one fdatasync of the copy is in flight, so it
 * holds at most one thread of the pool. The reads, writes, comparing and
 * hashing run synchronously on this thread.
 *
 * Like record-check-worker.ts, the worker runs `copyMain` from its source
 * text, so it imports nothing.
 */
import { runSourceWorker, type SourceWorkerContext } from './source-worker';

/** What to copy. */
export interface CopyJob {
  /** Descriptor to copy from (stays open until the promise settles). */
  src: number;
  /** Descriptor of the new file, opened for reading and writing. */
  dst: number;
  /** Bytes to copy, from offset 0. */
  length: number;
  /**
   * Fault injection, for tests only: once the window holding this offset is
   * written, the copy's byte there is changed on disk, as by a write that did
   * not land as written. The read-back must then report that window.
   */
  flipAt?: number;
}

/** What the copy found. */
export interface CopyResult {
  /** sha256 hex of the copy, as read back. */
  sha256: string;
  /** The first window [from, to) whose bytes read back differ from the bytes copied: the copy stopped there. */
  differs?: [number, number];
}

/** Where a copy failed: 'copy' for the source read, the write and the fdatasync; 'verify' for the read-back. */
export type CopyStage = 'copy' | 'verify';

/** Bytes read, written and compared at a time. */
const WINDOW_BYTES = 8 * 1024 * 1024;
/** Windows the copy may run ahead of its last finished fdatasync (bounds its dirty data to about 64 MiB). */
const MAX_AHEAD = 8;
/**
 * Bytes per read or write call. Large write calls into a new file are slow
 * at times on this kernel (the time goes to the kernel, in bursts: large
 * page-cache folios are likely): writing 167 MB took 36-198 ms in 1 MiB
 * calls (three runs of 121, 198, 36 ms; one call of 8 MiB was once ~14x
 * eight of 1 MiB) and 35-51 ms in 256 KiB calls, from the same buffers. In
 * the copy worker, the write phase went from 55-206 ms to 43-64 ms and the
 * whole copy's system time from 150-349 ms to 132-189 ms.
 */
const IO_BYTES = 256 * 1024;

/** Runs `job` in a worker thread (see runSourceWorker). Rejects (with `stage` on the error) when the worker cannot run or a file operation fails, and with the signal's reason when aborted (see runSourceWorker). */
export function copyInWorker(job: CopyJob, signal?: AbortSignal): Promise<CopyResult> {
  return runSourceWorker<CopyResult>(copyMain, { ...job, window: WINDOW_BYTES, maxAhead: MAX_AHEAD, ioBytes: IO_BYTES }, 'copy worker', signal).catch((err: unknown) => {
    if (signal?.aborted === true && err === signal.reason) throw err;
    throw Object.assign(err as object, { stage: (err as { stage?: CopyStage }).stage ?? 'copy' });
  });
}

/** The worker's code: self-contained (it runs from its source text). */
function copyMain(wt: SourceWorkerContext): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const job = wt.workerData as CopyJob & { window: number; maxAhead: number; ioBytes: number };
  const port = wt.parentPort;
  let stage: CopyStage = 'copy';

  // Reads [at, at + n) fully, or fails.
  const readAt = (fd: number, buf: Buffer, n: number, at: number): void => {
    let done = 0;
    while (done < n) {
      const got = fs.readSync(fd, buf, done, Math.min(job.ioBytes, n - done), at + done);
      if (got === 0) throw Object.assign(new Error(`file is shorter than ${at + n} bytes`), { code: 'EIO' });
      done += got;
    }
  };
  const writeAt = (fd: number, buf: Buffer, n: number, at: number): void => {
    let done = 0;
    while (done < n) done += fs.writeSync(fd, buf, done, Math.min(job.ioBytes, n - done), at + done);
  };
  const datasync = (fd: number): Promise<void> =>
    new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));

  async function run(): Promise<CopyResult> {
    const hash = crypto.createHash('sha256');
    const size = Math.min(job.window, Math.max(job.length, 1));
    const copied = Buffer.allocUnsafe(size);
    const readBack = Buffer.allocUnsafe(size);
    // written >= synced, both on window boundaries (or the end).
    let written = 0;
    let synced = 0;
    let syncing: Promise<void> | undefined;
    let syncError: unknown;
    const startSync = (): void => {
      const target = written;
      syncing = datasync(job.dst).then(
        () => {
          synced = target;
          syncing = undefined;
        },
        (err: unknown) => {
          syncError = err;
          syncing = undefined;
        },
      );
    };
    const syncFailed = (): void => {
      if (syncError === undefined) return;
      stage = 'copy';
      throw syncError;
    };
    while (written < job.length) {
      const n = Math.min(size, job.length - written);
      stage = 'copy';
      readAt(job.src, copied, n, written);
      writeAt(job.dst, copied, n, written);
      if (job.flipAt !== undefined && job.flipAt >= written && job.flipAt < written + n) {
        fs.writeSync(job.dst, Buffer.from([copied[job.flipAt - written] ^ 0xff]), 0, 1, job.flipAt);
      }
      stage = 'verify';
      readAt(job.dst, readBack, n, written);
      if (!readBack.subarray(0, n).equals(copied.subarray(0, n))) {
        // The descriptors stay open until this answers: no fdatasync of the copy may still be running then.
        while (syncing !== undefined) await syncing;
        return { sha256: '', differs: [written, written + n] };
      }
      hash.update(readBack.subarray(0, n));
      written += n;
      if (syncing === undefined) startSync();
      // One turn of this thread's loop, so a finished fdatasync is seen; and
      // never more than MAX_AHEAD windows written past the synced point.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (syncing !== undefined && written - synced > job.maxAhead * size) await syncing;
      syncFailed();
    }
    while (syncing !== undefined) await syncing;
    syncFailed();
    if (synced < written) {
      startSync();
      await syncing;
      syncFailed();
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
