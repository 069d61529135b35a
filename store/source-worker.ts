/**
 * Runs a self-contained function in a worker thread, from its source text
 * (so the worker imports nothing of ours and needs no separate file in
 * dist/), and settles with the one message it posts back:
 * `{ok: true, result}` or `{ok: false, message, code?, ...details}`.
 *
 * Functions the worker needs from elsewhere go in `deps`: each must be
 * self-contained too, and reaches `main` as the same-named member of its
 * second argument, from its own source text.
 *
 * Threads are kept for the next job: starting one costs 55-70 ms of CPU
 * here (a new V8 isolate and Node's bootstrap), as much as checking ~50 MB of
 * records, and a maintenance run starts one to three per table. A thread
 * that answered goes back to an idle list (at most MAX_IDLE, each ended
 * after IDLE_MS unused, unref'd meanwhile so it never keeps the process
 * alive). A job's function is compiled once per thread. A thread that was
 * aborted, failed or exited is never reused. So a main must leave nothing
 * running (timers, pending I/O) once it has posted its answer.
 */
import { Worker } from 'node:worker_threads';

/** What a source worker posts back, once. */
export type SourceWorkerMessage<T> = { ok: true; result: T } | { ok: false; message: string; code?: string; [detail: string]: unknown };

/** What a job's main gets in place of `node:worker_threads`. */
export interface SourceWorkerContext {
  /** The job's data (a structured clone, as for a Worker's workerData). */
  workerData: unknown;
  /** Where the answer goes: the first message posted is the job's answer; later ones are dropped. */
  parentPort: { postMessage(message: unknown): void };
}

/** Idle threads kept at most (a backup uses two at once, a compaction one). */
const MAX_IDLE = 2;
/** An idle thread is ended after this long unused (ms). */
const IDLE_MS = 10_000;

/**
 * The code every pooled thread runs: it takes jobs one at a time, compiles
 * each job's source once (by its text), and tags the answer with the job's
 * id. A main that throws before answering answers with the error.
 */
const HOST_SOURCE = `
const wt = require('node:worker_threads');
const compiled = new Map();
wt.parentPort.on('message', (job) => {
  let answered = false;
  const parentPort = {
    postMessage(message) {
      if (answered) return;
      answered = true;
      wt.parentPort.postMessage({ id: job.id, message });
    },
  };
  try {
    let run = compiled.get(job.source);
    if (run === undefined) {
      run = new Function('require', 'return ' + job.source)(require);
      compiled.set(job.source, run);
    }
    run({ workerData: job.workerData, parentPort });
  } catch (err) {
    parentPort.postMessage({ ok: false, message: String((err && err.message) || err), code: err && err.code });
  }
});
`;

interface PooledThread {
  worker: Worker;
  idleTimer?: NodeJS.Timeout;
  /** Set once the thread has failed or exited: it is never handed out again. */
  dead: boolean;
}

const idle: PooledThread[] = [];
let nextJobId = 1;

function takeThread(): PooledThread {
  const thread = idle.pop();
  if (thread !== undefined) {
    clearTimeout(thread.idleTimer);
    thread.idleTimer = undefined;
    thread.worker.ref();
    return thread;
  }
  const worker = new Worker(HOST_SOURCE, { eval: true });
  const fresh: PooledThread = { worker, dead: false };
  // For the thread's whole life, not only while a job runs: an error while
  // it is idle (something a job left running) must neither go unhandled,
  // which would end the process, nor leave a dead thread in the idle list.
  const retire = (): void => {
    fresh.dead = true;
    clearTimeout(fresh.idleTimer);
    const at = idle.indexOf(fresh);
    if (at >= 0) idle.splice(at, 1);
  };
  worker.on('error', retire);
  worker.on('exit', retire);
  return fresh;
}

function giveBack(thread: PooledThread): void {
  if (thread.dead) return;
  if (idle.length >= MAX_IDLE) {
    void thread.worker.terminate();
    return;
  }
  thread.worker.unref();
  thread.idleTimer = setTimeout(() => {
    const at = idle.indexOf(thread);
    if (at >= 0) idle.splice(at, 1);
    void thread.worker.terminate();
  }, IDLE_MS);
  thread.idleTimer.unref();
  idle.push(thread);
}

/** Ends every idle thread (a stopping service calls this; running jobs are not touched). Resolves once they have exited. */
export async function closeIdleSourceWorkers(): Promise<void> {
  const threads = idle.splice(0);
  await Promise.all(
    threads.map((t) => {
      clearTimeout(t.idleTimer);
      return t.worker.terminate();
    }),
  );
}

/** Idle threads kept now (for tests). */
export function idleSourceWorkers(): number {
  return idle.length;
}

/**
 * Runs `main` (called with a SourceWorkerContext) in a pooled thread with
 * `workerData`; resolves with its result. Rejects with its failure (`code`
 * and any other fields of the message kept), or when the thread cannot run
 * or exits without answering (`what` names it then). When `signal` is
 * aborted first, the thread is terminated and the promise rejects with the
 * signal's reason once it has exited (so the descriptors it used can be
 * closed then).
 */
export function runSourceWorker<T, D extends Record<string, (...args: never[]) => unknown> = Record<never, never>>(
  main: (wt: SourceWorkerContext, deps: D) => void,
  workerData: unknown,
  what: string,
  signal?: AbortSignal,
  deps?: D,
): Promise<T> {
  if (signal?.aborted === true) return Promise.reject(signal.reason);
  const depsSource = `{${Object.entries(deps ?? {})
    .map(([name, fn]) => `${JSON.stringify(name)}: (${fn.toString()})`)
    .join(', ')}}`;
  const source = `(() => { const deps = ${depsSource}; const main = (${main.toString()}); return (wt) => main(wt, deps); })()`;
  return new Promise((resolve, reject) => {
    const thread = takeThread();
    const { worker } = thread;
    const id = nextJobId++;
    let settled = false;
    const cleanup = (): void => {
      signal?.removeEventListener('abort', onAbort);
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onAbort = (): void => {
      if (!settled) void worker.terminate();
    };
    const onMessage = (reply: { id: number; message: SourceWorkerMessage<T> }): void => {
      if (settled || reply.id !== id) return;
      settled = true;
      cleanup();
      giveBack(thread);
      const msg = reply.message;
      if (msg.ok) resolve(msg.result);
      else {
        // The failure's other fields (code, the stage it failed in, ...) stay on the error.
        const { ok: _ok, message, ...details } = msg;
        reject(Object.assign(new Error(message), details));
      }
    };
    const onError = (err: Error): void => {
      // The thread exits after an uncaught error; the promise settles then, with this error.
      if (settled) return;
      settled = true;
      worker.once('exit', () => {
        cleanup();
        reject(err);
      });
    };
    const onExit = (code: number): void => {
      cleanup();
      if (settled) return;
      settled = true;
      reject(signal?.aborted === true ? signal.reason : new Error(`${what} exited with code ${code}`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
    worker.postMessage({ id, source, workerData });
  });
}
