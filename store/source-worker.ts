/**
 * Runs a self-contained function in a new worker thread, from its source
 * text (so the worker imports nothing of ours and needs no separate file in
 * dist/), and settles with the one message it posts back:
 * `{ok: true, result}` or `{ok: false, message, code?, ...details}`.
 *
 * Functions the worker needs from elsewhere go in `deps`: each must be
 * self-contained too, and reaches `main` as the same-named member of its
 * second argument, from its own source text.
 */
import { Worker } from 'node:worker_threads';

/** What a source worker posts back, once. */
export type SourceWorkerMessage<T> = { ok: true; result: T } | { ok: false; message: string; code?: string; [detail: string]: unknown };

/**
 * Starts `main` (called with `node:worker_threads`) in a worker with
 * `workerData`; resolves with its result. Rejects with its failure (`code`
 * and any other fields of the message kept), or when the worker cannot run or exits without answering (`what`
 * names it then). When `signal` is aborted first, the worker is terminated
 * and the promise rejects with the signal's reason once the worker has
 * exited (so the descriptors it used can be closed then).
 */
export function runSourceWorker<T, D extends Record<string, (...args: never[]) => unknown> = Record<never, never>>(
  main: (wt: typeof import('node:worker_threads'), deps: D) => void,
  workerData: unknown,
  what: string,
  signal?: AbortSignal,
  deps?: D,
): Promise<T> {
  if (signal?.aborted === true) return Promise.reject(signal.reason);
  const depsSource = `{${Object.entries(deps ?? {})
    .map(([name, fn]) => `${JSON.stringify(name)}: (${fn.toString()})`)
    .join(', ')}}`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(`(${main.toString()})(require('node:worker_threads'), ${depsSource});`, { eval: true, workerData });
    let settled = false;
    const onAbort = (): void => {
      if (!settled) void worker.terminate();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (msg: SourceWorkerMessage<T>) => {
      settled = true;
      if (msg.ok) resolve(msg.result);
      else {
        // The failure's other fields (code, the stage it failed in, ...) stay on the error.
        const { ok: _ok, message, ...details } = msg;
        reject(Object.assign(new Error(message), details));
      }
    });
    worker.once('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      signal?.removeEventListener('abort', onAbort);
      if (settled) return;
      settled = true;
      reject(signal?.aborted === true ? signal.reason : new Error(`${what} exited with code ${code}`));
    });
  });
}
