/**
 * Web Push subscription routes: the VAPID public key a browser subscribes
 * with, and subscribe / unsubscribe (admin token; bodies validated with ajv).
 * A subscription is acknowledged only once it is durable. When Web Push is
 * disabled the routes answer 404.
 */
import Ajv from 'ajv';
import type { FastifyInstance } from 'fastify';
import { isP256PublicKey, type PushSubscriptionRecord, type PushSubscriptions } from '../actors';
import { describeErrors } from '../bus';
import { BadRequestError } from '../store';
import { HttpError } from './error-status';
import { PUSH_WORKER_HEADERS, PUSH_WORKER_JS } from './push-page';

/** What the push routes serve; absent when Web Push is disabled. */
export interface PushRoutesOptions {
  publicKey: string;
  subscriptions: PushSubscriptions;
}

const BASE64URL = '^[A-Za-z0-9_-]+={0,2}$';

/** A browser's `PushSubscription.toJSON()`; the endpoint must be https (push services are). */
export const PUSH_SUBSCRIPTION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['endpoint', 'keys'],
  properties: {
    endpoint: { type: 'string', pattern: '^https://', minLength: 9, maxLength: 2048 },
    expirationTime: { type: ['number', 'null'] },
    keys: {
      type: 'object',
      additionalProperties: false,
      required: ['p256dh', 'auth'],
      properties: {
        p256dh: { type: 'string', pattern: BASE64URL, minLength: 16, maxLength: 256 },
        auth: { type: 'string', pattern: BASE64URL, minLength: 8, maxLength: 128 },
      },
    },
  },
} as const;

/** The unsubscribe body. */
export const PUSH_UNSUBSCRIBE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['endpoint'],
  properties: { endpoint: { type: 'string', minLength: 1, maxLength: 2048 } },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const validSubscription = ajv.compile<PushSubscriptionRecord>(PUSH_SUBSCRIPTION_SCHEMA);
const validUnsubscribe = ajv.compile<{ endpoint: string }>(PUSH_UNSUBSCRIBE_SCHEMA);

function enabled(push: PushRoutesOptions | undefined): PushRoutesOptions {
  if (push === undefined) throw new HttpError('ROUTE_NOT_FOUND', 'Web Push is disabled (notify.webPush.enabled is false)');
  return push;
}

/** Registers the dashboard's service worker, `/api/push/key`, `/api/push/subscribe` and `/api/push/unsubscribe`. */
export function registerPushRoutes(app: FastifyInstance, push: PushRoutesOptions | undefined): void {
  app.get('/push-worker.js', { config: { access: 'public' } }, async (_req, reply) => reply.headers(PUSH_WORKER_HEADERS).send(PUSH_WORKER_JS));

  app.get('/api/push/key', { config: { access: 'read', operation: 'push.key' } }, async () => ({ publicKey: enabled(push).publicKey }));

  app.post('/api/push/subscribe', { config: { access: 'admin', operation: 'push.subscribe' } }, async (req) => {
    const p = enabled(push);
    if (!validSubscription(req.body)) throw new BadRequestError(describeErrors(validSubscription.errors));
    let host: string;
    try {
      host = new URL(req.body.endpoint).host;
    } catch {
      throw new BadRequestError('endpoint: is not a URL');
    }
    // Checked now, not at the first notification (which would fail, and be retried, for ever).
    if (!isP256PublicKey(req.body.keys.p256dh)) throw new BadRequestError('keys.p256dh: is not an uncompressed P-256 public key (65 bytes, base64url)');
    if (Buffer.from(req.body.keys.auth, 'base64url').length !== 16) throw new BadRequestError('keys.auth: is not a 16-byte secret (base64url)');
    const { created } = await p.subscriptions.add(req.body);
    req.log.info({ op: 'push.subscribe', created, host }, 'push subscription saved');
    return { subscribed: true, created };
  });

  app.post('/api/push/unsubscribe', { config: { access: 'admin', operation: 'push.unsubscribe' } }, async (req) => {
    const p = enabled(push);
    if (!validUnsubscribe(req.body)) throw new BadRequestError(describeErrors(validUnsubscribe.errors));
    return p.subscriptions.remove(req.body.endpoint);
  });
}
