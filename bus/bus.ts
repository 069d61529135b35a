/**
 * The bus interface every layer talks through. Only bytes and plain records
 * cross it: no NATS types, no shared objects. Two implementations exist
 * (`InProcessBus`, `NatsBus`) with identical subject semantics; one contract
 * suite (`test/bus/contract.ts`) runs against both.
 *
 * Subjects are `.`-separated tokens. In subscriptions, `*` matches exactly one
 * token and `>` (only as the last token) matches one or more trailing tokens.
 * Publish and request subjects carry no wildcards. An invalid subject throws
 * `InvalidSubjectError` (code `BAD_REQUEST`) synchronously.
 */

/** Message headers: one string value per name. Names are case-sensitive. */
export type Headers = Readonly<Record<string, string>>;

/** Options for publishing a message or a reply. */
export interface PublishOptions {
  headers?: Record<string, string>;
}

/** A message delivered to a subscriber, or a reply to a request. */
export interface Message {
  readonly subject: string;
  /** The body; a private copy of what the publisher sent. */
  readonly data: Uint8Array;
  readonly headers?: Headers;
  /** Where a reply goes, when the message is a request. */
  readonly reply?: string;
  /**
   * Sends `data` to this message's reply subject. Returns false when there is
   * nothing to reply to or the bus can no longer send.
   */
  respond(data: Uint8Array, opts?: PublishOptions): boolean;
}

/** A live subscription. */
export interface Subscription {
  readonly subject: string;
  /** Stops delivery at once, including messages already queued for it. Idempotent. */
  unsubscribe(): void;
}

/**
 * Called once per delivered message. Exceptions (and rejections, if the
 * handler is async) are caught and logged by the bus. An async handler's
 * promise is tracked, so `drain()` waits for it before closing.
 */
export type MessageHandler = (msg: Message) => void | Promise<void>;

/** Options for `Bus.subscribe`. */
export interface SubscribeOptions {
  /** Subscriptions sharing a queue name on a subject split its messages: each goes to exactly one. */
  queue?: string;
}

/** Options for `Bus.request`. */
export interface RequestOptions {
  /** Milliseconds to wait for the reply; default `DEFAULT_REQUEST_TIMEOUT_MS`. */
  timeoutMs?: number;
  headers?: Record<string, string>;
}

/** Request timeout used when `RequestOptions.timeoutMs` is not given. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;

/** Publish / subscribe / request over subjects. */
export interface Bus {
  /** Sends a message; delivery is asynchronous. Throws `BusClosedError` once closed or drained. */
  publish(subject: string, data?: Uint8Array, opts?: PublishOptions): void;
  subscribe(subject: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription;
  /**
   * Sends a request and resolves with the first reply. Rejects with
   * `BusTimeoutError`, `BusNoRespondersError` (nobody subscribes to the
   * subject) or `BusClosedError`. `subject` may be a request's reply
   * subject (answering a request with a question): the requester gets it as
   * its reply, with a `reply` of its own to answer.
   */
  request(subject: string, data?: Uint8Array, opts?: RequestOptions): Promise<Message>;
  /**
   * Resolves once everything published before the call has been delivered
   * to this bus's subscribers. Rejects with `BusClosedError` once closed.
   */
  flush(): Promise<void>;
  /**
   * Graceful close: stop taking new subscriptions and requests, deliver what
   * is already queued, wait for in-flight (async) handlers so their replies
   * go out, then close.
   */
  drain(): Promise<void>;
  /** Immediate close: pending requests reject with `BusClosedError`. Idempotent. */
  close(): Promise<void>;
  /**
   * The largest message (body plus headers, in bytes) the bus can carry
   * now, or undefined when it has no limit (the in-process bus). Over NATS
   * it is the connected server's `max_payload`. A publish or reply over it
   * throws `PayloadTooLargeError`.
   */
  readonly maxPayload?: number;
}
