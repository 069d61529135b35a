/**
 * The service's own HTTP server over its real port (undici, no `inject`):
 * every registered route at least once, and what clients see during a real
 * recovery of one table, held at a chosen step through the file-access seam.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import { tableFilePath } from '../../actors/table-owner';
import { startService, type RunningService } from '../../cli/serve';
import { routesOf } from '../../http';
import { NodeStoreFs, scanFile, type OpenMode } from '../../store';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { ADMIN_TOKEN, captureLogger, parsePrometheus, READ_TOKEN, sampleValue, testConfig, until } from './http-helpers';

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const reader = { authorization: `Bearer ${READ_TOKEN}` };
const json = { ...admin, 'content-type': 'application/json' };
const PUSH_SUBSCRIPTION = {
  endpoint: 'https://push.example.test/send/abc123',
  expirationTime: null,
  keys: { p256dh: 'BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM', auth: 'tBHItJI5svbpez7KI4CCXg' },
};

/** The real disk, except that the next open of one chosen file waits until the test releases it. */
class HeldOpenFs extends NodeStoreFs {
  private held: { file: string; reached: () => void; released: Promise<void> } | undefined;

  /** Holds the next open of `file`; `reached` resolves once that open is waiting. */
  hold(file: string): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const reachedP = new Promise<void>((resolve) => (reached = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.held = { file, reached, released };
    return { reached: reachedP, release };
  }

  override async open(file: string, mode: OpenMode): Promise<number> {
    const held = this.held;
    if (held !== undefined && file === held.file) {
      this.held = undefined;
      held.reached();
      await held.released;
    }
    return super.open(file, mode);
  }
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => any;
}

let dir: string;
let service: RunningService;
let base: string;
const files = new HeldOpenFs();

async function call(method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE', path: string, headers: Record<string, string> = admin, body?: string): Promise<Answer> {
  const res = await request(`${base}${path}`, { method, headers, body });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
}

beforeAll(async () => {
  dir = makeTempDir('tk-http-port-');
  service = await startService(testConfig(dir, { rateLimit: { burst: 100, perMinute: 100 } }), captureLogger('warn').logger, { fs: files });
  base = service.httpUrl;
});

afterAll(async () => {
  await service?.stop();
  removeTempDir(dir);
});

describe('http over the service\'s real port', () => {
  test('http - every registered route answers over the real port', async () => {
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    // In order: data first, so that backups, restore and history have something to work on.
    const cases: [route: string, run: () => Promise<void>][] = [
      ['GET /healthz', async () => {
        const a = await call('GET', '/healthz', {});
        expect([a.status, a.json()]).toEqual([200, { status: 'ok', service: 'running' }]);
      }],
      ['GET /readyz', async () => {
        const a = await call('GET', '/readyz', {});
        expect([a.status, a.json()]).toEqual([200, { ready: true, tables: 2 }]);
      }],
      ['HEAD /healthz', async () => {
        const a = await call('HEAD', '/healthz', {});
        expect([a.status, a.text]).toEqual([200, '']);
      }],
      ['HEAD /readyz', async () => {
        const a = await call('HEAD', '/readyz', {});
        expect([a.status, a.text]).toEqual([200, '']);
      }],
      ['PUT /api/tables/:table/keys/:key', async () => {
        const a = await call('PUT', '/api/tables/orders/keys/a%2Fb', json, '{"n":1}');
        expect([a.status, a.json()]).toEqual([200, { ok: true }]);
        expect((await call('PUT', '/api/tables/orders/keys/gone', json, '2')).status).toBe(200);
      }],
      ['GET /api/tables/:table/keys/:key', async () => {
        const a = await call('GET', '/api/tables/orders/keys/a%2Fb');
        expect([a.status, a.json()]).toEqual([200, { found: true, value: { n: 1 } }]);
      }],
      ['DELETE /api/tables/:table/keys/:key', async () => {
        const a = await call('DELETE', '/api/tables/orders/keys/gone');
        expect([a.status, a.json()]).toEqual([200, { deleted: true }]);
      }],
      ['GET /api/tables/:table/keys', async () => {
        const a = await call('GET', '/api/tables/orders/keys?prefix=a&limit=10');
        expect([a.status, a.json()]).toEqual([200, { items: [{ key: 'a/b', value: { n: 1 } }] }]);
      }],
      ['GET /api/tables/:table/stats', async () => {
        const a = await call('GET', '/api/tables/orders/stats');
        expect(a.status).toBe(200);
        expect(a.json()).toMatchObject({ records: 1 });
      }],
      ['POST /api/admin/backup', async () => {
        const a = await call('POST', '/api/admin/backup');
        expect(a.status).toBe(200);
        expect(a.json().results.map((r: { table: string; status: string }) => [r.table, r.status])).toEqual([['orders', 'ok'], ['events', 'ok']]);
      }],
      ['POST /api/admin/backup/:table', async () => {
        const a = await call('POST', '/api/admin/backup/orders', json, '{}');
        expect(a.status).toBe(200);
        expect(a.json().results).toEqual([expect.objectContaining({ table: 'orders', status: 'ok' })]);
      }],
      ['POST /api/admin/compact', async () => {
        const a = await call('POST', '/api/admin/compact', json, '{"force":true}');
        expect(a.status).toBe(200);
        expect(a.json().results.map((r: { table: string }) => r.table)).toEqual(['orders', 'events']);
      }],
      ['POST /api/admin/compact/:table', async () => {
        const a = await call('POST', '/api/admin/compact/events');
        expect(a.status).toBe(200);
        expect(a.json().results).toEqual([expect.objectContaining({ table: 'events' })]);
      }],
      ['POST /api/admin/restore/:table', async () => {
        const a = await call('POST', '/api/admin/restore/orders');
        expect(a.status).toBe(200);
        expect(a.json()).toMatchObject({ table: 'orders', mode: 'restore', status: 'restored' });
        expect((await call('GET', '/api/tables/orders/keys/a%2Fb')).json()).toEqual({ found: true, value: { n: 1 } });
      }],
      ['POST /api/admin/clear/:table', async () => {
        const a = await call('POST', '/api/admin/clear/orders');
        expect([a.status, a.json()]).toEqual([200, { table: 'orders', cleared: null }]);
      }],
      ['GET /api/admin/health', async () => {
        const a = await call('GET', '/api/admin/health', reader);
        expect(a.status).toBe(200);
        expect(a.json().tables.map((t: { table: string; state: string }) => [t.table, t.state])).toEqual([['orders', 'serving'], ['events', 'serving']]);
      }],
      ['GET /api/admin/history', async () => {
        const a = await call('GET', '/api/admin/history?limit=3', reader);
        expect(a.status).toBe(200);
        expect(a.json().entries).toHaveLength(3);
        expect(a.json().entries[0]).toMatchObject({ kind: 'recovery', table: 'orders', result: 'ok' });
      }],
      ['GET /metrics', async () => {
        const a = await call('GET', '/metrics', reader);
        expect(a.status).toBe(200);
        expect(a.headers['content-type']).toMatch(/^text\/plain/);
        const m = parsePrometheus(a.text);
        expect(sampleValue(m, 'tablekeeper_up')).toBe(1);
        expect(sampleValue(m, 'tablekeeper_table_records', { table: 'orders' })).toBe(1);
      }],
      ['GET /api/openapi.json', async () => {
        const a = await call('GET', '/api/openapi.json', {});
        expect(a.status).toBe(200);
        expect(a.json().openapi).toBe('3.1.0');
      }],
      ['GET /', async () => {
        const a = await call('GET', '/', {});
        expect(a.status).toBe(200);
        expect(a.headers['content-type']).toBe('text/html; charset=utf-8');
        expect(String(a.headers['content-security-policy'])).toContain("default-src 'none'");
        expect(a.text).toContain('<h1>Tablekeeper</h1>');
      }],
      ['POST /api/events/ticket', async () => {
        const a = await call('POST', '/api/events/ticket', reader);
        expect(a.status).toBe(200);
        expect(typeof a.json().ticket).toBe('string');
      }],
      ['GET /api/events', async () => {
        const { ticket } = (await call('POST', '/api/events/ticket', reader)).json() as { ticket: string };
        const abort = new AbortController();
        const res = await request(`${base}/api/events?ticket=${encodeURIComponent(ticket)}`, { signal: abort.signal });
        expect(res.statusCode).toBe(200);
        expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
        let text = '';
        const reading = (async () => {
          for await (const chunk of res.body) text += chunk.toString();
        })().catch(() => undefined);
        await until(() => text.includes(': connected'), 'the stream to open');
        expect((await call('POST', '/api/admin/backup/events')).status).toBe(200);
        await until(() => text.includes('event: backup_complete'), 'the backup event on the stream');
        abort.abort();
        await reading;
      }],
      ['GET /push-worker.js', async () => {
        const a = await call('GET', '/push-worker.js', {});
        expect(a.status).toBe(200);
        expect(a.headers['content-type']).toMatch(/javascript/);
        expect(a.text).toContain("addEventListener('push'");
      }],
      ['GET /api/push/key', async () => {
        const a = await call('GET', '/api/push/key', reader);
        expect(a.status).toBe(200);
        expect(a.json().publicKey).toMatch(/^[A-Za-z0-9_-]{80,}$/);
      }],
      // Subscribed and at once unsubscribed again: nothing may ever be pushed to a host off this machine.
      ['POST /api/push/subscribe', async () => {
        const a = await call('POST', '/api/push/subscribe', json, JSON.stringify(PUSH_SUBSCRIPTION));
        expect([a.status, a.json()]).toEqual([200, { subscribed: true, created: true }]);
      }],
      ['POST /api/push/unsubscribe', async () => {
        const a = await call('POST', '/api/push/unsubscribe', json, JSON.stringify({ endpoint: PUSH_SUBSCRIPTION.endpoint }));
        expect([a.status, a.json()]).toEqual([200, { removed: true }]);
      }],
    ];
    const registered = routesOf(service.http).map((r) => `${r.method} ${r.url}`);
    // Every route the server registered has a case here, and every case names a registered route.
    expect(cases.map(([route]) => route).sort()).toEqual([...registered].sort());
    for (const [route, run] of cases) {
      try {
        await run();
      } catch (err) {
        throw new Error(`${route}: ${(err as Error).message}`, { cause: err });
      }
    }
  });

  test('http - requests the HTTP parser rejects get the error shape too, and the connection is closed', async () => {
    const { port } = new URL(base);
    const raw = (bytes: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.end(bytes));
        let got = '';
        socket.setEncoding('latin1');
        socket.on('data', (d: string) => (got += d));
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });
    const answers = [
      ['garbage request line', 'NOT HTTP AT ALL\r\n\r\n', 400],
      ['bad header line', 'GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n', 400],
      ['bad chunk size', 'PUT /api/tables/orders/keys/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
      ['both lengths', 'PUT /api/tables/orders/keys/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
      ['headers too large', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`, 431],
    ] as const;
    for (const [what, bytes, status] of answers) {
      const text = await raw(bytes);
      const [head, body] = text.split('\r\n\r\n');
      expect([what, head.split('\r\n')[0]]).toEqual([what, expect.stringMatching(new RegExp(`^HTTP/1\\.1 ${status} `))]);
      expect(head).toMatch(/content-type: application\/json/i);
      expect([what, JSON.parse(body)]).toEqual([what, { error: { code: 'bad_request', message: expect.any(String) } }]);
    }
    // The service still serves.
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  test('http - an event stream client that stops reading is disconnected, not left holding its socket', async () => {
    const { port } = new URL(base);
    const accepted = new Promise<Socket>((resolve) => service.http.server.once('connection', resolve));
    const socket = connect(Number(port), '127.0.0.1');
    socket.on('error', () => undefined);
    try {
      const serverSide = await accepted;
      const first = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
      socket.write(`GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${READ_TOKEN}\r\n\r\n`);
      expect((await first).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
      socket.pause(); // reads nothing more
      const pad = 'x'.repeat(64 * 1024);
      // Past the stream's buffer limit (once the kernel's buffers are full too) the server lets go of the socket.
      for (let i = 0; i < 2000 && !serverSide.destroyed; i++) {
        service.bus.publish('backups.backup_failed', Buffer.from(JSON.stringify({ event: 'backup_failed', at: new Date().toISOString(), table: 'orders', pad, i })));
        await new Promise((r) => setImmediate(r));
      }
      expect(serverSide.destroyed).toBe(true);
    } finally {
      socket.destroy();
    }
  });

  test('http - during a real recovery the table answers 503 with Retry-After and /readyz is not ready, while the other table serves', async () => {
    expect((await call('PUT', '/api/tables/orders/keys/victim', json, '"precious"')).status).toBe(200);
    expect((await call('POST', '/api/admin/backup/orders')).status).toBe(200);
    // Damage the value of the newest record of `victim` on disk, as a disk fault would.
    const file = tableFilePath(service.config.dataDir, 'orders');
    let victim: { offset: number; length: number } | undefined;
    for await (const item of scanFile(file)) if (item.type === 'record' && item.key === 'victim') victim = item;
    if (victim === undefined) throw new Error('no record of victim');
    const fd = openSync(file, 'r+');
    try {
      writeSync(fd, Buffer.from('#'), 0, 1, victim.offset + victim.length - 3);
    } finally {
      closeSync(fd);
    }
    // The recovery's last step restarts the owner, which opens the rebuilt file: held there.
    const held = files.hold(file);

    const damaged = await call('GET', '/api/tables/orders/keys/victim');
    expect(damaged.status).toBe(503);
    expect(damaged.headers['retry-after']).toBe('1');
    expect(['corrupt', 'unavailable']).toContain(damaged.json().error.code);
    await held.reached;
    try {
      const read = await call('GET', '/api/tables/orders/keys/victim');
      expect([read.status, read.headers['retry-after'], read.json().error.code]).toEqual([503, '1', 'unavailable']);
      const write = await call('PUT', '/api/tables/orders/keys/other', json, '1');
      expect([write.status, write.headers['retry-after']]).toEqual([503, '1']);
      const ready = await call('GET', '/readyz', {});
      expect(ready.status).toBe(503);
      expect(ready.headers['retry-after']).toBe('1');
      expect(ready.json()).toMatchObject({ ready: false, tables: [{ table: 'orders', state: 'recovering' }] });
      const health = (await call('GET', '/api/admin/health', reader)).json();
      expect(health.tables.map((t: { table: string; state: string }) => [t.table, t.state])).toEqual([['orders', 'recovering'], ['events', 'serving']]);
      // The other table keeps serving meanwhile.
      expect((await call('PUT', '/api/tables/events/keys/during', json, '"yes"')).status).toBe(200);
      expect((await call('GET', '/api/tables/events/keys/during')).json()).toEqual({ found: true, value: 'yes' });
      const m = parsePrometheus((await call('GET', '/metrics', reader)).text);
      expect(sampleValue(m, 'tablekeeper_table_state', { table: 'orders', state: 'recovering' })).toBe(1);
      expect(sampleValue(m, 'tablekeeper_table_state', { table: 'events', state: 'serving' })).toBe(1);
    } finally {
      held.release();
    }
    await until(async () => (await call('GET', '/readyz', {})).status === 200, 'the table to be recovered');
    // Recovered from the backup: the acknowledged value is back.
    expect((await call('GET', '/api/tables/orders/keys/victim')).json()).toEqual({ found: true, value: 'precious' });
    // The run is recorded once the table serves again: wait for the entry rather than assume it is there yet.
    const newest = async () => (await call('GET', '/api/admin/history?limit=1', reader)).json().entries[0];
    await until(async () => (await newest())?.kind === 'recovery', 'the recovery in the history');
    expect(await newest()).toMatchObject({ kind: 'recovery', table: 'orders', result: 'ok', trigger: 'auto' });
  });
});
