import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as webpush from 'web-push';
import { createActor, SimulatedClock, toPromise, type Actor } from 'xstate';
import { DeliveryQueue, type DeliveryOutcome } from '../../actors/delivery-queue';
import { Notifier, notifierMachine, WEBHOOK_QUEUE_MAX_BYTES, type NotifyChannel } from '../../actors/notifier';
import { PushSubscriptions, type PushSubscriptionRecord } from '../../actors/push-subscriptions';
import { generateVapidKeys, type SendPush, type SendPushOptions } from '../../actors/web-push';
import { retryAfterMs, undiciPost, verifyWebhookSignature, WEBHOOK_HEADERS, type HttpPost } from '../../actors/webhook';
import { encodeJson, InProcessBus, Subjects } from '../../bus';
import type { NotifyConfig } from '../../supervisor/config';
import { captureLogger } from '../http/http-helpers';

const SECRET = 'webhook-secret-for-tests';

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  res: ServerResponse;
}

/** A webhook receiver on 127.0.0.1; `answer` decides each status (undefined: never answer). */
class Receiver {
  readonly got: Received[] = [];
  answer: (n: number) => number | undefined = () => 200;
  private server!: Server;
  private waiters: { n: number; resolve: () => void }[] = [];

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), res });
        const status = this.answer(this.got.length);
        if (status !== undefined) res.writeHead(status).end('ok');
        this.waiters = this.waiters.filter((w) => (this.got.length >= w.n ? (w.resolve(), false) : true));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook?token=query-secret`;
  }

  /** Resolves once `n` requests have arrived. */
  received(n: number): Promise<void> {
    if (this.got.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function notifyConfig(url: string | undefined, over: Partial<NotifyConfig> = {}): NotifyConfig {
  return {
    events: ['backup_failed', 'compaction_failed', 'recovery_complete', 'recovery_failed'],
    webhooks: url === undefined ? [] : [{ url, secret: SECRET }],
    timeoutMs: 60_000,
    maxAttempts: 5,
    queueSize: 100,
    webPush: { enabled: false, subject: 'mailto:ops@example.test' },
    ...over,
  };
}

describe('notifier', () => {
  let bus: InProcessBus;
  let receiver: Receiver;
  let actor: Actor<typeof notifierMachine> | undefined;
  let dirs: string[];
  const subjects = new Subjects('');
  let clock: SimulatedClock;

  beforeEach(async () => {
    bus = new InProcessBus();
    receiver = new Receiver();
    dirs = [];
    clock = new SimulatedClock();
    clock.set(1_700_000_000_000);
  });

  afterEach(async () => {
    if (actor !== undefined && actor.getSnapshot().status === 'active') {
      const done = toPromise(actor);
      actor.send({ type: 'STOP' });
      clock.increment(10_000);
      await done;
    }
    actor = undefined;
    await receiver.stop().catch(() => undefined);
    await bus.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  function start(config: NotifyConfig, extra: { webPush?: ConstructorParameters<typeof Notifier>[0]['webPush'] } = {}) {
    const log = captureLogger('debug');
    const outcomes: { channel: NotifyChannel; outcome: DeliveryOutcome }[] = [];
    const outcomeWaiters: { n: number; resolve: () => void }[] = [];
    const posts: string[] = [];
    const post: HttpPost = (url, init) => {
      posts.push(url);
      return undiciPost(url, init);
    };
    const notifier = new Notifier({ config, subjects, logger: log.logger, clock, webPush: extra.webPush, post });
    notifier.onOutcome((channel, outcome) => {
      outcomes.push({ channel, outcome });
      for (const w of outcomeWaiters.splice(0)) if (outcomes.length >= w.n) w.resolve(); else outcomeWaiters.push(w);
    });
    actor = createActor(notifierMachine, { input: { notifier, bus, subjects, flushMs: 5000 } });
    actor.start();
    const settled = (n: number) => (outcomes.length >= n ? Promise.resolve() : new Promise<void>((resolve) => outcomeWaiters.push({ n, resolve })));
    /** Resolves once the log has `count` lines with message `msg`. */
    const logged = async (msg: string, count = 1) => {
      const matching = () => log.lines.filter((l) => (JSON.parse(l) as { msg: string }).msg === msg).length;
      // The log is written synchronously by the queue; each turn lets the pending I/O callbacks run.
      while (matching() < count) await new Promise((r) => setImmediate(r));
    };
    return { notifier, outcomes, settled, logged, log, posts };
  }

  const publish = (event: string, body: Record<string, unknown>) =>
    bus.publish(subjects.backupEvent(event as 'backup_failed'), encodeJson({ event, at: '2026-01-01T00:00:00.000Z', ...body }));

  function expectSigned(r: Received): void {
    const timestamp = String(r.headers[WEBHOOK_HEADERS.timestamp]);
    const signature = String(r.headers[WEBHOOK_HEADERS.signature]);
    const expected = `sha256=${createHmac('sha256', SECRET).update(`${timestamp}.${r.body}`).digest('hex')}`;
    expect(signature).toBe(expected);
    expect(verifyWebhookSignature({ secret: SECRET, timestamp, body: r.body, signature, nowS: Math.floor(clock.now() / 1000) })).toBe(true);
    expect(verifyWebhookSignature({ secret: 'other', timestamp, body: r.body, signature, nowS: Math.floor(clock.now() / 1000) })).toBe(false);
    expect(verifyWebhookSignature({ secret: SECRET, timestamp, body: r.body, signature, nowS: Math.floor(clock.now() / 1000) + 3600 })).toBe(false);
  }

  test('notifier - a webhook that answered 2xx has it, however slowly the rest of its answer comes: sent once', async () => {
    const url = await receiver.start();
    receiver.answer = () => undefined; // answered below, by hand
    const { settled, outcomes, posts } = start(notifyConfig(url));
    publish('backup_failed', { table: 'orders', trigger: 'scheduled', error: { code: 'BACKUP_FAILED', message: 'disk full' } });
    await receiver.received(1);
    const { res } = receiver.got[0];
    res.writeHead(200);
    res.write('accepted; the rest of this body never comes');
    await settled(1);
    expect(outcomes).toEqual([{ channel: 'webhook', outcome: 'sent' }]);
    expect(posts).toHaveLength(1);
  });

  test('notifier - a webhook receives exactly the failures and automatic recoveries, signed', async () => {
    const url = await receiver.start();
    const { settled, log } = start(notifyConfig(url));
    publish('backup_complete', { tables: [{ table: 'orders' }] });
    publish('backup_failed', { table: 'orders', trigger: 'scheduled', error: { code: 'BACKUP_FAILED', message: 'disk full' } });
    publish('compaction_complete', { trigger: 'scheduled', results: [] });
    publish('compaction_failed', { trigger: 'scheduled', results: [{ table: 'events', status: 'error', error: { code: 'STORE_IO', message: 'EIO' } }] });
    publish('corruption_detected', { table: 'orders', source: 'read', reason: 'checksum mismatch' });
    publish('recovery_complete', { table: 'orders', trigger: 'manual', mode: 'restore' });
    publish('recovery_complete', { table: 'orders', trigger: 'auto', mode: 'recover', recordsFromBackup: 10, recordsFromDamaged: 5, recordsLost: 1, backupUsed: 'b1' });
    publish('recovery_failed', { table: 'events', trigger: 'auto', error: { code: 'RECOVERY_FAILED', message: 'no space' }, degraded: false });
    // A marker after the rest: once it arrives, anything else would have arrived before it (one queue, in order).
    publish('backup_failed', { table: 'marker', trigger: 'manual', error: { code: 'BACKUP_FAILED', message: 'marker' } });
    await receiver.received(5);
    await settled(5);
    const bodies = receiver.got.map((r) => JSON.parse(r.body));
    expect(bodies.map((b) => `${b.event}:${b.table}`)).toEqual([
      'backup_failed:orders',
      'compaction_failed:events',
      'recovery_complete:orders',
      'recovery_failed:events',
      'backup_failed:marker',
    ]);
    expect(bodies[0]).toMatchObject({ subject: 'backups.backup_failed', at: '2026-01-01T00:00:00.000Z', title: 'Backup of orders failed', message: 'disk full' });
    expect(bodies[0].data).toMatchObject({ table: 'orders', error: { message: 'disk full' } });
    expect(bodies[2].message).toContain('10 record(s) from b1, 5 from the damaged file, 1 lost');
    for (const r of receiver.got) {
      expectSigned(r);
      expect(r.headers['content-type']).toBe('application/json');
    }
    // The secret and the URL's query never reach the log.
    expect(log.text()).not.toContain(SECRET);
    expect(log.text()).not.toContain('query-secret');
  });

  test('notifier - a 429 with Retry-After waits as long as asked (within the longest backoff), then delivers', async () => {
    const url = await receiver.start();
    receiver.answer = () => undefined; // answered below, by hand
    const { settled, logged, outcomes, posts, log } = start(notifyConfig(url));
    publish('recovery_failed', { table: 'orders', trigger: 'auto', error: { code: 'RECOVERY_FAILED', message: 'x' } });
    await receiver.received(1);
    receiver.got[0].res.writeHead(429, { 'retry-after': '10' }).end();
    await logged('notification attempt failed; will retry');
    expect(log.lines.map((l) => JSON.parse(l) as { msg: string; retryInMs?: number }).find((l) => l.msg === 'notification attempt failed; will retry')?.retryInMs).toBe(10_000);
    clock.increment(9_999); // the plain backoff (1 s) is long past
    await new Promise((r) => setImmediate(r));
    expect(posts).toHaveLength(1);
    receiver.answer = () => 200;
    clock.increment(1);
    await receiver.received(2);
    await settled(1);
    expect(outcomes).toEqual([{ channel: 'webhook', outcome: 'sent' }]);
  });

  test('notifier - Retry-After as seconds or as an HTTP date; anything else is ignored', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(retryAfterMs('120', now)).toBe(120_000);
    expect(retryAfterMs(' 0 ', now)).toBe(0);
    expect(retryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Wed, 31 Dec 2025 23:59:00 GMT', now)).toBe(0);
    expect(retryAfterMs('soon', now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });

  test('notifier - a 500 is retried after the backoff with the same delivery id, then delivered', async () => {
    const url = await receiver.start();
    receiver.answer = (n) => (n === 1 ? 500 : 200);
    const { settled, logged, outcomes, posts } = start(notifyConfig(url));
    publish('recovery_failed', { table: 'orders', trigger: 'auto', error: { code: 'RECOVERY_FAILED', message: 'x' } });
    await receiver.received(1);
    await logged('notification attempt failed; will retry');
    clock.increment(999);
    await new Promise((r) => setImmediate(r));
    expect(posts).toHaveLength(1);
    clock.increment(1);
    await receiver.received(2);
    await settled(1);
    expect(outcomes).toEqual([{ channel: 'webhook', outcome: 'sent' }]);
    const [a, b] = receiver.got;
    expect(a.headers[WEBHOOK_HEADERS.delivery]).toBe(b.headers[WEBHOOK_HEADERS.delivery]);
    expectSigned(a);
    expectSigned(b);
  });

  test('notifier - gives up after maxAttempts on 5xx; 4xx is not retried', async () => {
    const url = await receiver.start();
    receiver.answer = (n) => (n <= 3 ? 503 : n === 4 ? 400 : 200);
    const { settled, logged, outcomes } = start(notifyConfig(url, { maxAttempts: 3 }));
    publish('backup_failed', { table: 'first', error: { message: 'x' } });
    await receiver.received(1);
    await logged('notification attempt failed; will retry', 1);
    clock.increment(1000);
    await receiver.received(2);
    await logged('notification attempt failed; will retry', 2);
    clock.increment(2000);
    await receiver.received(3);
    await settled(1);
    expect(outcomes[0]).toEqual({ channel: 'webhook', outcome: 'failed' });
    // No fourth attempt of the first, however long we wait.
    clock.increment(3_600_000);
    publish('backup_failed', { table: 'second', error: { message: 'x' } });
    await receiver.received(4);
    await settled(2);
    expect(outcomes[1]).toEqual({ channel: 'webhook', outcome: 'failed' });
    // The 400 was final: the next request is the third notification, not a retry of the second.
    publish('backup_failed', { table: 'third', error: { message: 'x' } });
    await receiver.received(5);
    await settled(3);
    expect(receiver.got.map((r) => JSON.parse(r.body).table)).toEqual(['first', 'first', 'first', 'second', 'third']);
    expect(outcomes.map((o) => o.outcome)).toEqual(['failed', 'failed', 'sent']);
  });

  test('notifier - a hung receiver blocks neither the bus nor the stop; a full queue drops the oldest', async () => {
    const url = await receiver.start();
    receiver.answer = () => undefined; // never answers
    const other: string[] = [];
    bus.subscribe(subjects.allBackupEvents(), (m) => void other.push(m.subject));
    const { settled, outcomes, logged } = start(notifyConfig(url, { queueSize: 2 }));
    publish('backup_failed', { table: 't1', error: { message: 'x' } });
    await receiver.received(1);
    for (const t of ['t2', 't3', 't4']) publish('backup_failed', { table: t, error: { message: 'x' } });
    await bus.flush();
    // Everything reached the other subscriber while the receiver hangs.
    expect(other).toHaveLength(4);
    await logged('notification dropped');
    expect(outcomes).toEqual([{ channel: 'webhook', outcome: 'dropped' }]);
    // Stopping waits for the flush bound on the clock, then drops what is left.
    const done = toPromise(actor!);
    actor!.send({ type: 'STOP' });
    expect(actor!.getSnapshot().value).toBe('flushing');
    clock.increment(5000);
    await done;
    expect(actor!.getSnapshot().value).toBe('stopped');
    await settled(4);
    expect(outcomes.map((o) => o.outcome)).toEqual(['dropped', 'dropped', 'dropped', 'dropped']);
    expect(receiver.got).toHaveLength(1);
  });

  test('notifier - a webhook queue holds at most WEBHOOK_QUEUE_MAX_BYTES of payloads: large events push the oldest out, whatever queueSize says', async () => {
    const url = await receiver.start();
    receiver.answer = () => undefined; // never answers: everything after the first waits
    const { outcomes } = start(notifyConfig(url, { queueSize: 1000 }));
    // Anyone who may publish backups.> can send bodies up to max_payload; 1000 of these held over 2 GB.
    const pad = 'z'.repeat(1024 * 1024);
    publish('backup_failed', { table: 't1', error: { message: 'x' }, pad });
    await receiver.received(1);
    const payloadBytes = receiver.got[0].body.length;
    const n = 40;
    for (let i = 1; i < n; i++) publish('backup_failed', { table: 't1', error: { message: 'x' }, pad });
    await bus.flush();
    // Dropping happens as each event is queued, so it is all done once the bus has delivered them.
    const fit = Math.floor((16 * 1024 * 1024) / payloadBytes);
    expect(fit).toBe(15);
    expect(outcomes).toEqual(Array.from({ length: n - 1 - fit }, () => ({ channel: 'webhook', outcome: 'dropped' })));
    expect(WEBHOOK_QUEUE_MAX_BYTES).toBe(16 * 1024 * 1024);
  });

  test('notifier - a delivery queue bounded in bytes drops the oldest waiting items to make room; one item larger than the bound waits alone', async () => {
    const dropped: string[] = [];
    const q = new DeliveryQueue<string>({
      channel: 'webhook',
      target: 'test',
      clock,
      logger: captureLogger('warn').logger,
      capacity: 100,
      maxBytes: 10,
      sizeOf: (item) => item.length,
      maxAttempts: 1,
      timeoutMs: 60_000,
      attempt: () => new Promise(() => undefined), // hangs: one item in flight, the rest wait
      onOutcome: (item, outcome) => void (outcome === 'dropped' && dropped.push(item)),
      describe: () => ({}),
    });
    for (const item of ['a0000', 'b0000', 'c0000', 'd0000']) q.push(item);
    // 'a0000' is in flight; 'b0000' and 'c0000' fill the 10 bytes, so 'd0000' pushes 'b0000' out.
    expect(dropped).toEqual(['b0000']);
    expect(q.bytes).toBe(10);
    q.push('e'.repeat(25));
    expect(dropped).toEqual(['b0000', 'c0000', 'd0000']);
    expect(q.bytes).toBe(25);
    expect(q.size).toBe(2);
  });

  test('notifier - Web Push sends the payload to each subscriber and removes one the push service calls gone', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tk-notify-'));
    dirs.push(dir);
    const subscriptions = await PushSubscriptions.open(dir);
    const sub = (name: string): PushSubscriptionRecord => ({ endpoint: `https://push.example.test/${name}`, keys: { p256dh: 'BPk'.padEnd(40, 'a'), auth: 'auth-secret-1' } });
    await subscriptions.add(sub('alive'));
    await subscriptions.add(sub('gone'));
    const sent: { endpoint: string; payload: string; options: SendPushOptions }[] = [];
    const send: SendPush = async (s, payload, options) => {
      sent.push({ endpoint: s.endpoint, payload, options });
      if (s.endpoint.endsWith('/gone')) throw Object.assign(new Error('Received unexpected response code'), { statusCode: 410 });
      return { statusCode: 201 };
    };
    const keys = generateVapidKeys();
    const { settled, outcomes } = start(notifyConfig(undefined), { webPush: { keys, subject: 'mailto:ops@example.test', subscriptions, send } });
    publish('backup_complete', { tables: [] }); // not notified
    publish('recovery_failed', { table: 'orders', trigger: 'auto', degraded: true, error: { code: 'internal', message: 'started empty' } });
    await settled(2);
    expect(outcomes.map((o) => `${o.channel}:${o.outcome}`).sort()).toEqual(['webpush:gone', 'webpush:sent']);
    expect(sent.map((s) => s.endpoint).sort()).toEqual(['https://push.example.test/alive', 'https://push.example.test/gone']);
    expect(JSON.parse(sent[0].payload)).toEqual({ title: 'orders was started empty (degraded)', body: 'started empty', table: 'orders', event: 'recovery_failed', at: '2026-01-01T00:00:00.000Z' });
    expect(sent[0].options).toMatchObject({ contentEncoding: 'aes128gcm', vapidDetails: { subject: 'mailto:ops@example.test', publicKey: keys.publicKey, privateKey: keys.privateKey } });
    // Removed, durably: the file read anew no longer has it.
    await subscriptions.add(sub('later')); // serialised after the removal
    expect((await PushSubscriptions.open(dir)).list().map((s) => s.endpoint).sort()).toEqual(['https://push.example.test/alive', 'https://push.example.test/later']);
    expect(statSync(path.join(dir, '.tablekeeper', 'push-subscriptions.json')).mode & 0o777).toBe(0o600);
  });

  test('notifier - close waits until a gone subscription is removed on disk (the process may exit right after)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tk-notify-'));
    dirs.push(dir);
    const subscriptions = await PushSubscriptions.open(dir);
    await subscriptions.add({ endpoint: 'https://push.example.test/gone', keys: { p256dh: 'BPk'.padEnd(40, 'a'), auth: 'auth-secret-1' } });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    // The removal's write is held, as a slow disk would hold it.
    const slow = Object.create(subscriptions) as PushSubscriptions;
    slow.remove = async (endpoint: string) => {
      await held;
      return subscriptions.remove(endpoint);
    };
    const send: SendPush = async () => {
      throw Object.assign(new Error('Received unexpected response code'), { statusCode: 410 });
    };
    const { notifier, settled } = start(notifyConfig(undefined), { webPush: { keys: generateVapidKeys(), subject: 'mailto:ops@example.test', subscriptions: slow, send } });
    publish('recovery_failed', { table: 'orders', trigger: 'auto', degraded: true, error: { code: 'internal', message: 'started empty' } });
    await settled(1);
    let closed = false;
    const closing = notifier.close(1000).then(() => (closed = true));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    release();
    await closing;
    expect((await PushSubscriptions.open(dir)).list()).toEqual([]);
  });

  test('notifier - a second notification does not push the first one out of the Web Push queue', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tk-notify-'));
    dirs.push(dir);
    const subscriptions = await PushSubscriptions.open(dir);
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f']) await subscriptions.add({ endpoint: `https://push.example.test/${name}`, keys: { p256dh: 'BPk'.padEnd(40, 'a'), auth: 'auth-secret-1' } });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const sent: string[] = [];
    const send: SendPush = async (s, payload) => {
      await gate; // every delivery waits until both notifications are queued
      sent.push(`${JSON.parse(payload).table}:${s.endpoint.slice(-1)}`);
      return { statusCode: 201 };
    };
    const { settled, outcomes } = start(notifyConfig(undefined, { queueSize: 1 }), { webPush: { keys: generateVapidKeys(), subject: 'mailto:ops@example.test', subscriptions, send } });
    publish('recovery_failed', { table: 'orders', trigger: 'auto', degraded: true, error: { code: 'internal', message: 'x' } });
    publish('recovery_failed', { table: 'events', trigger: 'auto', degraded: true, error: { code: 'internal', message: 'y' } });
    await bus.flush();
    release();
    await settled(12);
    expect(outcomes.map((o) => o.outcome)).toEqual(Array(12).fill('sent'));
    expect(sent.filter((x) => x.startsWith('orders:'))).toHaveLength(6);
    expect(sent.filter((x) => x.startsWith('events:'))).toHaveLength(6);
  });

  test('notifier - the options given to web-push build a VAPID-signed aes128gcm request', () => {
    // A real browser-side key pair, so web-push encrypts for real.
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const jwk = publicKey.export({ format: 'jwk' });
    const raw = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x as string, 'base64url'), Buffer.from(jwk.y as string, 'base64url')]);
    const keys = generateVapidKeys();
    const details = webpush.generateRequestDetails(
      { endpoint: 'https://push.example.test/x', keys: { p256dh: raw.toString('base64url'), auth: randomBytes(16).toString('base64url') } },
      '{"title":"t"}',
      { vapidDetails: { subject: 'mailto:ops@example.test', ...keys }, TTL: 60, urgency: 'high', contentEncoding: 'aes128gcm' },
    );
    expect(details.headers['Content-Encoding']).toBe('aes128gcm');
    expect(details.headers.Authorization).toMatch(new RegExp(`^vapid t=[^,]+, k=${keys.publicKey}$`));
    expect(details.body?.length).toBeGreaterThan(13);
  });
});
