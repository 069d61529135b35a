/**
 * A write workload for store maintenance tests (compaction, backup): writers
 * doing puts, overwrites and deletes on a table while something else runs,
 * with a record of every operation so tests can say what the table must
 * hold: after everything settled (`expected`), or after a crash at a chosen
 * moment (`allowedNow`).
 *
 * Every put writes a unique value (`<op id>:<padding>`), so a value read back
 * names the operation that wrote it.
 */
import * as fs from 'node:fs';
import { TableFile } from '../../store';

/** One operation, in the order it was issued on its key. */
export interface IssuedOp {
  id: number;
  /** The value a put wrote; undefined for a delete. */
  value: string | undefined;
  state: 'pending' | 'acked' | 'failed';
}

/** Writers and a history of what they issued. */
export class Workload {
  /** Operations per key, in issue order. */
  readonly history = new Map<string, IssuedOp[]>();
  acked = 0;
  failed = 0;
  private nextId = 0;
  private seed: number;
  private running: Promise<void>[] = [];
  private stopped = false;

  constructor(
    /** The table the operations go to (may be replaced by a reopened one). */
    public table: TableFile,
    private readonly opts: { keys: number; valueBytes: number; seed?: number; deleteEvery?: number },
  ) {
    this.seed = opts.seed ?? 1;
  }

  /** Deterministic pseudo-random integer in [0, n). */
  rand(n: number): number {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    return (this.seed >>> 8) % n;
  }

  key(i: number): string {
    return `key:${String(i).padStart(6, '0')}`;
  }

  /** Issues a put (not awaited by the caller unless it wants to); the value is about `valueBytes` long. */
  put(key: string, valueBytes = this.opts.valueBytes): Promise<void> {
    const id = this.nextId++;
    const value = `${id}:${'v'.repeat(Math.max(0, valueBytes - String(id).length - 1))}`;
    const op = this.note(key, { id, value, state: 'pending' });
    return this.track(op, this.table.put(key, Buffer.from(value)));
  }

  /** Issues a delete. */
  delete(key: string): Promise<void> {
    const op = this.note(key, { id: this.nextId++, value: undefined, state: 'pending' });
    return this.track(op, this.table.delete(key));
  }

  /** Issues one random operation on a random key of [from, to). */
  randomOp(from = 0, to = this.opts.keys): Promise<void> {
    const key = this.key(from + this.rand(to - from));
    return this.rand(this.opts.deleteEvery ?? 5) === 0 ? this.delete(key) : this.put(key);
  }

  /** Loads every key once (awaited), then deletes and overwrites some. */
  async fill(): Promise<void> {
    const puts: Promise<void>[] = [];
    for (let i = 0; i < this.opts.keys; i++) puts.push(this.put(this.key(i)));
    await Promise.all(puts);
    const more: Promise<void>[] = [];
    for (let i = 0; i < this.opts.keys; i++) {
      if (i % 3 === 0) more.push(this.put(this.key(i)));
      else if (i % 7 === 0) more.push(this.delete(this.key(i)));
    }
    await Promise.all(more);
  }

  /** Starts `writers` loops of random operations, each on its own slice of the keys, until stop(). */
  start(writers: number): void {
    this.stopped = false;
    const slice = Math.floor(this.opts.keys / writers);
    for (let w = 0; w < writers; w++) {
      this.running.push(
        (async () => {
          while (!this.stopped) await this.randomOp(w * slice, (w + 1) * slice).catch(() => undefined);
        })(),
      );
    }
  }

  /** Stops the loops and waits for them. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
    this.running = [];
  }

  /** The state once every operation has settled: the last operation of each key that did not fail. */
  expected(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [key, ops] of this.history) {
      for (let i = ops.length - 1; i >= 0; i--) {
        if (ops[i].state === 'pending') throw new Error(`operation ${ops[i].id} on ${key} has not settled`);
        if (ops[i].state === 'failed') continue;
        if (ops[i].value !== undefined) out.set(key, ops[i].value!);
        break;
      }
    }
    return out;
  }

  /**
   * What a crash right now may leave for each key: the value of its last
   * acknowledged operation, or of any operation issued after it (it may have
   * reached the disk without its acknowledgement); absent too when nothing
   * was acknowledged.
   */
  allowedNow(): Map<string, Set<string | undefined>> {
    const out = new Map<string, Set<string | undefined>>();
    for (const [key, ops] of this.history) {
      let last = -1;
      ops.forEach((op, i) => {
        if (op.state === 'acked') last = i;
      });
      const allowed = new Set(ops.slice(Math.max(last, 0)).map((op) => op.value));
      if (last < 0) allowed.add(undefined);
      out.set(key, allowed);
    }
    return out;
  }

  /** The value each key shows right now (writes are visible before they are durable): its last issued, not failed, operation. */
  visible(key: string): string | undefined {
    const ops = this.history.get(key) ?? [];
    for (let i = ops.length - 1; i >= 0; i--) if (ops[i].state !== 'failed') return ops[i].value;
    return undefined;
  }

  private note(key: string, op: IssuedOp): IssuedOp {
    let ops = this.history.get(key);
    if (ops === undefined) this.history.set(key, (ops = []));
    ops.push(op);
    return op;
  }

  private track(op: IssuedOp, p: Promise<unknown>): Promise<void> {
    return p.then(
      () => {
        op.state = 'acked';
        this.acked++;
      },
      (err: unknown) => {
        op.state = 'failed';
        this.failed++;
        throw err;
      },
    );
  }
}

/** Every key and value of a table (through select, in pages). */
export function contents(table: TableFile): Map<string, string> {
  const out = new Map<string, string>();
  let after: string | undefined;
  for (;;) {
    const page = table.select({ after, limit: 1000 });
    for (const item of page.items) out.set(item.key, item.value.toString());
    if (page.next === undefined) return out;
    after = page.next;
  }
}

/** Checks that `actual` is one of the allowed states; returns the problems (empty when fine). */
export function crashProblems(allowed: Map<string, Set<string | undefined>>, actual: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [key, values] of allowed) {
    const got = actual.get(key);
    if (!values.has(got)) problems.push(`${key}: found ${got?.slice(0, 12)}, allowed ${[...values].map((v) => v?.slice(0, 12)).join(' | ')}`);
  }
  for (const key of actual.keys()) if (!allowed.has(key)) problems.push(`${key}: never written`);
  return problems;
}

/** Copies every file of `dir` into `into` (synchronously: the state of the files at this instant, as a kill -9 would leave it). */
export function snapshotDir(dir: string, into: string): void {
  fs.mkdirSync(into, { recursive: true });
  for (const name of fs.readdirSync(dir)) {
    const from = `${dir}/${name}`;
    if (fs.statSync(from).isFile()) fs.copyFileSync(from, `${into}/${name}`);
  }
}
