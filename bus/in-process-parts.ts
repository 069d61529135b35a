/**
 * The objects `InProcessBus` moves around: messages, subscriptions, pending
 * requests and match sets. They reach back into the bus only through
 * `LocalBus`. Internal to the bus folder.
 */
import type { Headers, Message, MessageHandler, PublishOptions, Subscription } from './bus';
import { BusTimeoutError } from './errors';
import { OBSERVE_REPLY, replyError, type ObservableMessage, type ReplyObserver } from './reply-observer';
import type { TimedEntry, TimerList } from './request-timers';

/** What the parts need from their bus. */
export interface LocalBus {
  sendReply(request: PendingRequest, data: Uint8Array, opts: PublishOptions | undefined): boolean;
  inboxFor(seq: number): string;
  requestSettled(request: PendingRequest): void;
  removeSubscription(sub: LocalSubscription): void;
  invoke(sub: LocalSubscription, msg: Message): void;
}

/** Something a queued message is delivered to: a subscription or a pending request. */
export interface Target {
  deliver(msg: Message): void;
}

/** A published message or a request, as a subscriber sees it. */
export class LocalMessage implements ObservableMessage {
  answered = false;
  private observer: ReplyObserver | undefined = undefined;
  private observedAt = 0;

  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    readonly headers: Headers | undefined,
    /** The request this message belongs to, if it is one. */
    private readonly request: PendingRequest | undefined,
    private readonly bus: LocalBus,
  ) {}

  get reply(): string | undefined {
    return this.request?.inbox();
  }

  respond(data: Uint8Array, opts?: PublishOptions): boolean {
    // sendReply may throw (a body that is not bytes, bad headers) before
    // anything is sent; the request is answered, and counted, only after it.
    const sent = this.request === undefined ? false : this.bus.sendReply(this.request, data, opts);
    if (this.observer !== undefined) this.complete(replyError(opts));
    return sent;
  }

  [OBSERVE_REPLY](observer: ReplyObserver, startedMs: number): void {
    this.observer = observer;
    this.observedAt = startedMs;
  }

  complete(error: string | undefined): void {
    const observer = this.observer;
    if (observer === undefined) return;
    this.observer = undefined;
    this.answered = true;
    observer.replyObserved(this.observedAt, error);
  }
}

/**
 * A reply, as the requester sees it. A reply sent with `request()` to the
 * inbox (as NATS allows) carries that request as `answer`: the requester
 * then sees a reply subject and can respond to it.
 */
export class ReplyMessage implements Message {
  constructor(
    private readonly request: PendingRequest,
    readonly data: Uint8Array,
    readonly headers: Headers | undefined,
    private readonly bus: LocalBus,
    private readonly answer: PendingRequest | undefined = undefined,
  ) {}

  get subject(): string {
    return this.request.inbox();
  }

  get reply(): string | undefined {
    return this.answer?.inbox();
  }

  respond(data: Uint8Array, opts?: PublishOptions): boolean {
    if (this.answer === undefined) return false;
    return this.bus.sendReply(this.answer, data, opts);
  }
}

/** A subscription; `active` turns false on unsubscribe, which also stops queued deliveries. */
export class LocalSubscription implements Subscription, Target {
  active = true;
  readonly tokens: readonly string[];

  constructor(
    readonly subject: string,
    readonly queue: string | undefined,
    readonly handler: MessageHandler,
    private readonly bus: LocalBus,
  ) {
    this.tokens = subject.split('.');
  }

  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.bus.removeSubscription(this);
  }

  deliver(msg: Message): void {
    if (this.active) this.bus.invoke(this, msg);
  }
}

/** A request waiting for its first reply, its timeout, or the bus closing. */
export class PendingRequest implements Target, TimedEntry {
  resolve!: (msg: Message) => void;
  reject!: (err: Error) => void;
  readonly promise: Promise<Message>;
  settled = false;
  private inboxSubject: string | undefined = undefined;

  // Owned by RequestTimers.
  deadline = 0;
  timedPrev: TimedEntry | undefined = undefined;
  timedNext: TimedEntry | undefined = undefined;
  timedList: TimerList | undefined = undefined;

  constructor(
    readonly seq: number,
    readonly subject: string,
    readonly timeoutMs: number,
    private readonly bus: LocalBus,
  ) {
    this.promise = new Promise<Message>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** The unique inbox subject (built on first use). */
  inbox(): string {
    if (this.inboxSubject === undefined) this.inboxSubject = this.bus.inboxFor(this.seq);
    return this.inboxSubject;
  }

  deliver(msg: Message): void {
    // First reply wins; later ones are dropped, as on NATS.
    if (!this.settle()) return;
    this.resolve(msg);
  }

  expire(): void {
    if (!this.settle()) return;
    this.reject(new BusTimeoutError(this.subject, this.timeoutMs));
  }

  fail(err: Error): void {
    if (!this.settle()) return;
    this.reject(err);
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.bus.requestSettled(this);
    return true;
  }
}

/**
 * The turn of one queue name, kept by the bus for as long as a subscription
 * uses the name. Not in the match set: match sets are cached per subject and
 * rebuilt on every (un)subscribe, so a turn kept there would start over for
 * each new subject and after each change, and send most messages to the
 * first member.
 */
export class QueueRotation {
  /** Messages handed out so far (a double: exact far beyond any bus's lifetime). */
  next = 0;
  /** Live subscriptions using the name; the bus forgets the rotation at 0. */
  users = 0;
}

/** Subscriptions sharing a queue name that match one subject, served in turn. */
export class QueueGroup {
  readonly members: LocalSubscription[] = [];
  constructor(
    readonly name: string,
    private readonly rotation: QueueRotation,
  ) {}

  pick(): LocalSubscription {
    return this.members[this.rotation.next++ % this.members.length];
  }
}

/** Who gets a message on one subject: every plain subscriber plus one member per queue group. */
export class MatchSet {
  readonly plain: LocalSubscription[] = [];
  readonly groups: QueueGroup[] = [];
  get empty(): boolean {
    return this.plain.length === 0 && this.groups.length === 0;
  }
}
