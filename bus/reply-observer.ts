/**
 * How the micro-service layer learns of a message's first reply without
 * wrapping every message in another object: the bus's own message classes
 * accept one observer, told once, on the first `respond()` (or `complete()`).
 * Internal to the bus folder; the `Bus` and `Message` contracts are unchanged.
 */
import type { Message, PublishOptions } from './bus';
import { SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from './codec';

/** Told once per observed message, with the time observation started and the reply's error, if any. */
export interface ReplyObserver {
  replyObserved(startedMs: number, error: string | undefined): void;
}

/** The method a message offers when it can be observed (a symbol, so no plain Message has it by accident). */
export const OBSERVE_REPLY = Symbol('tablekeeper.observeReply');

/** A message whose first reply can be observed. */
export interface ObservableMessage extends Message {
  /** Starts observing; a message is observed at most once. */
  [OBSERVE_REPLY](observer: ReplyObserver, startedMs: number): void;
  /** True once an observed message has answered (replied, or completed without a reply). */
  readonly answered: boolean;
  /** Ends observation without a reply (a publish has nobody to answer), or with an error that could not be sent. */
  complete(error: string | undefined): void;
}

/** True when `msg` can be observed without a wrapper. */
export function isObservable(msg: Message): msg is ObservableMessage {
  return typeof (msg as Partial<ObservableMessage>)[OBSERVE_REPLY] === 'function';
}

/** The error a reply reports through the micro headers, or undefined for a success. */
export function replyError(opts: PublishOptions | undefined): string | undefined {
  const h = opts?.headers;
  if (h === undefined) return undefined;
  const code = h[SERVICE_ERROR_CODE_HEADER];
  return code === undefined ? undefined : h[SERVICE_ERROR_HEADER] || code;
}
