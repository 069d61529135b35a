/**
 * NATS micro-service conventions over our `Bus`, so they work on both buses:
 * the service answers `$SRV.PING|INFO|STATS`, `$SRV.<verb>.<name>` and
 * `$SRV.<verb>.<name>.<id>` with the standard `io.nats.micro.v1.*` bodies,
 * and each endpoint keeps request, error and processing-time counts.
 *
 * An endpoint's handler receives the message and either
 * - returns (or resolves to) a body, which is sent with `respondOk`;
 * - throws (or rejects), which is sent with `respondError`;
 * - returns undefined and replies itself, now or later (`msg.respond`,
 *   `respondOk(msg, ...)`, `respondError(msg, ...)`), e.g. from an actor.
 * The message it receives records the endpoint's stats on its first reply:
 * a reply carrying `Nats-Service-Error-Code` counts as an error. The cost per
 * request is a counter and two clock reads: the bus's own messages carry the
 * observer themselves (`reply-observer.ts`), other messages get a wrapper.
 */
import { randomBytes } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { TablekeeperError } from '../store';
import type { Bus, Headers, Message, PublishOptions, Subscription } from './bus';
import { encodeJson, respondError, respondOk } from './codec';
import { checkToken } from './subjects';
import { checkPattern, checkQueue, isThenable } from './rules';
import { isObservable, OBSERVE_REPLY, replyError, type ObservableMessage, type ReplyObserver } from './reply-observer';

/** Handles one endpoint request; see the file comment for the reply rules. */
export type EndpointHandler = (msg: Message) => unknown;

/** What `MicroService.addEndpoint` needs. */
export interface EndpointOptions {
  /** Endpoint name, one token (e.g. the table name). */
  name: string;
  /** Subject, wildcards allowed (e.g. `tables.task_queue.>`). */
  subject: string;
  /** Queue group; default 'q' as in NATS micro. */
  queueGroup?: string;
  metadata?: Record<string, string>;
  handler: EndpointHandler;
  /**
   * False: the endpoint takes no subscription of its own, and its requests
   * arrive through `Endpoint.handle` from a wider subscription that
   * dispatches them (one delivery per request instead of two). INFO and
   * STATS show it exactly as a subscribed endpoint. Default true.
   */
  subscribe?: boolean;
}

/** Standard identity fields of every `$SRV` reply. */
export interface ServiceIdentity {
  type: string;
  name: string;
  id: string;
  version: string;
  metadata: Record<string, string>;
}

/** One endpoint in an `$SRV.INFO` reply. */
export interface EndpointInfo {
  name: string;
  subject: string;
  queue_group: string;
  metadata?: Record<string, string>;
}

/** One endpoint in an `$SRV.STATS` reply; times in nanoseconds. */
export interface EndpointStats {
  name: string;
  subject: string;
  queue_group: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

/** `$SRV.INFO` reply body. */
export interface ServiceInfo extends ServiceIdentity {
  description: string;
  endpoints: EndpointInfo[];
}

/** `$SRV.STATS` reply body. */
export interface ServiceStats extends ServiceIdentity {
  started: string;
  endpoints: EndpointStats[];
}

/** Options for `MicroService`. */
export interface MicroServiceOptions {
  /** Service name; default 'tablekeeper'. */
  name?: string;
  version: string;
  description?: string;
  metadata?: Record<string, string>;
  /** Instance id; default random. */
  id?: string;
  logger?: Logger;
  /** Monotonic milliseconds, for processing times; default `performance.now`. */
  clock?: () => number;
  /** Wall clock, for `started`; default `Date.now`. */
  wallClock?: () => number;
}

const VERBS = ['PING', 'INFO', 'STATS'] as const;

/** A registered endpoint: its stats, and how to remove it. */
export class Endpoint implements ReplyObserver {
  numRequests = 0;
  numErrors = 0;
  lastError = '';
  /** Total processing time in milliseconds (fractional). */
  processingMs = 0;
  private subscription: Subscription | undefined;

  constructor(
    readonly name: string,
    readonly subject: string,
    readonly queueGroup: string,
    readonly metadata: Record<string, string> | undefined,
    private readonly handler: EndpointHandler,
    private readonly service: MicroService,
  ) {}

  /** Unsubscribes and drops the endpoint from INFO and STATS. Idempotent. */
  stop(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
    this.service.forget(this);
  }

  info(): EndpointInfo {
    const info: EndpointInfo = { name: this.name, subject: this.subject, queue_group: this.queueGroup };
    if (this.metadata !== undefined) info.metadata = { ...this.metadata };
    return info;
  }

  stats(): EndpointStats {
    const processing = Math.round(this.processingMs * 1e6);
    return {
      name: this.name,
      subject: this.subject,
      queue_group: this.queueGroup,
      num_requests: this.numRequests,
      num_errors: this.numErrors,
      last_error: this.lastError,
      processing_time: processing,
      average_processing_time: this.numRequests === 0 ? 0 : Math.round(processing / this.numRequests),
    };
  }

  reset(): void {
    this.numRequests = 0;
    this.numErrors = 0;
    this.lastError = '';
    this.processingMs = 0;
  }

  /** @internal */
  attach(bus: Bus): void {
    this.subscription = bus.subscribe(this.subject, this.onMessage, { queue: this.queueGroup });
  }

  /** @internal Called once per request, on its first reply (or when the handler ends without one). */
  replyObserved(startedMs: number, error: string | undefined): void {
    this.processingMs += this.service.now() - startedMs;
    if (error !== undefined) {
      this.numErrors++;
      this.lastError = error;
    }
  }

  /**
   * Handles one request as the endpoint's own subscription would: counts
   * it, runs the handler, answers. For endpoints added with `subscribe: false`.
   */
  readonly handle = (raw: Message): void | Promise<void> => this.onMessage(raw);

  private readonly onMessage = (raw: Message): void | Promise<void> => {
    this.numRequests++;
    const startedMs = this.service.now();
    // The bus's own messages report their first reply themselves; anything
    // else is wrapped.
    let msg: ObservableMessage;
    if (isObservable(raw)) {
      raw[OBSERVE_REPLY](this, startedMs);
      msg = raw;
    } else {
      msg = new EndpointMessage(raw, this, startedMs);
    }
    let result: unknown;
    try {
      result = this.handler(msg);
    } catch (err) {
      this.fail(msg, err);
      return;
    }
    if (isThenable(result)) {
      // Returned so that the bus tracks it and drain() waits for it.
      return Promise.resolve(result).then(
        (body) => this.finish(msg, body),
        (err: unknown) => this.fail(msg, err),
      );
    }
    this.finish(msg, result);
  };

  private finish(msg: ObservableMessage, body: unknown): void {
    if (msg.answered) return;
    try {
      if (body !== undefined) respondOk(msg, body);
      else if (msg.reply === undefined) msg.complete(undefined); // a publish: nothing to answer
    } catch (err) {
      // The body could not be sent (over NATS `max_payload`): the caller gets
      // the error instead, counted as one, rather than a timeout.
      this.fail(msg, err);
    }
  }

  private fail(msg: ObservableMessage, err: unknown): void {
    // respondError goes through msg.respond, which counts the error (even
    // for a publish, where there is nobody to send it to).
    if (!msg.answered) respondError(msg, err);
    // Expected failures (bad request, table unavailable, ...) are routine.
    const expected = err instanceof TablekeeperError && err.code !== 'INTERNAL';
    this.service.log[expected ? 'debug' : 'error']({ err, endpoint: this.name, subject: msg.subject }, 'endpoint handler failed');
  }
}

/** A message from a bus whose messages cannot be observed, wrapped so that it records stats on its first reply. */
class EndpointMessage implements ObservableMessage {
  answered = false;

  constructor(
    private readonly raw: Message,
    private readonly endpoint: Endpoint,
    private readonly startedMs: number,
  ) {}

  [OBSERVE_REPLY](): void {
    // Observed from construction.
  }

  get subject(): string {
    return this.raw.subject;
  }
  get data(): Uint8Array {
    return this.raw.data;
  }
  get headers(): Headers | undefined {
    return this.raw.headers;
  }
  get reply(): string | undefined {
    return this.raw.reply;
  }

  respond(data: Uint8Array, opts?: PublishOptions): boolean {
    // Recorded once sent: a reply that throws (too large) is followed by an
    // error reply, which is the one to count.
    const sent = this.raw.respond(data, opts);
    if (!this.answered) this.complete(replyError(opts));
    return sent;
  }

  complete(error: string | undefined): void {
    if (this.answered) return;
    this.answered = true;
    this.endpoint.replyObserved(this.startedMs, error);
  }
}

/**
 * A micro service: `$SRV` discovery plus endpoints with stats. It answers
 * `$SRV` requests from construction until `stop()`.
 */
export class MicroService {
  readonly name: string;
  readonly id: string;
  readonly version: string;
  readonly description: string;
  readonly metadata: Record<string, string>;
  /** @internal */
  readonly log: Logger;
  /** @internal */
  readonly now: () => number;
  private readonly bus: Bus;
  private readonly wallClock: () => number;
  private started: string;
  private readonly endpoints: Endpoint[] = [];
  private readonly control: Subscription[] = [];

  constructor(bus: Bus, opts: MicroServiceOptions) {
    this.bus = bus;
    this.name = opts.name ?? 'tablekeeper';
    checkToken(this.name, 'service name');
    this.id = opts.id ?? randomBytes(11).toString('hex');
    checkToken(this.id, 'service id');
    this.version = opts.version;
    this.description = opts.description ?? '';
    this.metadata = { ...opts.metadata };
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.now = opts.clock ?? (() => performance.now());
    this.wallClock = opts.wallClock ?? Date.now;
    this.started = new Date(this.wallClock()).toISOString();
    // No queue group on $SRV: every instance answers discovery.
    for (const verb of VERBS) {
      const handler = (msg: Message): void => {
        msg.respond(encodeJson(this.body(verb)));
      };
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${this.name}`, `$SRV.${verb}.${this.name}.${this.id}`]) {
        this.control.push(this.bus.subscribe(subject, handler));
      }
    }
  }

  /** Removes the `$SRV` subscriptions and every endpoint. Idempotent. */
  stop(): void {
    for (const s of this.control.splice(0)) s.unsubscribe();
    for (const e of [...this.endpoints]) e.stop();
  }

  /** Subscribes an endpoint (queue group 'q' unless given) and returns it. */
  addEndpoint(opts: EndpointOptions): Endpoint {
    checkToken(opts.name, 'endpoint name');
    checkPattern(opts.subject);
    const queue = opts.queueGroup ?? 'q';
    checkQueue(queue);
    const endpoint = new Endpoint(opts.name, opts.subject, queue, opts.metadata, opts.handler, this);
    if (opts.subscribe !== false) endpoint.attach(this.bus);
    this.endpoints.push(endpoint);
    return endpoint;
  }

  /** @internal */
  forget(endpoint: Endpoint): void {
    const i = this.endpoints.indexOf(endpoint);
    if (i >= 0) this.endpoints.splice(i, 1);
  }

  ping(): ServiceIdentity {
    return this.identity('io.nats.micro.v1.ping_response');
  }

  info(): ServiceInfo {
    return {
      ...this.identity('io.nats.micro.v1.info_response'),
      description: this.description,
      endpoints: this.endpoints.map((e) => e.info()),
    };
  }

  stats(): ServiceStats {
    return {
      ...this.identity('io.nats.micro.v1.stats_response'),
      started: this.started,
      endpoints: this.endpoints.map((e) => e.stats()),
    };
  }

  /** Zeroes every endpoint's counters and restarts the `started` time. */
  reset(): void {
    for (const e of this.endpoints) e.reset();
    this.started = new Date(this.wallClock()).toISOString();
  }

  private body(verb: (typeof VERBS)[number]): ServiceIdentity {
    if (verb === 'PING') return this.ping();
    if (verb === 'INFO') return this.info();
    return this.stats();
  }

  private identity(type: string): ServiceIdentity {
    return { type, name: this.name, id: this.id, version: this.version, metadata: { ...this.metadata } };
  }
}
