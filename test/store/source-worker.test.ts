import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { recordCrc } from '../../store/crc';
import { copyInWorker } from '../../store/copy-worker';
import { runSourceWorker } from '../../store/source-worker';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-worker-');

/** A worker that never answers: it only keeps itself alive. */
function silentMain(): void {
  setInterval(() => undefined, 1000);
}

/** A worker that answers at once. */
function answerMain(wt: typeof import('node:worker_threads')): void {
  wt.parentPort!.postMessage({ ok: true, result: 42 });
}

/** A worker that answers with what a function it was given returns. */
function depsMain(wt: typeof import('node:worker_threads'), deps: { recordCrc: typeof recordCrc }): void {
  const data = Buffer.from(wt.workerData as string);
  wt.parentPort!.postMessage({ ok: true, result: deps.recordCrc().crc32(data, 0, data.length) });
}

describe('source workers', () => {
  test('source worker - functions given as deps run in the worker from their own source', async () => {
    const text = 'x'.repeat(1000);
    const got = await runSourceWorker<number, { recordCrc: typeof recordCrc }>(depsMain, text, 'deps worker', undefined, { recordCrc });
    expect(got).toBe(crc32(Buffer.from(text)));
  });

  test('source worker - an abort terminates a worker that has not answered, and rejects with the reason once it has exited', async () => {
    const abort = new AbortController();
    const reason = new Error('closing');
    const run = runSourceWorker<number>(silentMain, {}, 'silent worker', abort.signal);
    abort.abort(reason);
    // Only an exited worker settles the promise (so its descriptors may be closed then).
    await expect(run).rejects.toBe(reason);
  });

  test('source worker - an aborted signal starts nothing, and an abort after the answer changes nothing', async () => {
    const reason = new Error('already');
    await expect(runSourceWorker<number>(answerMain, {}, 'answer worker', AbortSignal.abort(reason))).rejects.toBe(reason);
    const abort = new AbortController();
    const value = await runSourceWorker<number>(answerMain, {}, 'answer worker', abort.signal);
    abort.abort(new Error('late'));
    expect(value).toBe(42);
  });

  test('source worker - an aborted copy stops before it is done, and rejects with the reason, not as a failed copy', async () => {
    const from = path.join(tmp.dir, 'from');
    const to = path.join(tmp.dir, 'to');
    const length = 64 * 1024 * 1024;
    fs.writeFileSync(from, Buffer.alloc(length, 7));
    const src = fs.openSync(from, 'r');
    const dst = fs.openSync(to, 'w+');
    try {
      const abort = new AbortController();
      const reason = new Error('closing');
      const copy = copyInWorker({ src, dst, length }, abort.signal);
      abort.abort(reason);
      const err = await copy.catch((e: unknown) => e);
      expect(err).toBe(reason);
      expect(err).not.toHaveProperty('stage');
      expect(fs.fstatSync(dst).size).toBeLessThan(length);
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
  });
});
