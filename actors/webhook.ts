/**
 * Webhook delivery: one JSON POST per notification to each configured URL.
 *
 * Signing (when the webhook has a secret): the request carries
 * `X-Tablekeeper-Timestamp: <unix seconds>` and
 * `X-Tablekeeper-Signature: sha256=<hex>`, the HMAC-SHA256 with the secret
 * of `<timestamp>.<raw body>`. A receiver recomputes it over the exact bytes
 * it received, compares in constant time, and rejects a timestamp more than
 * a few minutes old (a replayed request). Every attempt is signed anew, so a
 * late retry carries a fresh timestamp; `X-Tablekeeper-Delivery` stays the
 * same across the retries of one notification, for de-duplication.
 *
 * An answer 2xx is delivered; 408, 429, 5xx, a network error or the timeout
 * are retried with backoff; any other status is final (the receiver said no).
 */
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { request } from 'undici';
import type { AttemptResult } from './delivery-queue';
import { withoutData, type Notification } from './notification';

/** The POST the notifier makes; injected so tests (and proxies) can replace undici. */
export type HttpPost = (
  url: string,
  init: { headers: Record<string, string>; body: string; signal: AbortSignal },
) => Promise<{ status: number; retryAfter?: string }>;

/**
 * The default `HttpPost`: undici, no redirects followed. The status is the
 * answer: a receiver that has said 2xx has the notification, however slowly
 * it then sends (or never ends) its body, so the body is read and discarded
 * behind the answer (that lets the connection be reused), not waited for.
 */
export const undiciPost: HttpPost = async (url, init) => {
  const res = await request(url, { method: 'POST', headers: init.headers, body: init.body, signal: init.signal });
  res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
  const retryAfter = res.headers['retry-after'];
  return { status: res.statusCode, retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter };
};

/** Header names of a webhook request. */
export const WEBHOOK_HEADERS = {
  signature: 'x-tablekeeper-signature',
  timestamp: 'x-tablekeeper-timestamp',
  event: 'x-tablekeeper-event',
  delivery: 'x-tablekeeper-delivery',
} as const;

/** One configured webhook. */
export interface WebhookTarget {
  url: string;
  secret?: string;
}

/** One queued webhook delivery: the notification and its delivery id, fixed across retries. */
export interface WebhookItem {
  notification: Notification;
  delivery: string;
  payload: string;
}

/** `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`). */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * What a receiver does: true when `signature` is right for `timestamp` and
 * `body` and the timestamp is within `toleranceS` of `nowS`.
 */
export function verifyWebhookSignature(opts: { secret: string; timestamp: string; body: string; signature: string; nowS: number; toleranceS?: number }): boolean {
  const ts = Number(opts.timestamp);
  if (!/^[0-9]+$/.test(opts.timestamp) || Math.abs(opts.nowS - ts) > (opts.toleranceS ?? 300)) return false;
  const expected = Buffer.from(webhookSignature(opts.secret, opts.timestamp, opts.body));
  const given = Buffer.from(opts.signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The JSON body of a webhook request. */
export function webhookPayload(n: Notification): string {
  return JSON.stringify({ event: n.event, subject: n.subject, at: n.at, title: n.title, message: n.body, table: n.table, data: n.data });
}

/**
 * A queue item for `n`, with a new delivery id. The event body is kept once,
 * in the payload: the item's notification leaves it out (only its event and
 * table are read later), so a queued item holds it once, not twice.
 */
export function webhookItem(n: Notification): WebhookItem {
  return { notification: withoutData(n), delivery: randomUUID(), payload: webhookPayload(n) };
}

/** The URL as it may be logged: no credentials, no query (either may hold a token). */
export function loggableUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

/** A Retry-After header (seconds, or an HTTP date) as milliseconds from `nowMs`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, nowMs: number): number | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  if (/^[0-9]+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** Runs one delivery attempt of `item` to `target`. */
export async function postWebhook(post: HttpPost, target: WebhookTarget, item: WebhookItem, nowMs: number, signal: AbortSignal): Promise<AttemptResult> {
  const timestamp = String(Math.floor(nowMs / 1000));
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'tablekeeper-notifier',
    [WEBHOOK_HEADERS.event]: item.notification.event,
    [WEBHOOK_HEADERS.delivery]: item.delivery,
    [WEBHOOK_HEADERS.timestamp]: timestamp,
  };
  if (target.secret !== undefined) headers[WEBHOOK_HEADERS.signature] = webhookSignature(target.secret, timestamp, item.payload);
  const { status, retryAfter } = await post(target.url, { headers, body: item.payload, signal });
  if (status >= 200 && status < 300) return { kind: 'ok' };
  if (status === 408 || status === 429 || status >= 500) {
    const afterMs = retryAfterMs(retryAfter, nowMs);
    return { kind: 'retry', reason: `answered ${status}`, ...(afterMs === undefined ? {} : { afterMs }) };
  }
  return { kind: 'fail', reason: `answered ${status} (not retried)` };
}
