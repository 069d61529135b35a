/**
 * A bounded, in-memory delivery queue for one notification channel target
 * (one webhook URL, or the Web Push subscribers). `push` never blocks and
 * never throws: when the queue is full the oldest waiting item is dropped
 * with a warning. Workers run attempts with a timeout on the injected clock,
 * retry what the attempt calls retriable with exponential backoff up to a
 * bound, and report every final outcome. Nothing here can reject into the
 * caller, so a hung or failing receiver never reaches the service.
 */
import type { Logger } from 'pino';
import type { Clock } from '../supervisor';

/** What one attempt decided. */
export type AttemptResult =
  | { kind: 'ok' }
  /** `afterMs`: how long the receiver asked to wait (Retry-After), when it did. */
  | { kind: 'retry'; reason: string; afterMs?: number }
  | { kind: 'fail'; reason: string }
  | { kind: 'gone'; reason: string };

/** The final outcome of one item, as counted in metrics. */
export type DeliveryOutcome = 'sent' | 'failed' | 'dropped' | 'gone';

/** What a `DeliveryQueue` needs. */
export interface DeliveryQueueOptions<T> {
  /** For logs: `webhook` or `webpush`. */
  channel: string;
  /** For logs: which target (a URL without its query, or `subscribers`). */
  target: string;
  clock: Clock;
  logger: Logger;
  /** Items waiting (not in flight) before the oldest is dropped. */
  capacity: number;
  /**
   * Bytes the waiting items may hold (as `sizeOf` counts them) before the
   * oldest is dropped; default no bound. One item larger than this still
   * waits alone.
   */
  maxBytes?: number;
  /** The size of an item for `maxBytes`. */
  sizeOf?(item: T): number;
  /** Attempts per item, the first included. */
  maxAttempts: number;
  /** Per-attempt timeout; the attempt's signal aborts then and the attempt counts as retriable. */
  timeoutMs: number;
  /** Backoff before attempt n+1 is `min(maxBackoffMs, baseBackoffMs * 2^(n-1))`. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Items in flight at once; 1 keeps the order of delivery. */
  concurrency?: number;
  /** Runs one attempt. A throw counts as retriable. */
  attempt(item: T, attemptNo: number, signal: AbortSignal): Promise<AttemptResult>;
  /** Told once per item when it is settled. */
  onOutcome(item: T, outcome: DeliveryOutcome): void;
  /** Log fields describing an item (event, table); never secrets. */
  describe(item: T): Record<string, unknown>;
}

interface Waiter {
  timer: unknown;
  wake(): void;
}

/** See the module comment. */
export class DeliveryQueue<T> {
  private readonly opts: DeliveryQueueOptions<T>;
  private readonly waiting: T[] = [];
  /** What the waiting items hold, by `sizeOf`. */
  private waitingBytes = 0;
  private readonly controllers = new Set<AbortController>();
  private readonly sleepers = new Set<Waiter>();
  private readonly idleWaiters: (() => void)[] = [];
  private active = 0;
  /** Once flushing, backoff sleeps are cut short: what is queued is tried again at once, still within maxAttempts. */
  private flushing = false;
  private closed = false;

  constructor(opts: DeliveryQueueOptions<T>) {
    this.opts = opts;
  }

  /** Items waiting plus in flight. */
  get size(): number {
    return this.waiting.length + this.active;
  }

  /** Bytes the waiting items hold (0 without `sizeOf`). */
  get bytes(): number {
    return this.waitingBytes;
  }

  /** Queues an item; drops the oldest waiting ones when full (by count, or by bytes). Ignored once closed. */
  push(item: T): void {
    if (this.closed) {
      this.settle(item, 'dropped', 'the notifier is stopped');
      return;
    }
    if (this.waiting.length >= this.opts.capacity) {
      const oldest = this.take();
      if (oldest !== undefined) this.settle(oldest, 'dropped', `queue full (${this.opts.capacity}); dropped the oldest`);
    }
    const size = this.sizeOf(item);
    const maxBytes = this.opts.maxBytes ?? Infinity;
    // The count alone bounded nothing in bytes: 1000 events of 400 KB from
    // whoever may publish `backups.>` held 2.6 GB waiting for a dead receiver.
    while (this.waiting.length > 0 && this.waitingBytes + size > maxBytes) {
      const oldest = this.take();
      if (oldest !== undefined) this.settle(oldest, 'dropped', `queue full (${maxBytes} bytes); dropped the oldest`);
    }
    this.waiting.push(item);
    this.waitingBytes += size;
    this.pump();
  }

  private sizeOf(item: T): number {
    return this.opts.sizeOf?.(item) ?? 0;
  }

  /** The oldest waiting item, out of the queue. */
  private take(): T | undefined {
    const item = this.waiting.shift();
    if (item !== undefined) this.waitingBytes -= this.sizeOf(item);
    return item;
  }

  /**
   * Delivers what is queued, without backoff waits, for at most `deadlineMs`
   * on the clock; then aborts what is in flight and drops what is left.
   * Later pushes are dropped. Resolves with how many items were dropped here.
   */
  async close(deadlineMs: number): Promise<number> {
    this.flushing = true;
    for (const s of [...this.sleepers]) s.wake();
    let timedOut = false;
    let timer: unknown;
    const deadline = new Promise<void>((resolve) => {
      timer = this.opts.clock.setTimeout(() => {
        timedOut = true;
        resolve();
      }, deadlineMs);
    });
    await Promise.race([this.idle(), deadline]);
    this.opts.clock.clearTimeout(timer);
    this.closed = true;
    let dropped = 0;
    if (timedOut) {
      for (const item of this.waiting.splice(0)) {
        dropped++;
        this.settle(item, 'dropped', 'shutdown deadline reached');
      }
      this.waitingBytes = 0;
      for (const c of this.controllers) c.abort(new Error('shutdown deadline reached'));
      // Aborted attempts settle within a few microtasks (the abort is raced), so this cannot hang.
      dropped += this.active;
      await this.idle();
    }
    return dropped;
  }

  private idle(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    const limit = this.opts.concurrency ?? 1;
    while (this.active < limit && this.waiting.length > 0) {
      const item = this.take() as T;
      this.active++;
      void this.deliver(item).finally(() => {
        this.active--;
        this.pump();
        if (this.size === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  private async deliver(item: T): Promise<void> {
    const { maxAttempts } = this.opts;
    let last = 'no attempt made';
    for (let n = 1; n <= maxAttempts; n++) {
      if (this.closed) return this.settle(item, 'dropped', 'shutdown deadline reached');
      const result = await this.attemptOnce(item, n);
      if (result.kind === 'ok') return this.settle(item, 'sent');
      if (result.kind === 'fail' || result.kind === 'gone') return this.settle(item, result.kind === 'gone' ? 'gone' : 'failed', result.reason);
      last = result.reason;
      if (this.closed) return this.settle(item, 'dropped', `shutdown deadline reached: ${last}`);
      if (n < maxAttempts) {
        // The backoff, or longer when the receiver asked for it (Retry-After), within maxBackoffMs.
        const maxMs = this.opts.maxBackoffMs ?? 60_000;
        const waitMs = Math.min(maxMs, Math.max((this.opts.baseBackoffMs ?? 1000) * 2 ** (n - 1), result.kind === 'retry' ? (result.afterMs ?? 0) : 0));
        this.opts.logger.warn({ op: 'notify', channel: this.opts.channel, target: this.opts.target, ...this.opts.describe(item), attempt: n, retryInMs: waitMs, reason: last }, 'notification attempt failed; will retry');
        await this.sleep(waitMs);
      }
    }
    this.settle(item, 'failed', `gave up after ${maxAttempts} attempt(s): ${last}`);
  }

  private async attemptOnce(item: T, n: number): Promise<AttemptResult> {
    const controller = new AbortController();
    this.controllers.add(controller);
    let timer: unknown;
    // Raced, not only signalled: an attempt that ignores its signal still cannot hold the worker.
    const timeout = new Promise<AttemptResult>((resolve) => {
      timer = this.opts.clock.setTimeout(() => {
        controller.abort(new Error(`timed out after ${this.opts.timeoutMs} ms`));
        resolve({ kind: 'retry', reason: `timed out after ${this.opts.timeoutMs} ms` });
      }, this.opts.timeoutMs);
    });
    const aborted = new Promise<AttemptResult>((resolve) => {
      controller.signal.addEventListener('abort', () => resolve({ kind: 'retry', reason: String((controller.signal.reason as Error)?.message ?? 'aborted') }), { once: true });
    });
    try {
      // Through a promise, so that even a synchronous throw counts as a retriable failure.
      const run = Promise.resolve()
        .then(() => this.opts.attempt(item, n, controller.signal))
        .catch((err: unknown): AttemptResult => ({ kind: 'retry', reason: (err as Error)?.message ?? String(err) }));
      return await Promise.race([run, timeout, aborted]);
    } finally {
      this.opts.clock.clearTimeout(timer);
      this.controllers.delete(controller);
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.flushing) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter: Waiter = {
        timer: undefined,
        wake: () => {
          this.opts.clock.clearTimeout(waiter.timer);
          this.sleepers.delete(waiter);
          resolve();
        },
      };
      waiter.timer = this.opts.clock.setTimeout(() => waiter.wake(), ms);
      this.sleepers.add(waiter);
    });
  }

  private settle(item: T, outcome: DeliveryOutcome, reason?: string): void {
    const fields = { op: 'notify', channel: this.opts.channel, target: this.opts.target, ...this.opts.describe(item), outcome, reason };
    if (outcome === 'sent') this.opts.logger.info(fields, 'notification delivered');
    else if (outcome === 'gone') this.opts.logger.info(fields, 'push subscription is gone');
    else this.opts.logger.warn(fields, outcome === 'dropped' ? 'notification dropped' : 'notification not delivered');
    try {
      this.opts.onOutcome(item, outcome);
    } catch (err) {
      this.opts.logger.error({ op: 'notify', channel: this.opts.channel, err }, 'notification outcome handler failed');
    }
  }
}
