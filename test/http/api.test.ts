/**
 * The HTTP API against the real service (`startService`: embedded bus,
 * supervisor, table owners, temporary data dir): every route in-process
 * through `inject`, and the same server over its real port with undici.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { request as httpRequest } from 'node:http';
import { request } from 'undici';
import { encodeJson } from '../../bus';
import { startService, type RunningService } from '../../cli/serve';
import { OPENAPI_DOCUMENT, routesOf } from '../../http';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { ADMIN_TOKEN, captureLogger, parsePrometheus, READ_TOKEN, sampleValue, testConfig, until } from './http-helpers';

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const reader = { authorization: `Bearer ${READ_TOKEN}` };
const json = { ...admin, 'content-type': 'application/json' };
const WRONG = 'wrong-token-that-must-never-be-logged';

/** A key as a path segment. */
const seg = (key: string) => encodeURIComponent(key);

/**
 * A request whose path is sent exactly as given. `inject`, fetch and undici
 * resolve `.`, `..` and `%2e%2e` segments as URL steps, as browsers do; a raw
 * client (curl --path-as-is) does not, and the server must then treat them
 * as the key they name.
 */
function rawRequest(base: string, method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers: body === undefined ? admin : json }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

let dir: string;
let service: RunningService;
let app: FastifyInstance;
let logs: ReturnType<typeof captureLogger>;

beforeAll(async () => {
  dir = makeTempDir('tk-http-api-');
  logs = captureLogger('debug');
  service = await startService(testConfig(dir, { rateLimit: { burst: 2, perMinute: 1 } }), logs.logger);
  app = service.http;
});

afterAll(async () => {
  await service?.stop();
  removeTempDir(dir);
});

describe('http api on the real service', () => {
  test('http - data routes: put, get, delete and list keys, including keys with slashes, dots and wildcards', async () => {
    const keys = ['plain', 'a/b', '*', '>', 'a.b.c', '%2e', '...', 'ключ', 'sp ace', '', 'x'.repeat(1024)].filter((k) => k !== '');
    for (const [i, key] of keys.entries()) {
      const res = await app.inject({ method: 'PUT', url: `/api/tables/orders/keys/${seg(key)}`, headers: json, payload: JSON.stringify({ i }) });
      expect({ key, status: res.statusCode, body: res.body }).toEqual({ key, status: 200, body: '{"ok":true}' });
    }
    for (const [i, key] of keys.entries()) {
      const res = await app.inject({ method: 'GET', url: `/api/tables/orders/keys/${seg(key)}`, headers: admin });
      expect({ key, body: res.json() }).toEqual({ key, body: { found: true, value: { i } } });
    }
    // Any JSON value, null included, is a value.
    for (const value of [null, 0, 'text', [1, { a: true }], { nested: { deep: [] } }]) {
      const put = await app.inject({ method: 'PUT', url: '/api/tables/events/keys/v', headers: json, payload: JSON.stringify(value) });
      expect(put.statusCode).toBe(200);
      const got = await app.inject({ method: 'GET', url: '/api/tables/events/keys/v', headers: admin });
      expect(got.json()).toEqual({ found: true, value });
    }
    // ... and it comes back as it was written: no digits lost, no reformatting.
    const exact = ' { "id": 12345678901234567890, "price" : 1.0 }\n';
    expect((await app.inject({ method: 'PUT', url: '/api/tables/events/keys/exact', headers: json, payload: exact })).statusCode).toBe(200);
    const back = await app.inject({ method: 'GET', url: '/api/tables/events/keys/exact', headers: admin });
    expect(back.body).toBe(`{"found":true,"value":${exact.trim()}}`);
    // Bytes that are not UTF-8 are refused, as on the bus, not stored as U+FFFD.
    for (const bytes of [[0x22, 0x61, 0xff, 0xfe, 0x62, 0x22], [0x22, 0xed, 0xa0, 0x80, 0x22]]) {
      const bad = await app.inject({ method: 'PUT', url: '/api/tables/events/keys/exact', headers: json, payload: Buffer.from(bytes) });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toEqual({ error: { code: 'bad_request', message: expect.stringMatching(/not UTF-8/) } });
    }
    expect((await app.inject({ method: 'GET', url: '/api/tables/events/keys/exact', headers: admin })).body).toBe(`{"found":true,"value":${exact.trim()}}`);

    const page1 = await app.inject({ method: 'GET', url: '/api/tables/orders/keys?limit=3', headers: admin });
    const sorted = [...keys].sort();
    expect(page1.json().items.map((x: { key: string }) => x.key)).toEqual(sorted.slice(0, 3));
    expect(page1.json().next).toBe(sorted[2]);
    const page2 = await app.inject({ method: 'GET', url: `/api/tables/orders/keys?limit=3&after=${encodeURIComponent(page1.json().next)}`, headers: admin });
    expect(page2.json().items.map((x: { key: string }) => x.key)).toEqual(sorted.slice(3, 6));
    const prefixed = await app.inject({ method: 'GET', url: '/api/tables/orders/keys?prefix=a', headers: admin });
    expect(prefixed.json()).toEqual({ items: [{ key: 'a.b.c', value: { i: 4 } }, { key: 'a/b', value: { i: 1 } }] });

    const del = await app.inject({ method: 'DELETE', url: '/api/tables/orders/keys/a%2Fb', headers: admin });
    expect(del.json()).toEqual({ deleted: true });
    const again = await app.inject({ method: 'DELETE', url: '/api/tables/orders/keys/a%2Fb', headers: admin });
    expect(again.json()).toEqual({ deleted: false });
    const gone = await app.inject({ method: 'GET', url: '/api/tables/orders/keys/a%2Fb', headers: admin });
    expect(gone.statusCode).toBe(200);
    expect(gone.json()).toEqual({ found: false });

    const stats = await app.inject({ method: 'GET', url: '/api/tables/orders/stats', headers: admin });
    expect(stats.json()).toMatchObject({ table: 'orders', state: 'serving', records: keys.length - 1 });
    // HTTP and the bus share one implementation: the bus sees the same data.
    const viaBus = await service.bus.request('tables.orders.get', encodeJson({ key: 'ключ' }));
    expect(JSON.parse(Buffer.from(viaBus.data).toString('utf8'))).toEqual({ found: true, value: { i: 7 } });
  });

  test('http - bad input is 400, 413 or 415 with {error:{code,message}} and changes nothing', async () => {
    const cases: [string, InjectOptions, number][] = [
      ['put without body', { method: 'PUT', url: '/api/tables/orders/keys/k', headers: admin }, 400],
      ['put with invalid JSON', { method: 'PUT', url: '/api/tables/orders/keys/k', headers: json, payload: '{"a":' }, 400],
      ['put as text/plain', { method: 'PUT', url: '/api/tables/orders/keys/k', headers: { ...admin, 'content-type': 'text/plain' }, payload: '1' }, 415],
      ['value over the table limit', { method: 'PUT', url: '/api/tables/orders/keys/k', headers: json, payload: JSON.stringify('v'.repeat(5000)) }, 413],
      ['body over the body limit', { method: 'PUT', url: '/api/tables/events/keys/k', headers: json, payload: JSON.stringify('v'.repeat(70 * 1024)) }, 413],
      ['key of 1025 characters', { method: 'GET', url: `/api/tables/orders/keys/${'k'.repeat(1025)}`, headers: admin }, 400],
      ['key over 1 KiB in UTF-8', { method: 'PUT', url: `/api/tables/orders/keys/${seg('é'.repeat(600))}`, headers: json, payload: '1' }, 400],
      ['malformed percent-encoding', { method: 'GET', url: '/api/tables/orders/keys/%E0%A4%A', headers: admin }, 400],
      ['limit not a number', { method: 'GET', url: '/api/tables/orders/keys?limit=ten', headers: admin }, 400],
      ['limit out of range', { method: 'GET', url: '/api/tables/orders/keys?limit=0', headers: admin }, 400],
      ['repeated query parameter', { method: 'GET', url: '/api/tables/orders/keys?prefix=a&prefix=b', headers: admin }, 400],
      ['unknown query parameter', { method: 'GET', url: '/api/tables/orders/keys?sort=desc', headers: admin }, 400],
      ['compact with an unknown field', { method: 'POST', url: '/api/admin/compact', headers: json, payload: { force: true, now: 1 } }, 400],
      ['backup with a body', { method: 'POST', url: '/api/admin/backup/orders', headers: json, payload: { x: 1 } }, 400],
      ['history limit too large', { method: 'GET', url: '/api/admin/history?limit=5000', headers: admin }, 400],
      ['query parameter on a route that takes none', { method: 'GET', url: '/api/events?x=1', headers: admin }, 400],
      ['query parameter on a data route', { method: 'GET', url: '/api/tables/orders/keys/k?v=1', headers: admin }, 400],
      ['query parameter on health', { method: 'GET', url: '/api/admin/health?verbose=1', headers: admin }, 400],
      ['history limit given twice', { method: 'GET', url: '/api/admin/history?limit=1&limit=2', headers: admin }, 400],
      ['event ticket given twice', { method: 'GET', url: '/api/events?ticket=a&ticket=b' }, 400],
      // The routes that need no token take no query parameters either.
      ['query parameter on healthz', { method: 'GET', url: '/healthz?verbose=1' }, 400],
      ['query parameter on readyz', { method: 'GET', url: '/readyz?x=1&x=2' }, 400],
      ['query parameter on the OpenAPI document', { method: 'GET', url: '/api/openapi.json?v=2' }, 400],
      ['query parameter on the dashboard', { method: 'GET', url: '/?token=abc' }, 400],
      ['event ticket request with a field', { method: 'POST', url: '/api/events/ticket', headers: json, payload: { ttl: 600 } }, 400],
      ['event ticket request whose body is no object', { method: 'POST', url: '/api/events/ticket', headers: json, payload: '[]' }, 400],
    ];
    for (const [what, req, status] of cases) {
      const res = await app.inject(req);
      const body = res.json();
      expect({ what, status: res.statusCode, code: typeof body.error?.code, message: typeof body.error?.message }).toEqual({
        what,
        status,
        code: 'string',
        message: 'string',
      });
    }
    const k = await app.inject({ method: 'GET', url: '/api/tables/orders/keys/k', headers: admin });
    expect(k.json()).toEqual({ found: false });
    // A path segment over the parameter limit: 400, and the message does not quote the whole URL.
    const long = await app.inject({ method: 'GET', url: `/api/tables/${'t'.repeat(5000)}/keys/k`, headers: admin });
    expect(long.statusCode).toBe(400);
    expect(long.json().error.message.length).toBeLessThanOrEqual(303);
  });

  test('http - unknown tables and routes are 404', async () => {
    for (const url of ['/api/tables/nope/keys/k', '/api/tables/nope/keys', '/api/tables/nope/stats', '/api/tables/..%2Fevents/stats']) {
      const res = await app.inject({ method: 'GET', url, headers: admin });
      expect({ url, status: res.statusCode, body: res.json().error.code }).toEqual({ url, status: 404, body: 'not_found' });
    }
    const route = await app.inject({ method: 'GET', url: '/api/nothing-here', headers: admin });
    expect(route.statusCode).toBe(404);
    expect(route.json()).toEqual({ error: { code: 'not_found', message: 'no route GET /api/nothing-here' } });
    const method = await app.inject({ method: 'PATCH', url: '/api/tables/orders/keys/k', headers: admin });
    expect(method.statusCode).toBe(404);
  });

  test('http - 401 without a token, with a wrong one, and with the read token on admin routes; tokens never logged', async () => {
    const protectedRoutes: [string, string][] = [
      ['GET', '/api/admin/health'],
      ['GET', '/api/admin/history'],
      ['POST', '/api/admin/compact'],
      ['POST', '/api/admin/compact/orders'],
      ['POST', '/api/admin/backup'],
      ['POST', '/api/admin/backup/orders'],
      ['POST', '/api/admin/restore/orders'],
      ['POST', '/api/admin/clear/orders'],
      ['GET', '/api/tables/orders/keys/k'],
      ['PUT', '/api/tables/orders/keys/k'],
      ['DELETE', '/api/tables/orders/keys/k'],
      ['GET', '/api/tables/orders/keys'],
      ['GET', '/api/tables/orders/stats'],
      ['GET', '/api/events'],
      ['POST', '/api/events/ticket'],
      ['GET', '/metrics'],
    ];
    const readable = new Set(['/api/admin/health', '/api/admin/history', '/api/events', '/api/events/ticket', '/metrics']);
    for (const [method, url] of protectedRoutes) {
      for (const headers of [{}, { authorization: `Bearer ${WRONG}` }, { authorization: 'Basic dXNlcjpwYXNz' }, { authorization: `Bearer ${ADMIN_TOKEN}x` }]) {
        const res = await app.inject({ method: method as 'GET', url, headers });
        expect({ method, url, status: res.statusCode, auth: res.headers['www-authenticate'], code: res.json().error.code }).toEqual({
          method,
          url,
          status: 401,
          auth: 'Bearer realm="tablekeeper"',
          code: 'unauthorized',
        });
      }
      if (!readable.has(url)) {
        const res = await app.inject({ method: method as 'GET', url, headers: reader });
        expect({ url, status: res.statusCode }).toEqual({ url, status: 401 });
      }
    }
    for (const url of ['/api/admin/health', '/api/admin/history', '/metrics']) {
      expect((await app.inject({ method: 'GET', url, headers: reader })).statusCode).toBe(200);
    }
    // Public routes need no token.
    for (const url of ['/healthz', '/readyz', '/api/openapi.json', '/']) {
      expect((await app.inject({ method: 'GET', url })).statusCode).toBe(200);
    }
    const all = logs.text();
    expect(all).toContain('unauthorized request');
    for (const secret of [ADMIN_TOKEN, READ_TOKEN, WRONG, 'dXNlcjpwYXNz']) expect(all).not.toContain(secret);
    // Whatever logs a request's headers through the server's logger gets them redacted.
    app.log.info({ headers: { authorization: `Bearer ${WRONG}` } }, 'probe');
    expect(logs.text()).not.toContain(WRONG);
    expect(logs.text()).toContain('[redacted]');
  });

  test('http - admin routes: health, history, compact, backup, with the bus reply as the body', async () => {
    const health = await app.inject({ method: 'GET', url: '/api/admin/health', headers: admin });
    expect(health.statusCode).toBe(200);
    expect(health.json().tables.map((t: { table: string; state: string }) => [t.table, t.state])).toEqual([
      ['orders', 'serving'],
      ['events', 'serving'],
    ]);
    const backup = await app.inject({ method: 'POST', url: '/api/admin/backup/orders', headers: admin, remoteAddress: '127.0.0.11' });
    expect(backup.statusCode).toBe(200);
    expect(backup.json().results).toEqual([expect.objectContaining({ table: 'orders', status: 'ok' })]);
    const compact = await app.inject({ method: 'POST', url: '/api/admin/compact', headers: json, payload: { force: true }, remoteAddress: '127.0.0.12' });
    expect(compact.statusCode).toBe(200);
    expect(compact.json().results.map((r: { table: string }) => r.table)).toEqual(['orders', 'events']);
    const compactOne = await app.inject({ method: 'POST', url: '/api/admin/compact/events', headers: admin, remoteAddress: '127.0.0.12' });
    expect(compactOne.json().results).toEqual([expect.objectContaining({ table: 'events' })]);
    const backupAll = await app.inject({ method: 'POST', url: '/api/admin/backup', headers: admin, remoteAddress: '127.0.0.13' });
    expect(backupAll.json().results.map((r: { status: string }) => r.status)).toEqual(['ok', 'ok']);
    const history = await app.inject({ method: 'GET', url: '/api/admin/history?limit=2', headers: admin });
    expect(history.json().entries).toHaveLength(2);
    expect(history.json().entries[0]).toMatchObject({ kind: 'backup' });
    const restore = await app.inject({ method: 'POST', url: '/api/admin/restore/orders', headers: admin, remoteAddress: '127.0.0.14' });
    expect(restore.statusCode).toBe(200);
    expect(restore.json()).toMatchObject({ table: 'orders', mode: 'restore', status: 'restored', trigger: 'manual', verified: true });
    const clear = await app.inject({ method: 'POST', url: '/api/admin/clear/orders', headers: admin, remoteAddress: '127.0.0.14' });
    expect(clear.statusCode).toBe(200);
    expect(clear.json()).toEqual({ table: 'orders', cleared: null });
  });

  test('http - admin mutations past the burst get 429 with Retry-After', async () => {
    const post = () => app.inject({ method: 'POST', url: '/api/admin/backup/events', headers: admin, remoteAddress: '127.0.0.99' });
    expect((await post()).statusCode).toBe(200);
    expect((await post()).statusCode).toBe(200);
    const limited = await post();
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(limited.json().error.code).toBe('unavailable');
  });

  test('http - readiness and liveness', async () => {
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ ready: true, tables: 2 });
    const live = await app.inject({ method: 'GET', url: '/healthz' });
    expect(live.json()).toEqual({ status: 'ok', service: 'running' });
    // HEAD: the same status, no body.
    for (const url of ['/readyz', '/healthz']) {
      const head = await app.inject({ method: 'HEAD', url });
      expect([url, head.statusCode, head.body]).toEqual([url, 200, '']);
    }
  });

  test('http - metrics parse and report tables, events, HTTP requests and bus requests', async () => {
    await app.inject({ method: 'PUT', url: '/api/tables/events/keys/m', headers: json, payload: '1' });
    await app.inject({ method: 'GET', url: '/api/tables/nope/stats', headers: admin });
    await app.inject({ method: 'POST', url: '/api/admin/backup/events', headers: admin, remoteAddress: '127.0.0.21' });
    // Straight to the bus, as a NATS client would: two gets, one of them with no key.
    await service.bus.request('tables.events.get', encodeJson({ key: 'm' }));
    await service.bus.request('tables.events.get', encodeJson({ key: 'm' }));
    await service.bus.request('tables.events.get', encodeJson({}));
    const scrape = async () => {
      const res = await app.inject({ method: 'GET', url: '/metrics', headers: reader });
      expect(res.statusCode).toBe(200);
      return parsePrometheus(res.body);
    };
    // The backup's event reaches the metrics subscriber asynchronously.
    await until(async () => (sampleValue(await scrape(), 'tablekeeper_backups_total', { table: 'events', result: 'ok' }) ?? 0) >= 1, 'backup counted');
    const m = await scrape();
    expect(sampleValue(m, 'tablekeeper_up')).toBe(1);
    const stats = (await app.inject({ method: 'GET', url: '/api/tables/events/stats', headers: admin })).json();
    expect(sampleValue(m, 'tablekeeper_table_records', { table: 'events' })).toBe(stats.records);
    expect(sampleValue(m, 'tablekeeper_table_file_bytes', { table: 'events' })).toBe(stats.fileBytes);
    expect(sampleValue(m, 'tablekeeper_table_state', { table: 'orders', state: 'serving' })).toBe(1);
    expect(sampleValue(m, 'tablekeeper_table_state', { table: 'orders', state: 'opening' })).toBe(0);
    expect(sampleValue(m, 'tablekeeper_table_last_backup_age_seconds', { table: 'events' })).toBeGreaterThanOrEqual(0);
    expect(sampleValue(m, 'tablekeeper_table_backups', { table: 'events' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tablekeeper_http_operations_total', { operation: 'put' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tablekeeper_http_errors_total', { operation: 'stats', code: 'not_found' })).toBeGreaterThanOrEqual(1);
    expect(
      sampleValue(m, 'tablekeeper_http_request_duration_seconds_count', { method: 'PUT', route: '/api/tables/:table/keys/:key', status: '200' }),
    ).toBeGreaterThanOrEqual(1);
    // Bus-level requests per table, from the owners' micro-service endpoints.
    expect(sampleValue(m, 'tablekeeper_bus_table_requests', { table: 'events' })).toBeGreaterThanOrEqual(1);
    // ... and by operation and error code, however they came (HTTP or the bus).
    expect(sampleValue(m, 'tablekeeper_table_operation_requests', { table: 'events', operation: 'put' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tablekeeper_table_operation_requests', { table: 'events', operation: 'get' })).toBeGreaterThanOrEqual(2);
    expect(sampleValue(m, 'tablekeeper_table_operation_errors', { table: 'events', code: 'bad_request' })).toBeGreaterThanOrEqual(1);
    // The second get of 'm' came from the read cache; the figures are those of `stats`.
    expect(stats.readCache.hits).toBeGreaterThanOrEqual(1);
    expect(sampleValue(m, 'tablekeeper_table_read_cache_reads', { table: 'events', result: 'hit' })).toBe(stats.readCache.hits);
    expect(sampleValue(m, 'tablekeeper_table_read_cache_reads', { table: 'events', result: 'miss' })).toBe(stats.readCache.misses);
    expect(sampleValue(m, 'tablekeeper_table_read_cache_bytes', { table: 'events' })).toBe(stats.readCache.bytes);
    // No raw URL ever becomes a label.
    expect(m.some((x) => Object.values(x.labels).some((v) => v.includes('/nope/')))).toBe(false);
  });

  test('http - the OpenAPI document lists exactly the registered routes', async () => {
    const res = await app.inject({ method: 'GET', url: '/api/openapi.json' });
    const doc = JSON.parse(res.body);
    expect(doc).toEqual(JSON.parse(JSON.stringify(OPENAPI_DOCUMENT)));
    expect(doc.openapi).toBe('3.1.0');
    expect(typeof doc.info.title).toBe('string');
    expect(typeof doc.info.version).toBe('string');
    const methods = new Set(['get', 'head', 'put', 'post', 'delete', 'patch']);
    const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, item]) => Object.keys(item).filter((m) => methods.has(m)).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    const registered = routesOf(app)
      .map((r) => `${r.method} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`)
      .sort();
    expect(registered.length).toBeGreaterThan(15);
    expect(documented).toEqual(registered);
    // Every operation answers something and has a summary.
    for (const item of Object.values(doc.paths as Record<string, Record<string, { summary?: string; responses?: object }>>)) {
      for (const [m, op] of Object.entries(item)) if (methods.has(m)) expect(op.summary && op.responses).toBeTruthy();
    }
  });

  test('http - the dashboard is one self-contained page whose script the CSP allows by hash', async () => {
    const res = await app.inject({ method: 'GET', url: '/' });
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    const html = res.body;
    expect(html).toContain('EventSource');
    expect(html).toContain('sessionStorage');
    expect(html).toContain('/api/admin/health');
    // The history is loaded with the page, not only what streams in while it is open.
    expect(html).toContain('/api/admin/history?limit=');
    expect(html).toContain('id="history"');
    expect(html).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
    const script = /<script>([\s\S]*)<\/script>/.exec(html)![1];
    const hash = createHash('sha256').update(script).digest('base64');
    expect(String(res.headers['content-security-policy'])).toContain(`script-src 'sha256-${hash}'`);
    expect(String(res.headers['content-security-policy'])).toContain("default-src 'none'");
    // The script parses.
    expect(() => new Function(script)).not.toThrow();
  });

  test('http - over a real port: data, events as SSE (header or one-time ticket), unsubscribed when the client leaves', async () => {
    expect(service.httpUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const base = service.httpUrl;
    const put = await request(`${base}/api/tables/orders/keys/over-tcp`, { method: 'PUT', headers: json, body: '{"tcp":true}' });
    expect(put.statusCode).toBe(200);
    expect(await put.body.json()).toEqual({ ok: true });
    const get = await request(`${base}/api/tables/orders/keys/over-tcp`, { headers: admin });
    expect(await get.body.json()).toEqual({ found: true, value: { tcp: true } });
    // `.` and `..` as keys, and `..` as a table name, over a raw path.
    expect(await rawRequest(base, 'PUT', '/api/tables/orders/keys/..', '"dots"')).toEqual({ status: 200, body: '{"ok":true}' });
    expect(await rawRequest(base, 'GET', '/api/tables/orders/keys/%2e%2e')).toEqual({ status: 200, body: '{"found":true,"value":"dots"}' });
    expect((await rawRequest(base, 'GET', '/api/tables/orders/keys/.')).body).toBe('{"found":false}');
    const up = await rawRequest(base, 'GET', '/api/tables/../keys/x');
    expect(up.status).toBe(404);
    expect(JSON.parse(up.body).error.code).toBe('not_found');
    expect((await rawRequest(base, 'GET', '/api/tables/orders/../../admin/health')).status).toBe(404);

    const denied = await request(`${base}/api/admin/health`);
    expect(denied.statusCode).toBe(401);
    await denied.body.dump();

    const streams = async () =>
      sampleValue(parsePrometheus((await app.inject({ method: 'GET', url: '/metrics', headers: admin })).body), 'tablekeeper_http_event_streams');

    // A stream opened with the read token.
    const abort = new AbortController();
    const sse = await request(`${base}/api/events`, { headers: reader, signal: abort.signal });
    expect(sse.statusCode).toBe(200);
    expect(sse.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    let text = '';
    const reader1 = (async () => {
      for await (const chunk of sse.body) text += chunk.toString();
    })().catch(() => undefined);
    await until(() => text.includes(': connected'), 'the stream to open');
    service.bus.publish('backups.backup_complete', encodeJson({ event: 'backup_complete', at: '2030-01-01T00:00:00.000Z', tables: [] }));
    await until(() => text.includes('event: backup_complete'), 'the event');
    expect(text).toContain('event: backup_complete\ndata: {"event":"backup_complete","at":"2030-01-01T00:00:00.000Z","tables":[]}\n\n');
    // A real backup's event arrives too.
    await app.inject({ method: 'POST', url: '/api/admin/backup/orders', headers: admin, remoteAddress: '127.0.0.31' });
    await until(() => /event: backup_complete\ndata: \{"event":"backup_complete","at":"[^"]+","trigger":"manual"/.test(text), 'the backup event');
    expect(await streams()).toBe(1);
    abort.abort();
    await reader1;
    await until(async () => (await streams()) === 0, 'the stream to be closed on the server');

    // With a one-time ticket, as the dashboard's EventSource does.
    const ticketRes = await request(`${base}/api/events/ticket`, { method: 'POST', headers: reader });
    const { ticket } = (await ticketRes.body.json()) as { ticket: string };
    const abort2 = new AbortController();
    const viaTicket = await request(`${base}/api/events?ticket=${encodeURIComponent(ticket)}`, { signal: abort2.signal });
    expect(viaTicket.statusCode).toBe(200);
    abort2.abort();
    await viaTicket.body.dump().catch(() => undefined);
    const reused = await request(`${base}/api/events?ticket=${encodeURIComponent(ticket)}`);
    expect(reused.statusCode).toBe(401);
    // It names the ticket, not a bearer token the client never sent.
    expect(await reused.body.json()).toEqual({ error: { code: 'unauthorized', message: expect.stringMatching(/^the ticket is not valid/) } });
    await until(async () => (await streams()) === 0, 'the ticket stream to be closed');
    expect(logs.text()).not.toContain(ticket);
  });
});
