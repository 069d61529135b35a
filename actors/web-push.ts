/**
 * Web Push delivery through the `web-push` package (VAPID, RFC 8292, and
 * aes128gcm payload encryption, RFC 8291). One queue item per subscriber and
 * notification. A push service answering 404 or 410 says the subscription
 * is gone: it is removed. 429, 5xx and network errors are retried; any other
 * status is final.
 */
import * as webpush from 'web-push';
import type { AttemptResult } from './delivery-queue';
import type { Notification } from './notification';
import type { PushSubscriptionRecord } from './push-subscriptions';

/** The VAPID key pair (URL-safe base64, as `web-push generate-vapid-keys` prints it). */
export interface VapidKeys {
  publicKey: string;
  privateKey: string;
}

/** Options of one push; a subset of web-push's. */
export interface SendPushOptions {
  vapidDetails: { subject: string; publicKey: string; privateKey: string };
  TTL: number;
  timeout: number;
  urgency: 'high';
  contentEncoding: 'aes128gcm';
}

/** web-push's `sendNotification`, injected so tests need no push service. Rejects with a `statusCode` on a non-2xx answer. */
export type SendPush = (subscription: PushSubscriptionRecord, payload: string, options: SendPushOptions) => Promise<{ statusCode: number }>;

/** The default `SendPush`. */
export const webPushSend: SendPush = (subscription, payload, options) => webpush.sendNotification(subscription, payload, options);

/**
 * True when `key` (base64url) decodes to an uncompressed P-256 point, the
 * form Web Push takes for both a subscription's p256dh and a VAPID public key.
 */
export function isP256PublicKey(key: string): boolean {
  const bytes = Buffer.from(key, 'base64url');
  return bytes.length === 65 && bytes[0] === 0x04;
}

/** Generates a VAPID key pair. */
export function generateVapidKeys(): VapidKeys {
  return webpush.generateVAPIDKeys();
}

/** One queued push: a notification for one subscriber. */
export interface WebPushItem {
  notification: Notification;
  subscription: PushSubscriptionRecord;
}

/** Push services accept about 4 KB of payload; the body is shortened well below that. */
const MAX_BODY_CHARS = 1000;

/** The JSON the service worker receives: what it needs to show the notification. */
export function webPushPayload(n: Notification): string {
  const body = n.body.length > MAX_BODY_CHARS ? `${n.body.slice(0, MAX_BODY_CHARS - 3)}...` : n.body;
  return JSON.stringify({ title: n.title, body, table: n.table, event: n.event, at: n.at });
}

/** Seconds a push service keeps an undelivered notification: one day, after which the alert is stale. */
const TTL_S = 86_400;

/** Runs one push attempt. */
export async function sendWebPush(
  send: SendPush,
  item: WebPushItem,
  vapid: { subject: string; keys: VapidKeys },
  timeoutMs: number,
): Promise<AttemptResult> {
  try {
    await send(item.subscription, webPushPayload(item.notification), {
      vapidDetails: { subject: vapid.subject, publicKey: vapid.keys.publicKey, privateKey: vapid.keys.privateKey },
      TTL: TTL_S,
      timeout: timeoutMs,
      urgency: 'high',
      contentEncoding: 'aes128gcm',
    });
    return { kind: 'ok' };
  } catch (err) {
    const status = typeof err === 'object' && err !== null && 'statusCode' in err ? Number((err as { statusCode: unknown }).statusCode) : undefined;
    if (status === 404 || status === 410) return { kind: 'gone', reason: `push service answered ${status}` };
    if (status !== undefined && Number.isInteger(status) && status >= 400 && status < 500 && status !== 408 && status !== 429) {
      return { kind: 'fail', reason: `push service answered ${status} (not retried)` };
    }
    return { kind: 'retry', reason: status !== undefined ? `push service answered ${status}` : ((err as Error)?.message ?? String(err)) };
  }
}

/** The endpoint as it may be logged: the push service's host only (the path identifies the browser). */
export function loggableEndpoint(endpoint: string): string {
  try {
    return new URL(endpoint).host;
  } catch {
    return '(invalid endpoint)';
  }
}
