/**
 * The embedded bus: subjects, wildcards, queue groups and request/reply
 * inside one process, with the same rules as NATS.
 *
 * Invariants:
 * - Bodies are copied on publish (and once more per extra recipient), so no
 *   two parties ever share a buffer.
 * - Delivery never happens inside `publish`: messages go to one FIFO queue
 *   that a microtask drains, so order is kept per publisher and subscriber.
 *   After `YIELD_EVERY` deliveries the queue is drained from `setImmediate`
 *   instead, so a request/reply loop made only of microtasks cannot starve
 *   timers and I/O.
 * - Subscription matching is cached per subject; any (un)subscribe clears the
 *   cache. A queue group's turn is kept per queue name on the bus, not in the
 *   cache, so that its members share the messages evenly.
 * - A request's reply goes straight to its pending request object, without a
 *   lookup; the unique inbox subject (`_INBOX.<bus>.<n>`) is only built when
 *   someone reads `msg.reply` or a wildcard subscription could see the reply.
 *   A publish to an inbox finds its request by number, and so does a
 *   request to an inbox (a reply that asks something back: the requester
 *   sees a reply subject on it). Timeouts share one timer per length
 *   (`RequestTimers`).
 */
import { randomBytes } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { BadRequestError } from '../store';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  type Bus,
  type Headers,
  type Message,
  type MessageHandler,
  type PublishOptions,
  type RequestOptions,
  type SubscribeOptions,
  type Subscription,
} from './bus';
import { BusClosedError, BusNoRespondersError } from './errors';
import { InflightHandlers, SeqTable } from './seq-table';
import {
  LocalMessage,
  LocalSubscription,
  MatchSet,
  PendingRequest,
  QueueGroup,
  QueueRotation,
  ReplyMessage,
  type LocalBus,
  type Target,
} from './in-process-parts';
import { RequestTimers, type MonotonicClock } from './request-timers';
import {
  checkPattern,
  checkQueue,
  checkSubject,
  checkTimeout,
  copyBody,
  copyHeaders,
  DEFAULT_DRAIN_TIMEOUT_MS,
  isThenable,
  parseSeq,
  settlesWithin,
  tokensMatch,
} from './rules';

/** Options for `InProcessBus`. */
export interface InProcessBusOptions {
  /** Handler failures are logged here; default silent. */
  logger?: Logger;
  /** Monotonic milliseconds for request deadlines; default `performance.now`. */
  clock?: MonotonicClock;
  /** How long `drain()` waits for in-flight handlers before closing anyway; default 10 s. */
  drainTimeoutMs?: number;
}

/** Deliveries after which the queue yields to the event loop once. */
const YIELD_EVERY = 4096;
/** Distinct subjects remembered by the match cache before it starts over. */
const MAX_CACHED_SUBJECTS = 10_000;
const INBOX_ROOT = '_INBOX.';

type BusState = 'open' | 'draining' | 'closed';

/** The in-process `Bus`: no server, same semantics as `NatsBus`. */
export class InProcessBus implements Bus, LocalBus {
  private readonly log: Logger;
  private state: BusState = 'open';
  private subs: LocalSubscription[] = [];
  /** Subscriptions whose pattern could match `_INBOX.*`; while 0, replies skip matching. */
  private inboxWatchers = 0;
  private readonly cache = new Map<string, MatchSet>();
  /** Each queue name's turn, shared by every match set that names it (see QueueRotation). */
  private readonly rotations = new Map<string, QueueRotation>();
  /** Every unsettled request by number (not a Map: see seq-table.ts). */
  private readonly pending = new SeqTable<PendingRequest>();
  private readonly timers: RequestTimers;
  private readonly inboxPrefix = `${INBOX_ROOT}${randomBytes(8).toString('hex')}.`;
  private seq = 0;

  // The delivery queue: parallel arrays, drained from `qHead`.
  private qTargets: (Target | undefined)[] = [];
  private qMsgs: (Message | undefined)[] = [];
  private qHead = 0;
  private scheduled = false;
  private sinceYield = 0;
  private flushWaiters: (() => void)[] = [];
  private readonly inflight = new InflightHandlers();

  private readonly drainTimeoutMs: number;

  constructor(opts: InProcessBusOptions = {}) {
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.timers = new RequestTimers(opts.clock);
    this.drainTimeoutMs = opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  }

  publish(subject: string, data?: Uint8Array, opts?: PublishOptions): void {
    if (this.state === 'closed') throw new BusClosedError();
    const body = copyBody(data);
    const headers = copyHeaders(opts?.headers);
    if (subject.startsWith(INBOX_ROOT)) {
      this.routeInbox(subject, body, headers);
      return;
    }
    let match = this.cache.get(subject);
    if (match === undefined) match = this.computeMatch(subject);
    this.dispatch(match, subject, body, headers, undefined);
  }

  subscribe(subject: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription {
    checkPattern(subject);
    const queue = opts?.queue;
    if (queue !== undefined) checkQueue(queue);
    if (typeof handler !== 'function') throw new BadRequestError('handler must be a function');
    if (this.state !== 'open') throw new BusClosedError();
    const sub = new LocalSubscription(subject, queue, handler, this);
    this.subs.push(sub);
    if (queue !== undefined) {
      let rotation = this.rotations.get(queue);
      if (rotation === undefined) this.rotations.set(queue, (rotation = new QueueRotation()));
      rotation.users++;
    }
    if (watchesInbox(sub.tokens)) this.inboxWatchers++;
    this.cache.clear();
    return sub;
  }

  request(subject: string, data?: Uint8Array, opts?: RequestOptions): Promise<Message> {
    // For an inbox subject the match is only its wildcard watchers (never cached).
    let match = this.cache.get(subject);
    if (match === undefined) match = this.computeMatch(subject);
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    checkTimeout(timeoutMs);
    const headers = copyHeaders(opts?.headers);
    if (this.state !== 'open') return Promise.reject(new BusClosedError());
    // A request to one of our inboxes answers a request with a request, as
    // NATS allows. Our inboxes always have a subscriber there (the
    // requester's inbox subscription lives as long as the connection), so an
    // inbox whose request has settled times out rather than having no responders.
    const ours = subject.startsWith(this.inboxPrefix);
    if (match.empty && !ours) return Promise.reject(new BusNoRespondersError(subject));
    const p = new PendingRequest(++this.seq, subject, timeoutMs, this);
    this.pending.set(p.seq, p);
    this.timers.add(p, timeoutMs);
    let body = copyBody(data);
    if (ours) {
      const target = this.pending.get(parseSeq(subject, this.inboxPrefix.length));
      if (target !== undefined) {
        this.enqueue(target, new ReplyMessage(target, body, headers, this, p));
        body = copyBody(body);
      }
    }
    this.dispatch(match, subject, body, headers, p);
    return p.promise;
  }

  flush(): Promise<void> {
    if (this.state === 'closed') return Promise.reject(new BusClosedError());
    if (this.queueLength() === 0) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  async drain(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'draining';
    // New messages stop matching at once; messages already queued for a
    // subscription are still delivered (subscriptions stay active).
    this.subs = [];
    this.inboxWatchers = 0;
    this.cache.clear();
    this.rotations.clear();
    if (!(await settlesWithin(this.settleHandlers(), this.drainTimeoutMs))) {
      this.log.warn({ inflight: this.inflight.size, timeoutMs: this.drainTimeoutMs }, 'drain timed out; closing anyway');
    }
    await this.close();
  }

  /** Delivers what is queued and waits for async handlers, until none is left. */
  private async settleHandlers(): Promise<void> {
    const flushed = (): Promise<void> => this.flush().catch(() => undefined);
    await flushed();
    while (this.inflight.size > 0 && this.state === 'draining') {
      await this.inflight.idle();
      await flushed();
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const s of this.subs) s.active = false;
    this.subs = [];
    this.cache.clear();
    this.rotations.clear();
    this.qTargets = [];
    this.qMsgs = [];
    this.qHead = 0;
    this.timers.close();
    const err = new BusClosedError();
    for (const p of this.pending.valuesArray()) p.fail(err);
    this.resolveFlushWaiters();
  }

  /** Sends a reply to `request`; false once the bus is closed. */
  sendReply(request: PendingRequest, data: Uint8Array, opts: PublishOptions | undefined): boolean {
    if (this.state === 'closed') return false;
    const body = copyBody(data);
    const headers = copyHeaders(opts?.headers);
    // Straight to the requester (a reply after it settled is dropped on delivery).
    this.enqueue(request, new ReplyMessage(request, body, headers, this));
    if (this.inboxWatchers > 0) {
      const subject = request.inbox();
      this.dispatch(this.matchUncached(subject.split('.')), subject, copyBody(body), headers, undefined);
    }
    return true;
  }

  /** The inbox subject of request number `seq`. */
  inboxFor(seq: number): string {
    return this.inboxPrefix + String(seq);
  }

  /** Bookkeeping once a request has its reply, timed out or failed. */
  requestSettled(request: PendingRequest): void {
    this.pending.delete(request.seq);
    this.timers.remove(request);
  }

  removeSubscription(sub: LocalSubscription): void {
    const i = this.subs.indexOf(sub);
    if (i < 0) return;
    this.subs.splice(i, 1);
    if (watchesInbox(sub.tokens)) this.inboxWatchers--;
    if (sub.queue !== undefined) {
      const rotation = this.rotations.get(sub.queue);
      if (rotation !== undefined && --rotation.users === 0) this.rotations.delete(sub.queue);
    }
    this.cache.clear();
  }

  /** Runs one handler; failures are logged, never thrown into the queue. */
  invoke(sub: LocalSubscription, msg: Message): void {
    try {
      const r: unknown = sub.handler(msg);
      if (isThenable(r)) this.track(r, sub, msg.subject);
    } catch (err) {
      this.log.error({ err, subject: msg.subject, subscription: sub.subject }, 'bus handler threw');
    }
  }

  private track(p: PromiseLike<unknown>, sub: LocalSubscription, subject: string): void {
    this.inflight.track(p, (err: unknown) => {
      this.log.error({ err, subject, subscription: sub.subject }, 'bus handler rejected');
    });
  }

  /** A publish to an inbox subject: the request it belongs to, plus any wildcard watchers. */
  private routeInbox(subject: string, body: Uint8Array, headers: Headers | undefined): void {
    checkSubject(subject);
    const request = subject.startsWith(this.inboxPrefix)
      ? this.pending.get(parseSeq(subject, this.inboxPrefix.length))
      : undefined;
    if (request !== undefined) this.enqueue(request, new ReplyMessage(request, body, headers, this));
    // Inbox subjects are unique: match them without filling the cache.
    if (this.inboxWatchers > 0) {
      const match = this.matchUncached(subject.split('.'));
      this.dispatch(match, subject, request ? copyBody(body) : body, headers, undefined);
    }
  }

  private dispatch(
    match: MatchSet,
    subject: string,
    body: Uint8Array,
    headers: Headers | undefined,
    request: PendingRequest | undefined,
  ): void {
    const { plain, groups } = match;
    let first = true;
    for (let i = 0; i < plain.length; i++) {
      this.enqueue(plain[i], new LocalMessage(subject, first ? body : copyBody(body), headers, request, this));
      first = false;
    }
    for (let i = 0; i < groups.length; i++) {
      this.enqueue(groups[i].pick(), new LocalMessage(subject, first ? body : copyBody(body), headers, request, this));
      first = false;
    }
  }

  private computeMatch(subject: string): MatchSet {
    checkSubject(subject);
    const match = this.matchUncached(subject.split('.'));
    if (!subject.startsWith(INBOX_ROOT)) {
      if (this.cache.size >= MAX_CACHED_SUBJECTS) this.cache.clear();
      this.cache.set(subject, match);
    }
    return match;
  }

  private matchUncached(tokens: readonly string[]): MatchSet {
    const match = new MatchSet();
    for (const sub of this.subs) {
      if (!tokensMatch(sub.tokens, tokens)) continue;
      if (sub.queue === undefined) {
        match.plain.push(sub);
        continue;
      }
      let group = match.groups.find((g) => g.name === sub.queue);
      if (group === undefined) {
        group = new QueueGroup(sub.queue, this.rotations.get(sub.queue)!);
        match.groups.push(group);
      }
      group.members.push(sub);
    }
    return match;
  }

  private enqueue(target: Target, msg: Message): void {
    this.qTargets.push(target);
    this.qMsgs.push(msg);
    if (!this.scheduled) {
      this.scheduled = true;
      if (this.sinceYield < YIELD_EVERY) queueMicrotask(this.runQueue);
      else setImmediate(this.runQueue);
    }
  }

  private queueLength(): number {
    return this.qTargets.length - this.qHead;
  }

  /** Drains the queue, including what handlers enqueue meanwhile, up to the yield budget. */
  private readonly runQueue = (): void => {
    const targets = this.qTargets;
    const msgs = this.qMsgs;
    let i = this.qHead;
    let budget = YIELD_EVERY - this.sinceYield;
    if (budget <= 0) {
      this.sinceYield = 0; // we are in a setImmediate turn: the loop has breathed
      budget = YIELD_EVERY;
    }
    let delivered = 0;
    while (i < targets.length && delivered < budget) {
      const t = targets[i]!;
      const m = msgs[i]!;
      targets[i] = undefined;
      msgs[i] = undefined;
      i++;
      delivered++;
      t.deliver(m);
      if (targets !== this.qTargets) return; // closed by a handler; the queue was dropped
    }
    this.sinceYield += delivered;
    if (i < targets.length) {
      this.qHead = i;
      setImmediate(this.runQueue);
      return;
    }
    targets.length = 0;
    msgs.length = 0;
    this.qHead = 0;
    this.scheduled = false;
    this.resolveFlushWaiters();
  };

  private resolveFlushWaiters(): void {
    if (this.flushWaiters.length === 0) return;
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w();
  }
}

function watchesInbox(tokens: readonly string[]): boolean {
  const t = tokens[0];
  return t === '>' || t === '*' || t === '_INBOX';
}
