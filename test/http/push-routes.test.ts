import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateVapidKeys } from '../../actors';
import { PushSubscriptions } from '../../actors/push-subscriptions';
import { InProcessBus } from '../../bus';
import { createHttpServer } from '../../http';
import { resolveVapidKeys, vapidKeysPath } from '../../http/vapid-keys';
import { ConfigInvalidError } from '../../store/errors';
import { useTempDir } from '../helpers/store-temp';
import { ADMIN_TOKEN, captureLogger, parsePrometheus, READ_TOKEN, testConfig } from './http-helpers';

const tmp = useTempDir('tk-http-push-');

const SUB = {
  endpoint: 'https://push.example.test/send/abc123',
  expirationTime: null,
  keys: { p256dh: 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM', auth: 'tBHItJI5svbpez7KI4CCXg' },
};

describe('http push routes', () => {
  const buses: InProcessBus[] = [];
  afterAll(async () => {
    for (const b of buses) await b.close();
  });

  async function server(opts: { push: boolean }) {
    const bus = new InProcessBus();
    buses.push(bus);
    const config = testConfig(tmp.dir);
    const subscriptions = await PushSubscriptions.open(tmp.dir);
    const app = createHttpServer({
      config,
      bus,
      logger: captureLogger('silent').logger,
      adminToken: ADMIN_TOKEN,
      push: opts.push ? { publicKey: 'public-key-for-tests', subscriptions } : undefined,
    });
    return { app, subscriptions };
  }

  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  const post = (app: Awaited<ReturnType<typeof server>>['app'], url: string, body: unknown, token = ADMIN_TOKEN) =>
    app.inject({ method: 'POST', url, headers: { ...auth(token), 'content-type': 'application/json' }, payload: typeof body === 'string' ? body : JSON.stringify(body) });

  test('push - the key needs a token; subscribe and unsubscribe need the admin token', async () => {
    const { app } = await server({ push: true });
    expect((await app.inject({ method: 'GET', url: '/api/push/key' })).statusCode).toBe(401);
    const key = await app.inject({ method: 'GET', url: '/api/push/key', headers: auth(READ_TOKEN) });
    expect(key.statusCode).toBe(200);
    expect(key.json()).toEqual({ publicKey: 'public-key-for-tests' });
    for (const url of ['/api/push/subscribe', '/api/push/unsubscribe']) {
      const noToken = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(SUB) });
      expect(noToken.statusCode).toBe(401);
      const read = await post(app, url, SUB, READ_TOKEN);
      expect(read.statusCode).toBe(401);
      expect(read.json().error.code).toBe('unauthorized');
    }
    await app.close();
  });

  test('push - bad subscribe and unsubscribe bodies are 400 with the problem named', async () => {
    const { app, subscriptions } = await server({ push: true });
    const bad: [unknown, RegExp][] = [
      ['{not json', /not valid JSON/],
      ['', /body/],
      [{ ...SUB, endpoint: 'http://push.example.test/x' }, /endpoint/],
      [{ ...SUB, endpoint: 'https://bad host/x' }, /endpoint/],
      [{ endpoint: SUB.endpoint }, /keys: is required/],
      [{ ...SUB, keys: { p256dh: SUB.keys.p256dh } }, /keys.auth: is required/],
      [{ ...SUB, keys: { ...SUB.keys, auth: 'not base64!!' } }, /keys.auth/],
      [{ ...SUB, keys: { ...SUB.keys, p256dh: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } }, /keys.p256dh: is not an uncompressed P-256 public key/],
      [{ ...SUB, keys: { ...SUB.keys, p256dh: `A${SUB.keys.p256dh.slice(1)}` } }, /keys.p256dh/],
      [{ ...SUB, keys: { ...SUB.keys, auth: 'AAAAAAAAAAAA' } }, /keys.auth: is not a 16-byte secret/],
      [{ ...SUB, extra: 1 }, /extra: is not allowed/],
      [[SUB], /body/],
    ];
    for (const [body, message] of bad) {
      const res = await post(app, '/api/push/subscribe', body);
      expect(res.statusCode).toBe(400);
      expect(res.json().error.code).toBe('bad_request');
      expect(res.json().error.message).toMatch(message);
    }
    const un = await post(app, '/api/push/unsubscribe', { url: SUB.endpoint });
    expect(un.statusCode).toBe(400);
    expect(un.json().error.message).toMatch(/endpoint: is required/);
    expect(subscriptions.list()).toEqual([]);
    await app.close();
  });

  test('push - a subscription is persisted across a restart and removed by unsubscribe', async () => {
    const first = await server({ push: true });
    const res = await post(first.app, '/api/push/subscribe', SUB);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ subscribed: true, created: true });
    expect((await post(first.app, '/api/push/subscribe', SUB)).json()).toEqual({ subscribed: true, created: false });
    await first.app.close();

    const second = await server({ push: true });
    expect(second.subscriptions.list()).toEqual([{ endpoint: SUB.endpoint, expirationTime: null, keys: SUB.keys }]);
    expect((await post(second.app, '/api/push/unsubscribe', { endpoint: SUB.endpoint })).json()).toEqual({ removed: true });
    expect((await post(second.app, '/api/push/unsubscribe', { endpoint: SUB.endpoint })).json()).toEqual({ removed: false });
    await second.app.close();
    expect((await PushSubscriptions.open(tmp.dir)).list()).toEqual([]);
  });

  test('push - the dashboard has the enable button, and its service worker is served and allowed by the CSP', async () => {
    const { app } = await server({ push: true });
    const page = await app.inject({ method: 'GET', url: '/' });
    expect(page.body).toContain('id="push"');
    expect(page.body).toContain("navigator.serviceWorker.register('/push-worker.js')");
    expect(String(page.headers['content-security-policy'])).toContain("worker-src 'self'");
    const worker = await app.inject({ method: 'GET', url: '/push-worker.js' });
    expect(worker.statusCode).toBe(200);
    expect(worker.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(worker.body).toContain('showNotification');
    expect(() => new Function(worker.body)).not.toThrow();
    await app.close();
  });

  test('push - with Web Push disabled the routes answer 404 not_found', async () => {
    const { app } = await server({ push: false });
    const key = await app.inject({ method: 'GET', url: '/api/push/key', headers: auth(ADMIN_TOKEN) });
    expect(key.statusCode).toBe(404);
    expect(key.json().error).toEqual({ code: 'not_found', message: expect.stringMatching(/Web Push is disabled/) });
    expect((await post(app, '/api/push/subscribe', SUB)).statusCode).toBe(404);
    await app.close();
  });

  test('push - a broken subscriptions file stops the start with a readable error', async () => {
    fs.mkdirSync(`${tmp.dir}/.tablekeeper`, { recursive: true });
    fs.writeFileSync(`${tmp.dir}/.tablekeeper/push-subscriptions.json`, '{oops');
    await expect(PushSubscriptions.open(tmp.dir)).rejects.toThrow(ConfigInvalidError);
    await expect(PushSubscriptions.open(tmp.dir)).rejects.toThrow(/push-subscriptions.json is not valid JSON/);
  });

  test('push - notification outcomes are counted in /metrics by channel and result', async () => {
    const bus = new InProcessBus();
    buses.push(bus);
    let listener: ((channel: string, outcome: string) => void) | undefined;
    const app = createHttpServer({
      config: testConfig(tmp.dir),
      bus,
      logger: captureLogger('silent').logger,
      adminToken: ADMIN_TOKEN,
      notifier: { onOutcome: (l) => ((listener = l), () => (listener = undefined)) },
    });
    listener?.('webhook', 'sent');
    listener?.('webhook', 'sent');
    listener?.('webpush', 'gone');
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: auth(READ_TOKEN) });
    const samples = parsePrometheus(res.body).filter((x) => x.name === 'tablekeeper_notifications_total');
    expect(samples).toEqual(
      expect.arrayContaining([
        { name: 'tablekeeper_notifications_total', labels: { channel: 'webhook', result: 'sent' }, value: 2 },
        { name: 'tablekeeper_notifications_total', labels: { channel: 'webpush', result: 'gone' }, value: 1 },
      ]),
    );
    await app.close();
    expect(listener).toBeUndefined();
  });

  test('push - VAPID keys are generated once into a 0600 file, or taken from the environment', () => {
    const log = captureLogger('info');
    const webPush = { enabled: true, subject: 'mailto:ops@example.test' };
    const a = resolveVapidKeys({ dataDir: tmp.dir, webPush, logger: log.logger });
    expect(a.publicKey).toMatch(/^[A-Za-z0-9_-]{87}$/); // 65-byte uncompressed P-256 point
    expect(fs.statSync(vapidKeysPath(tmp.dir)).mode & 0o777).toBe(0o600);
    expect(log.text()).toContain(a.publicKey);
    expect(log.text()).not.toContain(a.privateKey);
    expect(resolveVapidKeys({ dataDir: tmp.dir, webPush, logger: log.logger })).toEqual(a);
    const pair = generateVapidKeys();
    const env = resolveVapidKeys({ dataDir: tmp.dir, webPush: { ...webPush, ...pair }, logger: log.logger });
    expect(env).toEqual(pair);
    fs.writeFileSync(vapidKeysPath(tmp.dir), '{"publicKey": 1}');
    expect(() => resolveVapidKeys({ dataDir: tmp.dir, webPush, logger: log.logger })).toThrow(/must hold/);
  });

  test('push - a VAPID key pair that cannot sign is a config error at start, from the environment or the file', () => {
    const log = captureLogger('info');
    const webPush = { enabled: true, subject: 'mailto:ops@example.test' };
    const pair = generateVapidKeys();
    const other = generateVapidKeys();
    for (const [keys, why] of [
      [{ publicKey: 'abc', privateKey: 'def' }, /public key must decode to an uncompressed P-256 point/],
      [{ publicKey: pair.publicKey, privateKey: 'def' }, /private key must decode to 32 bytes/],
      [{ publicKey: other.publicKey, privateKey: pair.privateKey }, /public key is not the one of the private key/],
    ] as const) {
      const fromEnv = (): unknown => resolveVapidKeys({ dataDir: tmp.dir, webPush: { ...webPush, ...keys }, logger: log.logger });
      expect(fromEnv).toThrow(ConfigInvalidError);
      expect(fromEnv).toThrow(why);
      expect(fromEnv).toThrow(/^TABLEKEEPER_VAPID_PUBLIC_KEY \/ TABLEKEEPER_VAPID_PRIVATE_KEY: /);
      fs.mkdirSync(path.dirname(vapidKeysPath(tmp.dir)), { recursive: true, mode: 0o700 });
      fs.writeFileSync(vapidKeysPath(tmp.dir), JSON.stringify(keys), { mode: 0o600 });
      expect(() => resolveVapidKeys({ dataDir: tmp.dir, webPush, logger: log.logger })).toThrow(why);
    }
  });
});
