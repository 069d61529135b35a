import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { recordCrc } from '../../store/crc';
import { copyInWorker } from '../../store/copy-worker';
import { closeIdleSourceWorkers, idleSourceWorkers, runSourceWorker, type SourceWorkerContext } from '../../store/source-worker';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-worker-');

/** A worker that never answers: it only keeps itself alive. */
function silentMain(): void {
  setInterval(() => undefined, 1000);
}

/** A worker that answers at once. */
function answerMain(wt: SourceWorkerContext): void {
  wt.parentPort.postMessage({ ok: true, result: 42 });
}

/** A worker that answers with what a function it was given returns. */
function depsMain(wt: SourceWorkerContext, deps: { recordCrc: typeof recordCrc }): void {
  const data = Buffer.from(wt.workerData as string);
  wt.parentPort.postMessage({ ok: true, result: deps.recordCrc().crc32(data, 0, data.length) });
}

/** A worker that answers with the id of the thread it runs on. */
function threadMain(wt: SourceWorkerContext): void {
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  wt.parentPort.postMessage({ ok: true, result: threads.threadId });
}

/** A worker that answers twice: only the first answer counts. */
function twiceMain(wt: SourceWorkerContext): void {
  wt.parentPort.postMessage({ ok: true, result: 1 });
  wt.parentPort.postMessage({ ok: true, result: 2 });
}

/** A worker that throws before answering. */
function throwMain(): void {
  throw Object.assign(new Error('broken job'), { code: 'EBROKEN' });
}

/** A worker whose job fails after it started, outside any handler: the thread dies. */
function crashMain(): void {
  setImmediate(() => {
    throw new Error('crashed later');
  });
}

/** A worker that answers with its thread's id, then fails outside any handler while its thread sits idle. */
function failLaterMain(wt: SourceWorkerContext): void {
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  wt.parentPort.postMessage({ ok: true, result: threads.threadId });
  setTimeout(() => {
    throw new Error('failed after answering');
  }, 20);
}

describe('source workers', () => {
  afterEach(() => closeIdleSourceWorkers());

  test('source worker - a thread that answered runs the next job, and closing the idle ones ends it', async () => {
    const first = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    expect(idleSourceWorkers()).toBe(1);
    const second = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    expect(second).toBe(first);
    await closeIdleSourceWorkers();
    expect(idleSourceWorkers()).toBe(0);
    const third = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    expect(third).not.toBe(first);
  });

  test('source worker - jobs at once run on threads of their own, and at most two are kept idle', async () => {
    const ids = await Promise.all([1, 2, 3].map(() => runSourceWorker<number>(threadMain, {}, 'thread worker')));
    expect(new Set(ids).size).toBe(3);
    expect(idleSourceWorkers()).toBe(2);
  });

  test('source worker - a second answer from a job is dropped, not taken as the next job\'s', async () => {
    await expect(runSourceWorker<number>(twiceMain, {}, 'twice worker')).resolves.toBe(1);
    await expect(runSourceWorker<number>(answerMain, {}, 'answer worker')).resolves.toBe(42);
  });

  test('source worker - a job that throws rejects with its error and code, and its thread stays usable', async () => {
    const before = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    await expect(runSourceWorker<number>(throwMain, {}, 'throw worker')).rejects.toMatchObject({ message: 'broken job', code: 'EBROKEN' });
    await expect(runSourceWorker<number>(threadMain, {}, 'thread worker')).resolves.toBe(before);
  });

  test('source worker - a thread that died of an uncaught error rejects its job and is not used again', async () => {
    const before = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    await expect(runSourceWorker<number>(crashMain, {}, 'crash worker')).rejects.toThrow('crashed later');
    expect(idleSourceWorkers()).toBe(0);
    await expect(runSourceWorker<number>(threadMain, {}, 'thread worker')).resolves.not.toBe(before);
  });

  test('source worker - a thread that fails while idle leaves the idle list, and the process goes on', async () => {
    const first = await runSourceWorker<number>(failLaterMain, {}, 'fail-later worker');
    expect(idleSourceWorkers()).toBe(1);
    // Its failure is an 'error' event with no job listening: handled by the pool, which drops the thread.
    while (idleSourceWorkers() > 0) await new Promise((r) => setTimeout(r, 10));
    await expect(runSourceWorker<number>(threadMain, {}, 'thread worker')).resolves.not.toBe(first);
  });

  test('source worker - an aborted thread is not used again', async () => {
    const before = await runSourceWorker<number>(threadMain, {}, 'thread worker');
    const abort = new AbortController();
    // It takes the idle thread: the abort terminates that one.
    const run = runSourceWorker<number>(silentMain, {}, 'silent worker', abort.signal);
    abort.abort(new Error('closing'));
    await expect(run).rejects.toThrow('closing');
    expect(idleSourceWorkers()).toBe(0);
    await expect(runSourceWorker<number>(threadMain, {}, 'thread worker')).resolves.not.toBe(before);
  });

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
