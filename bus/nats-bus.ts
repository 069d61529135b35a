/**
 * The `Bus` over a NATS server, using the official client
 * (`@nats-io/transport-node` v3). NATS types stay inside this file.
 *
 * What this adds to the raw client:
 * - the same subject, queue and header checks as `InProcessBus` (nats.js
 *   itself only rejects empty subjects and whitespace);
 * - a private copy of every body: nats.js keeps a reference to the payload
 *   until its next flush (or across a reconnect), so a caller reusing its
 *   buffer would otherwise change what is sent;
 * - client errors mapped to `BusTimeoutError`, `BusNoRespondersError`,
 *   `BusClosedError`;
 * - `drain()` that waits for in-flight async handlers before the client's
 *   own drain, so their replies still go out;
 * - its own request/reply multiplexer: one `_INBOX.<id>.*` subscription,
 *   pending requests by number and shared timers (`RequestTimers`). The
 *   client's `request()` builds an Error (a stack trace) for every request,
 *   even successful ones, which cost a third of the CPU at 64 in flight.
 *   No-responders is the same signal the client uses: an empty reply with
 *   status 503 from the server.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import * as transport from '@nats-io/transport-node';
// Types come from nats-core's public entry by file path: the transport's own
// .d.ts re-exports `@nats-io/nats-core/internal`, a package "exports" subpath
// that TypeScript's `moduleResolution: node` cannot follow, so through it every
// NATS type would silently be missing. Type-only: erased at run time.
import type {
  Authenticator,
  ConnectionOptions,
  Msg,
  MsgHdrs,
  NatsConnection,
  Subscription as NatsSubscription,
} from '@nats-io/nats-core/lib/mod';
import { BadRequestError, InternalError, TablekeeperError } from '../store';
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
import { BusClosedError, BusDisconnectedError, BusNoRespondersError, BusTimeoutError, InvalidSubjectError, PayloadTooLargeError, RemoteError } from './errors';
import { OBSERVE_REPLY, replyError, type ObservableMessage, type ReplyObserver } from './reply-observer';
import { RequestTimers, type TimedEntry, type TimerList } from './request-timers';
import { InflightHandlers, SeqTable } from './seq-table';
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
} from './rules';

/**
 * The transport module as its run-time exports really are (it re-exports all
 * of nats-core); the cast only restores the types lost as explained above.
 */
const nats = transport as unknown as typeof import('@nats-io/nats-core/lib/mod') & {
  connect(opts: ConnectionOptions): Promise<NatsConnection>;
};

/** How to reach and authenticate to a NATS server. */
export interface NatsBusOptions {
  /** One URL or a comma-separated list, e.g. `nats://127.0.0.1:4222`. */
  servers: string;
  /** Client name shown by the server's monitoring. */
  name?: string;
  user?: string;
  pass?: string;
  token?: string;
  authenticator?: Authenticator | Authenticator[];
  /** A NATS `.creds` file (user JWT + nkey seed); read at connect time. */
  credsFile?: string;
  /** A file holding a user's nkey seed (`SU...`), for servers that list users by nkey; read at connect time. */
  nkeyFile?: string;
  /** Connection status changes and handler failures; default silent. */
  logger?: Logger;
  /** How long `drain()` may take (e.g. while the server is unreachable) before closing anyway; default 10 s. */
  drainTimeoutMs?: number;
}

/** The NATS-backed `Bus`. Create with `NatsBus.connect`. */
export class NatsBus implements Bus {
  private readonly inflight = new InflightHandlers();
  private readonly subs = new Set<NatsSubscription>();
  private draining = false;
  // False from a 'disconnect' until the next 'reconnect' (see BusDisconnectedError).
  private connected = true;
  private readonly statusLoop: Promise<void>;
  // Request/reply multiplexing: reply subjects are `<inboxPrefix><seq>`.
  private readonly inboxPrefix = `_INBOX.${randomBytes(11).toString('hex')}.`;
  private mux: NatsSubscription | undefined;
  private readonly pending = new SeqTable<NatsPendingRequest>();
  private readonly timers = new RequestTimers();
  private seq = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly drainTimeoutMs: number,
  ) {
    this.statusLoop = this.watchStatus();
    void nc.closed().then(() => {
      this.failPending();
      this.timers.close();
    });
  }

  /** Connects (the client reconnects by itself forever after the first success). */
  static async connect(opts: NatsBusOptions): Promise<NatsBus> {
    const log = opts.logger ?? pino({ level: 'silent' });
    const servers = opts.servers
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    const nc = await nats.connect({
      servers,
      name: opts.name,
      user: opts.user,
      pass: opts.pass,
      token: opts.token,
      authenticator: authenticators(opts),
      maxReconnectAttempts: -1,
      // Async stack traces cost an Error per request; our errors say enough.
      noAsyncTraces: true,
    });
    log.info({ server: nc.getServer(), connectionName: opts.name }, 'nats connected');
    return new NatsBus(nc, log, opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
  }

  publish(subject: string, data?: Uint8Array, opts?: PublishOptions): void {
    checkSubject(subject);
    // The client would take it and drop it when it dials again: say so instead.
    if (!this.connected && !this.nc.isClosed()) throw new BusDisconnectedError();
    const headers = toNatsHeaders(opts?.headers);
    this.send(subject, copyBody(data), headers);
  }

  subscribe(subject: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription {
    checkPattern(subject);
    const queue = opts?.queue;
    if (queue !== undefined) checkQueue(queue);
    if (typeof handler !== 'function') throw new BadRequestError('handler must be a function');
    if (this.draining || this.nc.isClosed() || this.nc.isDraining()) throw new BusClosedError();
    let sub: NatsSubscription;
    try {
      sub = this.nc.subscribe(subject, {
        queue,
        callback: (err, msg) => {
          if (err !== null) {
            this.log.warn({ err, subject }, 'subscription error');
            return;
          }
          this.invoke(handler, new NatsMessage(msg, this), subject);
        },
      });
    } catch (err) {
      throw mapClientError(err, subject, 0);
    }
    this.subs.add(sub);
    return new NatsBusSubscription(subject, sub, this.subs);
  }

  request(subject: string, data?: Uint8Array, opts?: RequestOptions): Promise<Message> {
    checkSubject(subject);
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    checkTimeout(timeoutMs);
    const headers = toNatsHeaders(opts?.headers);
    if (this.draining || this.nc.isClosed() || this.nc.isDraining()) return Promise.reject(new BusClosedError());
    if (!this.connected) return Promise.reject(new BusDisconnectedError());
    const seq = ++this.seq;
    const p = new NatsPendingRequest(seq, subject, timeoutMs, this);
    const body = copyBody(data);
    try {
      if (this.mux === undefined) this.mux = this.nc.subscribe(`${this.inboxPrefix}*`, { callback: this.onReply });
      this.nc.publish(subject, body, { reply: this.inboxPrefix + String(seq), headers });
    } catch (err) {
      return Promise.reject(this.tooLarge(err, body, headers) ?? mapClientError(err, subject, timeoutMs));
    }
    this.pending.set(seq, p);
    this.timers.add(p, timeoutMs);
    return p.promise;
  }

  async flush(): Promise<void> {
    try {
      await this.nc.flush();
    } catch (err) {
      throw mapClientError(err, '', 0);
    }
  }

  async drain(): Promise<void> {
    if (this.draining || this.nc.isClosed()) return;
    this.draining = true;
    if (!(await settlesWithin(this.drainInOrder(), this.drainTimeoutMs))) {
      this.log.warn({ inflight: this.inflight.size, timeoutMs: this.drainTimeoutMs }, 'drain timed out; closing anyway');
    }
    await this.close();
  }

  /**
   * Our subscriptions first (the client still delivers what was already on
   * its way), then the handlers still running, and only then the client's
   * drain, which stops publishing: their replies must go out before it.
   */
  private async drainInOrder(): Promise<void> {
    await Promise.allSettled([...this.subs].map((s) => s.drain()));
    await this.inflight.idle();
    if (!this.nc.isClosed() && !this.nc.isDraining()) await this.nc.drain();
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
    this.failPending();
    await this.statusLoop;
  }

  /** The connected server's `max_payload`; undefined before the first connect. */
  get maxPayload(): number | undefined {
    return this.nc.info?.max_payload;
  }

  /** Bookkeeping once a request has its reply, timed out or failed. */
  requestSettled(p: NatsPendingRequest): void {
    this.pending.delete(p.seq);
    this.timers.remove(p);
  }

  private readonly onReply = (err: Error | null, msg: Msg): void => {
    if (err !== null) {
      this.log.warn({ err }, 'request inbox subscription error');
      return;
    }
    const p = this.pending.get(parseSeq(msg.subject, this.inboxPrefix.length));
    if (p === undefined) return; // late reply: the request timed out or already has one
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      p.fail(new BusNoRespondersError(p.subject));
    } else {
      p.succeed(new NatsMessage(msg, this));
    }
  };

  /**
   * The server refuses a publish the user may not make with an error on the
   * connection, not a reply: fail the requests sent to that subject at once
   * (as `unauthorized`) instead of letting them time out.
   */
  private failDenied(err: Error): void {
    if (!(err instanceof nats.errors.PermissionViolationError) || err.operation !== 'publish') return;
    for (const p of this.pending.valuesArray()) {
      if (p.subject === err.subject) {
        p.fail(new RemoteError('unauthorized', `not permitted to publish to '${err.subject}'`, 403, { cause: err }));
      }
    }
  }

  private failPending(err: Error = new BusClosedError()): void {
    if (this.pending.size === 0) return;
    for (const p of this.pending.valuesArray()) p.fail(err);
  }

  /** Publishes an already copied body; used by `publish` and replies (`what` names it in errors). */
  send(subject: string, body: Uint8Array, headers: MsgHdrs | undefined, what = 'message'): void {
    try {
      this.nc.publish(subject, body, headers === undefined ? undefined : { headers });
    } catch (err) {
      throw this.tooLarge(err, body, headers, what) ?? mapClientError(err, subject, 0);
    }
  }

  /**
   * The client refuses a message over the server's limit before sending it;
   * that is said plainly, not as a malformed argument.
   */
  private tooLarge(err: unknown, body: Uint8Array, headers: MsgHdrs | undefined, what = 'message'): PayloadTooLargeError | undefined {
    const max = this.maxPayload;
    if (!(err instanceof nats.errors.InvalidArgumentError) || max === undefined || !err.message.includes('max_payload')) return undefined;
    // The body alone, or the body with its headers, is over the limit.
    return new PayloadTooLargeError(body.length, max, headers === undefined ? what : `${what} (with headers)`, { cause: err });
  }

  private invoke(handler: MessageHandler, msg: NatsMessage, subject: string): void {
    try {
      const r: unknown = handler(msg);
      if (isThenable(r)) {
        this.inflight.track(r, (err: unknown) => {
          this.log.error({ err, subject: msg.subject, subscription: subject }, 'bus handler rejected');
        });
      }
    } catch (err) {
      this.log.error({ err, subject: msg.subject, subscription: subject }, 'bus handler threw');
    }
  }

  private async watchStatus(): Promise<void> {
    try {
      for await (const s of this.nc.status()) {
        switch (s.type) {
          case 'disconnect':
            this.log.warn({ server: s.server, pending: this.pending.size }, 'nats disconnected');
            this.connected = false;
            // Their requests or replies may be lost with the connection: fail them now rather than at their timeouts.
            this.failPending(new BusDisconnectedError());
            break;
          case 'reconnect':
            this.log.info({ server: s.server }, 'nats reconnected');
            this.connected = true;
            break;
          case 'reconnecting':
            this.log.debug('nats reconnecting');
            break;
          case 'error':
            this.log.error({ err: s.error }, 'nats server error');
            this.failDenied(s.error);
            break;
          case 'ldm':
            this.log.warn({ server: s.server }, 'nats server entering lame duck mode');
            break;
          case 'staleConnection':
            this.log.warn('nats connection stale');
            break;
          case 'slowConsumer':
            this.log.warn({ subject: s.sub.getSubject(), pending: s.pending }, 'nats slow consumer');
            break;
          case 'close':
            this.log.info('nats connection closed');
            break;
          default:
            this.log.debug({ status: s.type }, 'nats status');
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'nats status watch ended');
    }
  }
}

class NatsPendingRequest implements TimedEntry {
  resolve!: (msg: Message) => void;
  reject!: (err: Error) => void;
  readonly promise: Promise<Message>;
  private settled = false;

  // Owned by RequestTimers.
  deadline = 0;
  timedPrev: TimedEntry | undefined = undefined;
  timedNext: TimedEntry | undefined = undefined;
  timedList: TimerList | undefined = undefined;

  constructor(
    readonly seq: number,
    readonly subject: string,
    readonly timeoutMs: number,
    private readonly bus: NatsBus,
  ) {
    this.promise = new Promise<Message>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  succeed(msg: Message): void {
    if (this.settle()) this.resolve(msg);
  }

  fail(err: Error): void {
    if (this.settle()) this.reject(err);
  }

  expire(): void {
    if (this.settle()) this.reject(new BusTimeoutError(this.subject, this.timeoutMs));
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.bus.requestSettled(this);
    return true;
  }
}

class NatsBusSubscription implements Subscription {
  constructor(
    readonly subject: string,
    private readonly sub: NatsSubscription,
    private readonly registry: Set<NatsSubscription>,
  ) {}

  unsubscribe(): void {
    if (!this.registry.delete(this.sub)) return;
    if (!this.sub.isClosed()) this.sub.unsubscribe();
  }
}

/** A received NATS message seen through our `Message`; headers converted on first use. */
class NatsMessage implements ObservableMessage {
  private convertedHeaders: Headers | undefined | null = null;
  answered = false;
  private observer: ReplyObserver | undefined = undefined;
  private observedAt = 0;

  constructor(
    private readonly msg: Msg,
    private readonly bus: NatsBus,
  ) {}

  get subject(): string {
    return this.msg.subject;
  }

  get data(): Uint8Array {
    return this.msg.data;
  }

  get reply(): string | undefined {
    return this.msg.reply || undefined;
  }

  get headers(): Headers | undefined {
    if (this.convertedHeaders === null) this.convertedHeaders = fromNatsHeaders(this.msg.headers);
    return this.convertedHeaders;
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

  respond(data: Uint8Array, opts?: PublishOptions): boolean {
    const reply = this.msg.reply;
    if (!reply) {
      if (this.observer !== undefined) this.complete(replyError(opts));
      return false;
    }
    const headers = toNatsHeaders(opts?.headers);
    try {
      this.bus.send(reply, copyBody(data), headers, 'reply');
    } catch (err) {
      if (!(err instanceof BusClosedError)) {
        // Not sent (too large, bad headers): the request is not answered yet,
        // so the error reply that usually follows is the one the stats count.
        throw err;
      }
      if (this.observer !== undefined) this.complete(replyError(opts));
      return false;
    }
    // Recorded only once sent, for the same reason.
    if (this.observer !== undefined) this.complete(replyError(opts));
    return true;
  }
}

function toNatsHeaders(h: Record<string, string> | undefined): MsgHdrs | undefined {
  const checked = copyHeaders(h);
  if (checked === undefined) return undefined;
  const out = nats.headers();
  for (const name of Object.keys(checked)) out.set(name, checked[name]);
  return out;
}

function fromNatsHeaders(h: MsgHdrs | undefined): Headers | undefined {
  if (h === undefined) return undefined;
  const out: Record<string, string> = {};
  let any = false;
  for (const [name, values] of h) {
    if (values.length === 0) continue;
    out[name] = values[values.length - 1];
    any = true;
  }
  return any ? Object.freeze(out) : undefined;
}

/** The configured authenticators, plus one for `credsFile` when given. */
function authenticators(opts: NatsBusOptions): Authenticator[] | undefined {
  const list = opts.authenticator === undefined ? [] : [opts.authenticator].flat();
  if (opts.credsFile !== undefined) list.push(nats.credsAuthenticator(readFileSync(opts.credsFile)));
  if (opts.nkeyFile !== undefined) {
    list.push(nats.nkeyAuthenticator(new TextEncoder().encode(readFileSync(opts.nkeyFile, 'utf8').trim())));
  }
  return list.length === 0 ? undefined : list;
}

/** Client errors as ours; unknown ones become `InternalError` with the cause kept. */
function mapClientError(err: unknown, subject: string, timeoutMs: number): Error {
  if (err instanceof TablekeeperError) return err;
  if (err instanceof nats.errors.TimeoutError) return new BusTimeoutError(subject, timeoutMs, { cause: err });
  if (err instanceof nats.errors.NoRespondersError) return new BusNoRespondersError(subject, { cause: err });
  if (err instanceof nats.errors.RequestError) {
    if (err.isNoResponders()) return new BusNoRespondersError(subject, { cause: err });
    // "connection closed" / "connection disconnected": retry later, like a closed bus.
    return new BusClosedError({ cause: err });
  }
  if (err instanceof nats.errors.ClosedConnectionError || err instanceof nats.errors.DrainingConnectionError) {
    return new BusClosedError({ cause: err });
  }
  if (err instanceof nats.errors.InvalidSubjectError || err instanceof nats.errors.InvalidArgumentError) {
    return new InvalidSubjectError(err.message, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(`nats: ${message}`, { cause: err });
}

