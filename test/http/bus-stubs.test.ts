/**
 * The HTTP layer against an in-process bus with stub responders, for the
 * states that are hard to produce with the real service: conflicts,
 * unavailable and corrupt tables, timeouts, readiness changes, metrics
 * without an answering supervisor.
 */
import * as fs from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { connect } from 'node:net';
import { Client, request } from 'undici';
import { InProcessBus, respondError, respondOk, encodeJson, type Message } from '../../bus';
import { ERROR_CODES } from '../../bus/error-codes';
import { Subjects } from '../../bus/subjects';
import { adminTokenPath, createHttpServer, HttpMetrics, type ServiceLifecycle } from '../../http';
import { EventStreams } from '../../http/event-routes';
import {
  MaintenanceConflictError,
  TableCorruptError,
  TablekeeperError,
  TableUnavailableError,
  type ErrorCode,
} from '../../store/errors';
import { useTempDir } from '../helpers/store-temp';
import { ADMIN_TOKEN, captureLogger, parsePrometheus, READ_TOKEN, sampleValue, testConfig, until } from './http-helpers';

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const tmp = useTempDir('tk-http-stub-');

let bus: InProcessBus;
let app: FastifyInstance | undefined;

beforeEach(() => {
  bus = new InProcessBus();
});
afterEach(async () => {
  await app?.close();
  app = undefined;
  await bus.close();
});

function server(opts: Partial<Parameters<typeof createHttpServer>[0]> = {}): FastifyInstance {
  app = createHttpServer({ config: testConfig(tmp.dir), bus, logger: captureLogger('warn').logger, ...opts });
  return app;
}

/** True when a TCP connection to the port is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

function health(states: Record<string, string>, extra: Record<string, unknown> = {}) {
  return {
    status: 'ok',
    tables: Object.entries(states).map(([table, state]) => ({
      table,
      state,
      stats: { records: 3, fileBytes: 200, liveBytes: 150, deadBytes: 50, fragmentation: 0.25, generation: 2 },
      lastBackup: { at: new Date(Date.now() - 60_000).toISOString(), bytes: 100, records: 3, file: 'x', verified: true },
      backups: 2,
      lastCompaction: null,
      ...extra,
    })),
    nextRuns: { backup: null, compaction: null },
  };
}

describe('http over stub responders', () => {
  test('http - a maintenance conflict from the bus is 409 with the wire code unavailable', async () => {
    bus.subscribe('admin.compact.orders', (msg) => void respondError(msg, new MaintenanceConflictError('orders', 'compaction', 'backup')));
    const res = await server().inject({ method: 'POST', url: '/api/admin/compact/orders', headers: auth, payload: { force: true } });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toEqual({ error: { code: 'unavailable', message: "table 'orders': cannot start compaction while backup runs" } });
  });

  test('http - a compaction or backup of a target this server still has in flight is 409, not queued behind it', async () => {
    const held: Message[] = [];
    bus.subscribe('admin.backup.orders', (msg) => void held.push(msg));
    bus.subscribe('admin.backup.events', (msg) => void respondOk(msg, { results: [{ table: 'events', status: 'ok' }], durationMs: 1 }));
    bus.subscribe('admin.backup', (msg) => void respondOk(msg, { results: [], durationMs: 1 }));
    bus.subscribe('admin.compact.orders', (msg) => void respondOk(msg, { results: [{ table: 'orders', status: 'skipped' }], durationMs: 1 }));
    const s = server();
    const post = (url: string) => s.inject({ method: 'POST', url, headers: auth, remoteAddress: '127.0.0.5' });
    const first = post('/api/admin/backup/orders');
    await until(() => held.length === 1, 'the first backup to reach the bus');
    const again = await post('/api/admin/backup/orders');
    expect(again.statusCode).toBe(409);
    expect(again.json()).toEqual({
      error: { code: 'unavailable', message: "a backup of 'orders' asked for over HTTP is still queued or running; retry once it has answered" },
    });
    // Other tables, all tables, and other kinds of maintenance of the same table are not held up.
    expect((await post('/api/admin/backup/events')).statusCode).toBe(200);
    expect((await post('/api/admin/backup')).statusCode).toBe(200);
    expect((await post('/api/admin/compact/orders')).statusCode).toBe(200);
    expect(held).toHaveLength(1);
    respondOk(held[0], { results: [{ table: 'orders', status: 'ok' }], durationMs: 1 });
    expect((await first).statusCode).toBe(200);
    // Once answered, the next one goes out.
    const next = post('/api/admin/backup/orders');
    await until(() => held.length === 2, 'the next backup to reach the bus');
    respondOk(held[1], { results: [], durationMs: 1 });
    expect((await next).statusCode).toBe(200);
  });

  test('http - unavailable and corrupt tables are 503 with Retry-After', async () => {
    bus.subscribe('tables.orders.get', (msg) => void respondError(msg, new TableUnavailableError('orders', 'recovering')));
    bus.subscribe('tables.events.get', (msg) => void respondError(msg, new TableCorruptError('events', 16, 'bad crc')));
    const a = await server().inject({ method: 'GET', url: '/api/tables/orders/keys/k', headers: auth });
    expect(a.statusCode).toBe(503);
    expect(a.headers['retry-after']).toBe('1');
    expect(a.json().error.code).toBe('unavailable');
    const b = await app!.inject({ method: 'GET', url: '/api/tables/events/keys/k', headers: auth });
    expect(b.statusCode).toBe(503);
    expect(b.headers['retry-after']).toBe('1');
    expect(b.json().error).toEqual({ code: 'corrupt', message: "table 'events' is corrupt at offset 16: bad crc" });
  });

  test('http - nobody serving a table is 503; no reply within the timeout is 504', async () => {
    bus.subscribe('tables.events.stats', () => undefined); // never answers
    const s = server({ requestTimeoutMs: 50 });
    const down = await s.inject({ method: 'GET', url: '/api/tables/orders/stats', headers: auth });
    expect(down.statusCode).toBe(503);
    expect(down.headers['retry-after']).toBe('1');
    expect(down.json().error.code).toBe('unavailable');
    const slow = await s.inject({ method: 'GET', url: '/api/tables/events/stats', headers: auth });
    expect(slow.statusCode).toBe(504);
    expect(slow.json().error.code).toBe('timeout');
  });

  test('http - every internal error code sent by the bus comes back with its status and wire code', async () => {
    let code: ErrorCode = 'INTERNAL';
    bus.subscribe('tables.orders.stats', (msg) => void respondError(msg, new TablekeeperError(code, `failure ${code}`)));
    const s = server();
    for (const [c, m] of Object.entries(ERROR_CODES)) {
      code = c as ErrorCode;
      const res = await s.inject({ method: 'GET', url: '/api/tables/orders/stats', headers: auth });
      expect({ code: c, status: res.statusCode, body: res.json() }).toEqual({
        code: c,
        status: m.status,
        body: { error: { code: m.wire, message: `failure ${c}` } },
      });
      if (m.status === 503) expect(res.headers['retry-after']).toBeDefined();
    }
  });

  test('http - table names from the URL never reach the bus', async () => {
    const s = server();
    const request = jest.spyOn(bus, 'request');
    const urls = [
      ['GET', '/api/tables/..%2Forders/keys/k'],
      ['GET', '/api/tables/%2e%2e/keys/k'],
      ['GET', '/api/tables/orders%2F..%2Fevents/stats'],
      ['GET', '/api/tables/orders.get/keys/k'],
      ['GET', '/api/tables/orders%2Eget/stats'],
      ['GET', '/api/tables/*/keys/k'],
      ['GET', '/api/tables/%3E/keys'],
      ['PUT', '/api/tables/orders.%3E/keys/k'],
      ['DELETE', '/api/tables/%20orders/keys/k'],
      ['POST', '/api/admin/backup/..%2F..%2Fetc'],
      ['POST', '/api/admin/compact/*'],
      ['POST', '/api/admin/restore/%3E'],
      ['POST', '/api/admin/restore/orders.x'],
    ] as const;
    for (const [method, url] of urls) {
      const res = await s.inject({ method, url, headers: { ...auth, 'content-type': 'application/json' }, payload: method === 'PUT' ? '1' : undefined });
      expect({ url, status: res.statusCode, code: res.json().error.code }).toEqual({ url, status: 404, code: 'not_found' });
    }
    // Paths that do not even match a route are 404 too.
    for (const url of ['/api/tables/orders/keys/a/b', '/api/admin/backup/orders/x', '/api/tables/orders']) {
      const res = await s.inject({ method: 'GET', url, headers: auth });
      expect({ url, status: res.statusCode }).toEqual({ url, status: 404 });
    }
    expect(request).not.toHaveBeenCalled();
  });

  test('http - requests are the bus requests a NATS client sends, and replies come back byte for byte', async () => {
    const seen: { subject: string; body: string }[] = [];
    const record = (reply: string) => (msg: Message) => {
      seen.push({ subject: msg.subject, body: Buffer.from(msg.data).toString('utf8') });
      msg.respond(Buffer.from(reply));
    };
    bus.subscribe('admin.restore.orders', record('{"table":"orders","status":"restored","records":3}'));
    bus.subscribe('tables.orders.put', record('{"ok":true}'));
    bus.subscribe('tables.orders.select', record('{"items":[{"key":"a","value":1.5e300}],"next":"a"}'));
    bus.subscribe('admin.history', record('{"entries":[]}'));
    const s = server();
    const r1 = await s.inject({ method: 'POST', url: '/api/admin/restore/orders', headers: auth });
    expect(r1.statusCode).toBe(200);
    expect(r1.body).toBe('{"table":"orders","status":"restored","records":3}');
    const r2 = await s.inject({ method: 'PUT', url: '/api/tables/orders/keys/a%2Fb', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"n": [1, null]}' });
    expect(r2.body).toBe('{"ok":true}');
    const r3 = await s.inject({ method: 'GET', url: '/api/tables/orders/keys?prefix=a&limit=1', headers: auth });
    expect(r3.body).toBe('{"items":[{"key":"a","value":1.5e300}],"next":"a"}');
    expect(r3.headers['content-type']).toMatch(/^application\/json/);
    const r4 = await s.inject({ method: 'GET', url: '/api/admin/history?limit=7', headers: { authorization: `Bearer ${READ_TOKEN}` } });
    expect(r4.statusCode).toBe(200);
    expect(seen.map((x) => [x.subject, JSON.parse(x.body)])).toEqual([
      ['admin.restore.orders', {}],
      ['tables.orders.put', { key: 'a/b', value: { n: [1, null] } }],
      ['tables.orders.select', { prefix: 'a', limit: 1 }],
      ['admin.history', { limit: 7 }],
    ]);
  });

  test('http - a subject prefix is used for every request', async () => {
    bus.subscribe('acme.prod.tables.orders.stats', (msg) => void respondOk(msg, { records: 0 }));
    const config = { ...testConfig(tmp.dir), subjectPrefix: 'acme.prod' };
    app = createHttpServer({ config, bus, logger: captureLogger('warn').logger });
    const res = await app.inject({ method: 'GET', url: '/api/tables/orders/stats', headers: auth });
    expect(res.json()).toEqual({ records: 0 });
  });

  test('http - readiness follows the lifecycle and the tables\' states', async () => {
    let lifecycle: ServiceLifecycle = 'starting';
    let states: Record<string, string> = { orders: 'opening', events: 'serving' };
    const s = server({ lifecycle: () => lifecycle });
    const ready = () => s.inject({ method: 'GET', url: '/readyz' });

    let res = await ready();
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ ready: false, reason: 'the service is starting', error: { code: 'unavailable' } });

    lifecycle = 'running';
    res = await ready(); // nobody answers admin.health yet
    expect(res.statusCode).toBe(503);
    expect(res.json().reason).toMatch(/admin.health did not answer/);

    bus.subscribe('admin.health', (msg) => void respondOk(msg, health(states)));
    res = await ready();
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json().tables).toEqual([{ table: 'orders', state: 'opening' }]);

    states = { orders: 'serving', events: 'recovering' };
    res = await ready();
    expect(res.json().tables).toEqual([{ table: 'events', state: 'recovering' }]);

    states = { orders: 'serving', events: 'serving' };
    res = await ready();
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ ready: true, tables: 2 });

    lifecycle = 'stopping';
    expect((await ready()).statusCode).toBe(503);
    // Liveness does not depend on any of it.
    expect((await s.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  test('http - metrics are still served when admin.health does not answer, with tablekeeper_up 0', async () => {
    const res = await server({ probeTimeoutMs: 50 }).inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${READ_TOKEN}` } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const samples = parsePrometheus(res.body);
    expect(sampleValue(samples, 'tablekeeper_up')).toBe(0);
    expect(samples.some((x) => x.name.startsWith('tablekeeper_table_'))).toBe(false);
    expect(samples.some((x) => x.name === 'tablekeeper_process_cpu_user_seconds_total')).toBe(true);
  });

  test('http - metrics read the optional health fields and count backups.* events', async () => {
    bus.subscribe('admin.health', (msg) =>
      void respondOk(
        msg,
        health(
          { orders: 'serving', events: 'recovering' },
          { restarts: 2, recoveries: { count: 4, lastAt: null, lastDurationMs: 10 }, scrub: { lastAt: new Date().toISOString(), damagedRanges: 1 }, degraded: true },
        ),
      ),
    );
    const s = server();
    const events: [string, unknown][] = [
      ['compaction_complete', { results: [{ table: 'orders', status: 'compacted', durationMs: 1500 }, { table: 'events', status: 'skipped', durationMs: 1 }] }],
      ['backup_complete', { tables: [{ table: 'orders', durationMs: 200 }], failed: ['events'] }],
      ['backup_failed', { table: 'events', error: { code: 'BACKUP_FAILED', message: 'x' } }],
      ['corruption_detected', { table: 'events', reason: 'crc' }],
      ['recovery_complete', { table: 'events', durationMs: 250 }],
      ['recovery_failed', { table: 'orders', durationMs: 4000 }],
    ];
    for (const [name, body] of events) bus.publish(`backups.${name}`, encodeJson({ event: name, at: new Date().toISOString(), ...(body as object) }));
    await bus.flush();
    const scrape = async () =>
      parsePrometheus((await s.inject({ method: 'GET', url: '/metrics', headers: auth })).body);
    await until(async () => sampleValue(await scrape(), 'tablekeeper_events_total', { event: 'recovery_failed' }) === 1, 'events counted');
    const m = await scrape();
    expect(sampleValue(m, 'tablekeeper_up')).toBe(1);
    expect(sampleValue(m, 'tablekeeper_table_records', { table: 'orders' })).toBe(3);
    expect(sampleValue(m, 'tablekeeper_table_fragmentation_ratio', { table: 'orders' })).toBe(0.25);
    expect(sampleValue(m, 'tablekeeper_table_state', { table: 'events', state: 'recovering' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_table_state', { table: 'events', state: 'serving' })).toBe(0);
    expect(sampleValue(m, 'tablekeeper_table_owner_restarts', { table: 'orders' })).toBe(2);
    expect(sampleValue(m, 'tablekeeper_table_recoveries', { table: 'orders' })).toBe(4);
    expect(sampleValue(m, 'tablekeeper_table_degraded', { table: 'orders' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_table_scrub_damaged_ranges', { table: 'orders' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_table_backups', { table: 'orders' })).toBe(2);
    const age = sampleValue(m, 'tablekeeper_table_last_backup_age_seconds', { table: 'orders' });
    expect(age).toBeGreaterThanOrEqual(60);
    expect(sampleValue(m, 'tablekeeper_compactions_total', { table: 'orders', status: 'compacted' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_compactions_total', { table: 'events', status: 'skipped' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_compaction_duration_seconds_count', { table: 'orders' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_compaction_duration_seconds_sum', { table: 'orders' })).toBe(1.5);
    expect(sampleValue(m, 'tablekeeper_backups_total', { table: 'orders', result: 'ok' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_backups_total', { table: 'events', result: 'failed' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_corruptions_detected_total', { table: 'events' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_recoveries_total', { table: 'events', result: 'complete' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_recovery_duration_seconds_sum', { table: 'orders', result: 'failed' })).toBe(4);
  });

  test('http - made-up event names and tables on backups.* add no metric series: they count as event "other" and under no table', async () => {
    bus.subscribe('admin.health', (msg) => void respondOk(msg, health({ orders: 'serving' })));
    const s = server();
    // What anyone allowed to publish backups.> could send: each of these used to be a series of its own, for good.
    const n = 500;
    for (let i = 0; i < n; i++) {
      bus.publish(`backups.made_up_${i}`, encodeJson({ event: `made_up_${i}` }));
      bus.publish('backups.corruption_detected', encodeJson({ table: `nosuch_${i}`, reason: 'x' }));
      bus.publish('backups.compaction_complete', encodeJson({ results: [{ table: `nosuch_${i}`, status: 'compacted', durationMs: 1 }, { table: 'orders', status: `status_${i}` }] }));
      bus.publish('backups.recovery_failed', encodeJson({ table: `nosuch_${i}`, durationMs: 1 }));
    }
    // The service's own events still count by table, the history table's included.
    bus.publish('backups.corruption_detected', encodeJson({ table: 'orders', reason: 'crc' }));
    bus.publish('backups.corruption_detected', encodeJson({ table: '_history', reason: 'crc', source: 'open' }));
    await bus.flush();
    const m = parsePrometheus((await s.inject({ method: 'GET', url: '/metrics', headers: auth })).body);
    const series = (name: string) => m.filter((x) => x.name === name);
    expect(series('tablekeeper_events_total').map((x) => x.labels.event).sort()).toEqual(['compaction_complete', 'corruption_detected', 'other', 'recovery_failed']);
    expect(sampleValue(m, 'tablekeeper_events_total', { event: 'other' })).toBe(n);
    expect(sampleValue(m, 'tablekeeper_events_total', { event: 'corruption_detected' })).toBe(n + 2);
    expect(series('tablekeeper_corruptions_detected_total').map((x) => x.labels.table).sort()).toEqual(['_history', 'orders']);
    expect(series('tablekeeper_compactions_total')).toEqual([]);
    expect(series('tablekeeper_recoveries_total')).toEqual([]);
  });

  test('http - the bus gauges come from this instance, not another tablekeeper on the same NATS that answers first', async () => {
    bus.subscribe('admin.health', (msg) => void respondOk(msg, health({ orders: 'serving' })));
    // Another service named tablekeeper (another prefix) answers the name-wide subject at once ...
    bus.subscribe('$SRV.STATS.tablekeeper', (msg) =>
      void respondOk(msg, { id: 'other-id', endpoints: [{ name: 'orders', subject: 'staging.tables.orders.>', num_requests: 99, num_errors: 99 }] }),
    );
    // ... and this one its own id, a little later.
    bus.subscribe('$SRV.STATS.tablekeeper.own-id', (msg) =>
      void setTimeout(() => respondOk(msg, { id: 'own-id', endpoints: [{ name: 'orders', subject: 'tables.orders.>', num_requests: 7, num_errors: 1 }] }), 20),
    );
    const res = await server({ serviceId: 'own-id' }).inject({ method: 'GET', url: '/metrics', headers: auth });
    expect(res.statusCode).toBe(200);
    const m = parsePrometheus(res.body);
    expect(sampleValue(m, 'tablekeeper_bus_table_requests', { table: 'orders' })).toBe(7);
    expect(sampleValue(m, 'tablekeeper_bus_table_errors', { table: 'orders' })).toBe(1);
  });

  test('http - two overlapping scrapes both render the table gauges, whichever answer comes first', async () => {
    // Each scrape's admin.health and $SRV.STATS requests are held here and answered in a chosen order.
    const healthAsks: Message[] = [];
    const statsAsks: Message[] = [];
    bus.subscribe('admin.health', (msg) => void healthAsks.push(msg));
    bus.subscribe('$SRV.STATS.tablekeeper', (msg) => void statsAsks.push(msg));
    const stats = { endpoints: [{ name: 'orders', subject: 'tables.orders.>', num_requests: 7, num_errors: 1 }] };
    const metrics = new HttpMetrics({ bus, subjects: new Subjects(''), logger: captureLogger('warn').logger });
    const records = async () => (await metrics.registry.getSingleMetric('tablekeeper_table_records')!.get()).values.length;
    const first = metrics.render();
    await until(() => healthAsks.length === 1 && statsAsks.length === 1, 'the first scrape to ask');
    respondOk(healthAsks[0], health({ orders: 'serving' }));
    await until(async () => (await records()) === 1, 'the first scrape to set its table gauges');
    // The second scrape starts after the first has its table gauges but before it renders.
    const second = metrics.render();
    await until(() => healthAsks.length === 2 && statsAsks.length === 2, 'the second scrape to ask');
    respondOk(statsAsks[0], stats);
    const a = parsePrometheus(await first);
    respondOk(healthAsks[1], health({ orders: 'recovering' }));
    respondOk(statsAsks[1], stats);
    const b = parsePrometheus(await second);
    expect(sampleValue(a, 'tablekeeper_up')).toBe(1);
    expect(sampleValue(a, 'tablekeeper_table_records', { table: 'orders' })).toBe(3);
    expect(sampleValue(a, 'tablekeeper_table_state', { table: 'orders', state: 'serving' })).toBe(1);
    expect(sampleValue(a, 'tablekeeper_bus_table_requests', { table: 'orders' })).toBe(7);
    expect(sampleValue(b, 'tablekeeper_table_records', { table: 'orders' })).toBe(3);
    expect(sampleValue(b, 'tablekeeper_table_state', { table: 'orders', state: 'recovering' })).toBe(1);
    expect(sampleValue(b, 'tablekeeper_bus_table_errors', { table: 'orders' })).toBe(1);
  });

  /** Opens `/api/events` streams on `url` with the read token; `open` holds those let in, which `closeAll` ends. */
  function eventStreams(url: string) {
    const open: { abort: AbortController; reading: Promise<unknown> }[] = [];
    const openStream = async () => {
      const abort = new AbortController();
      const res = await request(`${url}/api/events`, { headers: { authorization: `Bearer ${READ_TOKEN}` }, signal: abort.signal });
      if (res.statusCode !== 200) return { status: res.statusCode, headers: res.headers, body: await res.body.json() };
      open.push({ abort, reading: res.body.dump().catch(() => undefined) });
      return { status: 200 };
    };
    const closeAll = async (): Promise<void> => {
      for (const o of open) o.abort.abort();
      await Promise.all(open.map((o) => o.reading));
    };
    return { open, openStream, closeAll };
  }

  test('http - one client may hold at most 8 event streams; the next gets 429 in the usual shape until one closes', async () => {
    const s = server();
    const url = await s.listen({ host: '127.0.0.1', port: 0 });
    const { open, openStream, closeAll } = eventStreams(url);
    const streamsGauge = async () => sampleValue(parsePrometheus((await s.inject({ method: 'GET', url: '/metrics', headers: auth })).body), 'tablekeeper_http_event_streams');
    try {
      for (let i = 0; i < 8; i++) expect((await openStream()).status).toBe(200);
      const refused = await openStream();
      expect(refused.status).toBe(429);
      expect(refused.body).toEqual({ error: { code: 'unavailable', message: 'this client already has 8 event streams open; close one first' } });
      expect(await streamsGauge()).toBe(8);
      const first = open.shift()!;
      first.abort.abort();
      await first.reading;
      await until(async () => (await streamsGauge()) === 7, 'the closed stream to be counted out');
      expect((await openStream()).status).toBe(200);
      const m = parsePrometheus((await s.inject({ method: 'GET', url: '/metrics', headers: auth })).body);
      // Hijacked stream replies are counted as operations too.
      expect(sampleValue(m, 'tablekeeper_http_operations_total', { operation: 'events' })).toBeGreaterThanOrEqual(9);
    } finally {
      await closeAll();
    }
  });

  test('http - the server holds at most http.maxEventStreams streams from all clients together; the next gets 503 in the usual shape until one closes', async () => {
    const config = testConfig(tmp.dir);
    app = createHttpServer({ config: { ...config, http: { ...config.http, maxEventStreams: 3 } }, bus, logger: captureLogger('warn').logger });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const { open, openStream, closeAll } = eventStreams(url);
    try {
      // Fewer than the 8 one address may hold: the server's own limit is what refuses the fourth.
      for (let i = 0; i < 3; i++) expect((await openStream()).status).toBe(200);
      const refused = await openStream();
      expect(refused.status).toBe(503);
      expect(refused.headers?.['retry-after']).toBe('1');
      expect(refused.body).toEqual({ error: { code: 'unavailable', message: 'the server already holds 3 event streams, its limit; retry later' } });
      const first = open.shift()!;
      first.abort.abort();
      await first.reading;
      await until(async () => (await openStream()).status === 200, 'a stream to be allowed again once one closed');
      expect(open).toHaveLength(3);
    } finally {
      await closeAll();
    }
  });

  test('http - the server-wide stream limit counts every address', () => {
    const streams = new EventStreams(8, 3);
    const ends = [() => undefined, () => undefined, () => undefined];
    ends.forEach((end, i) => streams.add(end, `10.0.0.${i}`));
    expect([streams.size, streams.full, streams.heldBy('10.0.0.0')]).toEqual([3, true, 1]);
    streams.delete(ends[0]);
    expect(streams.full).toBe(false);
  });

  test('http - event streams are counted per client address', () => {
    const streams = new EventStreams(2);
    const [a, b, c] = [() => undefined, () => undefined, () => undefined];
    streams.add(a, '10.0.0.1');
    streams.add(b, '10.0.0.1');
    streams.add(c, '10.0.0.2');
    expect([streams.heldBy('10.0.0.1'), streams.heldBy('10.0.0.2'), streams.heldBy('10.0.0.3'), streams.size]).toEqual([2, 1, 0, 3]);
    streams.delete(a);
    streams.delete(a); // ending twice counts once
    expect([streams.heldBy('10.0.0.1'), streams.size]).toEqual([1, 2]);
  });

  test('http - admin mutations are rate limited per client with 429 and Retry-After', async () => {
    let now = 1_000_000;
    bus.subscribe('admin.backup', (msg) => void respondOk(msg, { results: [], durationMs: 0 }));
    bus.subscribe('admin.health', (msg) => void respondOk(msg, health({ orders: 'serving' })));
    const config = testConfig(tmp.dir, { rateLimit: { burst: 2, perMinute: 6 } });
    app = createHttpServer({ config, bus, logger: captureLogger('warn').logger, now: () => now });
    const backup = (remoteAddress: string) => app!.inject({ method: 'POST', url: '/api/admin/backup', headers: auth, remoteAddress });
    expect((await backup('10.0.0.1')).statusCode).toBe(200);
    expect((await backup('10.0.0.1')).statusCode).toBe(200);
    const limited = await backup('10.0.0.1');
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBe('10');
    expect(limited.json().error.code).toBe('unavailable');
    // Another client has its own bucket, and reads are not limited.
    expect((await backup('10.0.0.2')).statusCode).toBe(200);
    for (let i = 0; i < 5; i++) {
      expect((await app.inject({ method: 'GET', url: '/api/admin/health', headers: auth, remoteAddress: '10.0.0.1' })).statusCode).toBe(200);
    }
    now += 9_000;
    expect((await backup('10.0.0.1')).statusCode).toBe(429);
    now += 1_000;
    expect((await backup('10.0.0.1')).statusCode).toBe(200);
  });

  test('http - while the server closes, calls in flight finish and new ones get 503 in the usual shape', async () => {
    let release: (() => void) | undefined;
    bus.subscribe('tables.orders.stats', (msg) => {
      release = () => void respondOk(msg, { records: 1 });
    });
    const s = server();
    const url = await s.listen({ host: '127.0.0.1', port: 0 });
    const { port } = new URL(url);
    // One connection with two requests pipelined on it: the second is read only after the first is answered.
    const client = new Client(url, { pipelining: 2 });
    try {
      const inflight = client.request({ method: 'GET', path: '/api/tables/orders/stats', headers: auth });
      await until(() => release !== undefined, 'the request to reach the bus');
      const closed = s.close();
      // Once new connections are refused, the close is under way.
      await until(() => refused(Number(port)), 'the listener to close');
      const late = client.request({ method: 'GET', path: '/api/tables/orders/stats', headers: auth });
      release!();
      const first = await inflight;
      expect(first.statusCode).toBe(200);
      expect(await first.body.json()).toEqual({ records: 1 });
      const second = await late;
      expect(second.statusCode).toBe(503);
      expect(second.headers['retry-after']).toBe('1');
      expect(await second.body.json()).toEqual({ error: { code: 'unavailable', message: 'the service is stopping; retry later' } });
      await closed;
    } finally {
      await client.destroy();
    }
  });

  test('http - without a configured token, the generated one in the token file is the admin token', async () => {
    bus.subscribe('admin.history', (msg) => void respondOk(msg, { entries: [] }));
    const base = testConfig(tmp.dir);
    const config = { ...base, http: { ...base.http, adminToken: undefined } };
    const { logger, text } = captureLogger('info');
    app = createHttpServer({ config, bus, logger });
    const token = fs.readFileSync(adminTokenPath(tmp.dir), 'utf8').trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(text().split(token).length - 1).toBe(1);
    expect((await app.inject({ method: 'GET', url: '/api/admin/history', headers: { authorization: `Bearer ${token}` } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/api/admin/history', headers: auth })).statusCode).toBe(401);
  });
});
