/**
 * A StoreFs that wraps another and can fail a chosen call: "the 3rd write from
 * now fails with EIO", optionally after writing part of its bytes. It also
 * counts every call per operation (so tests can check how many fdatasyncs a
 * group commit cost), can hold the next call of an operation until the test
 * releases it (to build an exact interleaving), and can tell when a call of an
 * operation has completed (so tests wait for events, not for time).
 */
import * as path from 'node:path';
import { nodeStoreFs, OpenMode, StoreFs, StoreFsOp } from '../../store';

/** One armed fault. */
export interface Fault {
  op: StoreFsOp;
  /** Fail the nth call of `op` counted from when the fault was armed (1 = the next call). */
  nth: number;
  /** errno code of the thrown error; default EIO. */
  code?: string;
  /** For `write`: write this many bytes of the request before failing (a torn write). */
  partialBytes?: number;
  /** Keep failing every call from the nth on (default: only the nth). */
  sticky?: boolean;
  /**
   * For `write`: do not fail; write the bytes changed and report success (a
   * silent corruption, for read-back verification tests): `true` flips the
   * first byte, a function rewrites a copy of the bytes.
   */
  corrupt?: boolean | ((bytes: Buffer) => void);
}

/** StoreFs with call counters and injectable failures. */
export class FaultyFs implements StoreFs {
  /** Calls made so far, per operation (failed calls included). */
  readonly calls: Record<StoreFsOp, number> = {
    open: 0, read: 0, readSync: 0, write: 0, fdatasync: 0, truncate: 0, close: 0,
    size: 0, rename: 0, link: 0, unlink: 0, syncDir: 0, readdir: 0, mkdir: 0,
  };
  /** Faults that have fired, in order. */
  readonly fired: Fault[] = [];
  private faults: { fault: Fault; at: number }[] = [];
  private gates = new Map<StoreFsOp, { reached: () => void; released: Promise<void> }>();
  private watchers: { op: StoreFsOp; done: () => void }[] = [];

  /**
   * Present only with `{syncWrites: true}`: then the write path uses it for
   * small batches, as on the real disk. It counts as `write` and takes the
   * same faults (not holds: a synchronous call cannot wait).
   */
  readonly writeSync?: (fd: number, buf: Buffer, offset: number, length: number, position: number) => number;
  /** Calls of writeSync so far (also counted in calls.write). */
  syncWriteCalls = 0;

  constructor(
    private readonly inner: StoreFs = nodeStoreFs,
    opts: { syncWrites?: boolean } = {},
  ) {
    if (opts.syncWrites === true) this.writeSync = (fd, buf, offset, length, position) => this.syncWrite(fd, buf, offset, length, position);
  }

  /** Arms a fault; it counts calls of `fault.op` from now. */
  failOn(fault: Fault): this {
    this.faults.push({ fault, at: this.calls[fault.op] + fault.nth });
    return this;
  }

  /**
   * Holds the next call of `op` (async operations only) until `release()`.
   * `reached` resolves when that call has started and is being held.
   */
  hold(op: StoreFsOp): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let reached!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const reachedP = new Promise<void>((resolve) => (reached = resolve));
    this.gates.set(op, { reached, released });
    return { reached: reachedP, release };
  }

  /**
   * Resolves when the next call of `op` from now has completed (successfully
   * or not), one setImmediate later, so the caller's continuation has run.
   */
  completed(op: StoreFsOp): Promise<void> {
    return new Promise((done) => this.watchers.push({ op, done }));
  }

  /** Disarms every fault. */
  heal(): void {
    this.faults = [];
  }

  open(file: string, mode: OpenMode): Promise<number> {
    return this.async('open', () => this.inner.open(file, mode));
  }
  read(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.async('read', () => this.inner.read(fd, buf, offset, length, position));
  }
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    const fault = this.check('readSync');
    if (fault) throw errnoError(fault, 'readSync');
    return this.inner.readSync(fd, buf, offset, length, position);
  }
  write(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.async('write', () => this.inner.write(fd, buf, offset, length, position), async (fault) => {
      const bad = corruptedCopy(fault, buf, offset, length);
      if (bad !== undefined) return this.inner.write(fd, bad, 0, bad.length, position);
      const part = Math.min(fault.partialBytes ?? 0, length);
      if (part > 0) await this.inner.write(fd, buf, offset, part, position);
      return undefined;
    });
  }
  fdatasync(fd: number): Promise<void> {
    return this.async('fdatasync', () => this.inner.fdatasync(fd));
  }
  truncate(fd: number, length: number): Promise<void> {
    return this.async('truncate', () => this.inner.truncate(fd, length));
  }
  close(fd: number): Promise<void> {
    return this.async('close', () => this.inner.close(fd));
  }
  size(fd: number): Promise<number> {
    return this.async('size', () => this.inner.size(fd));
  }
  rename(from: string, to: string): Promise<void> {
    return this.async('rename', () => this.inner.rename(from, to));
  }
  link(existing: string, newPath: string): Promise<void> {
    return this.async('link', () => this.inner.link(existing, newPath));
  }
  unlink(file: string): Promise<void> {
    return this.async('unlink', () => this.inner.unlink(file));
  }
  syncDir(dir: string): Promise<void> {
    return this.async('syncDir', () => this.inner.syncDir(dir));
  }
  readdir(dir: string): Promise<string[]> {
    return this.async('readdir', () => this.inner.readdir(dir));
  }
  mkdir(dir: string): Promise<void> {
    return this.async('mkdir', () => this.inner.mkdir(dir));
  }

  private syncWrite(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    const inner = this.inner.writeSync?.bind(this.inner);
    if (inner === undefined) throw new Error('FaultyFs: the wrapped StoreFs has no writeSync');
    if (this.gates.has('write')) throw new Error('FaultyFs: a write is held, but this write is synchronous');
    this.syncWriteCalls++;
    try {
      const fault = this.check('write');
      if (fault === undefined) return inner(fd, buf, offset, length, position);
      const bad = corruptedCopy(fault, buf, offset, length);
      if (bad !== undefined) return inner(fd, bad, 0, bad.length, position);
      const part = Math.min(fault.partialBytes ?? 0, length);
      if (part > 0) inner(fd, buf, offset, part, position);
      throw errnoError(fault, 'write');
    } finally {
      this.notifyCompleted('write');
    }
  }

  /** `beforeFailing` runs when a fault fires; if it returns a value, the call returns that instead of failing. */
  private async async<T>(op: StoreFsOp, fn: () => Promise<T>, beforeFailing?: (fault: Fault) => Promise<T | undefined>): Promise<T> {
    try {
      const gate = this.gates.get(op);
      if (gate !== undefined) {
        this.gates.delete(op);
        gate.reached();
        await gate.released;
      }
      const fault = this.check(op);
      if (fault) {
        const instead = beforeFailing === undefined ? undefined : await beforeFailing(fault);
        if (instead !== undefined) return instead;
        throw errnoError(fault, op);
      }
      return await fn();
    } finally {
      this.notifyCompleted(op);
    }
  }

  /** Tells the `completed(op)` waiters, one setImmediate later. */
  private notifyCompleted(op: StoreFsOp): void {
    const mine = this.watchers.filter((w) => w.op === op);
    this.watchers = this.watchers.filter((w) => w.op !== op);
    for (const w of mine) setImmediate(w.done);
  }

  /** Counts the call and returns the fault it triggers, if any. */
  private check(op: StoreFsOp): Fault | undefined {
    const n = ++this.calls[op];
    const hit = this.faults.find(({ fault, at }) => fault.op === op && (n === at || (fault.sticky === true && n > at)));
    if (hit === undefined) return undefined;
    this.fired.push(hit.fault);
    return hit.fault;
  }
}

/** For a `corrupt` fault: the bytes to write instead (a changed copy); otherwise undefined. */
function corruptedCopy(fault: Fault, buf: Buffer, offset: number, length: number): Buffer | undefined {
  if (fault.corrupt === undefined || fault.corrupt === false) return undefined;
  const bad = Buffer.from(buf.subarray(offset, offset + length));
  if (fault.corrupt === true) {
    if (bad.length > 0) bad[0] ^= 0xff;
  } else {
    fault.corrupt(bad);
  }
  return bad;
}

function errnoError(fault: Fault, op: string): NodeJS.ErrnoException {
  const code = fault.code ?? 'EIO';
  return Object.assign(new Error(`${code}: injected ${op} failure`), { code, syscall: op });
}

/** Fails the first open of the one file named `name` (its base name) with EIO; everything else passes through. */
export class FailsFirstOpenOf extends FaultyFs {
  private failed = false;
  constructor(private readonly name: string) {
    super();
  }
  override open(file: string, mode: OpenMode): Promise<number> {
    if (this.failed || path.basename(file) !== this.name) return super.open(file, mode);
    this.failed = true;
    return Promise.reject(Object.assign(new Error(`EIO: injected open failure of ${file}`), { code: 'EIO', syscall: 'open' }));
  }
}

