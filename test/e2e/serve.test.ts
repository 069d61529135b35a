import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect } from '@nats-io/transport-node';

type NatsConnection = Awaited<ReturnType<typeof connect>>;
import { startNatsServer, type NatsServer as NatsServerHandle } from '../helpers/nats-server';
import { repeatedFields } from '../helpers/log-fields';

const ROOT = path.resolve(__dirname, '..', '..');
const MAIN = path.join(ROOT, 'dist', 'cli', 'main.js');
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Starts `tablekeeper serve` as a child process and waits until it logs that it started. */
function startServe(env: Record<string, string>): Promise<{ child: ChildProcess; logs: string[] }> {
  const child = spawn(process.execPath, [MAIN, 'serve'], {
    env: { PATH: process.env.PATH ?? '', TABLEKEEPER_HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        if (line.includes('"tablekeeper started"')) resolve({ child, logs });
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => logs.push(chunk.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited early with ${code}: ${logs.join('\n')}`)));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

describe('serve over NATS (end to end)', () => {
  let nats: NatsServerHandle;
  let dir: string;
  let serve: ChildProcess | undefined;
  let nc: NatsConnection;
  let logs: string[];

  beforeAll(async () => {
    nats = await startNatsServer();
    dir = mkdtempSync(path.join(os.tmpdir(), 'tk-e2e-'));
    const configFile = path.join(dir, 'config.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        tables: [{ name: 'orders', maxValueBytes: 4096 }, { name: 'events', sync: 'none' }],
      }),
    );
    const started = await startServe({
      NATS_URL: nats.url,
      TABLEKEEPER_CONFIG: configFile,
      TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
    });
    serve = started.child;
    logs = started.logs;
    nc = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await nc?.close();
    if (serve && serve.exitCode === null) {
      serve.kill('SIGKILL');
      await exited(serve);
    }
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function req(subject: string, body: unknown | Uint8Array) {
    const data = body instanceof Uint8Array ? body : enc.encode(JSON.stringify(body));
    const msg = await nc.request(subject, data, { timeout: 5000 });
    return { body: JSON.parse(dec.decode(msg.data)), headers: msg.headers };
  }

  test('serve - put, get, select, delete and stats round trip', async () => {
    expect((await req('tables.orders.put', { key: 'o-1', value: { qty: 2, note: 'first' } })).body).toEqual({ ok: true });
    expect((await req('tables.orders.put', { key: 'o-2', value: [1, 'two', null] })).body).toEqual({ ok: true });
    expect((await req('tables.orders.put', { key: 'p-1', value: null })).body).toEqual({ ok: true });
    expect((await req('tables.orders.get', { key: 'o-1' })).body).toEqual({ found: true, value: { qty: 2, note: 'first' } });
    expect((await req('tables.orders.get', { key: 'p-1' })).body).toEqual({ found: true, value: null });
    expect((await req('tables.orders.get', { key: 'nope' })).body).toEqual({ found: false });

    const page1 = (await req('tables.orders.select', { prefix: 'o-', limit: 1 })).body;
    expect(page1).toEqual({ items: [{ key: 'o-1', value: { qty: 2, note: 'first' } }], next: 'o-1' });
    const page2 = (await req('tables.orders.select', { prefix: 'o-', after: page1.next, limit: 1 })).body;
    expect(page2).toEqual({ items: [{ key: 'o-2', value: [1, 'two', null] }] });

    expect((await req('tables.orders.delete', { key: 'o-1' })).body).toEqual({ deleted: true });
    expect((await req('tables.orders.delete', { key: 'o-1' })).body).toEqual({ deleted: false });
    expect((await req('tables.orders.get', { key: 'o-1' })).body).toEqual({ found: false });

    const stats = (await req('tables.orders.stats', {})).body;
    expect(stats).toMatchObject({ table: 'orders', state: 'serving', records: 2, generation: 1 });
    expect(stats.fileBytes).toBe(stats.liveBytes + stats.deadBytes + 16);
    expect(stats.deadBytes).toBeGreaterThan(0);
  });

  test('serve - every kind of bad input is answered and harms nothing', async () => {
    await req('tables.orders.put', { key: 'keep', value: 'intact' });
    const cases: [string, unknown | Uint8Array, string, string][] = [
      ['tables.orders.get', enc.encode('{not json'), 'bad_request', '400'],
      ['tables.orders.get', {}, 'bad_request', '400'],
      ['tables.orders.get', { key: 42 }, 'bad_request', '400'],
      ['tables.orders.get', { key: '' }, 'bad_request', '400'],
      ['tables.orders.put', { key: 'keep' }, 'bad_request', '400'],
      ['tables.orders.put', { value: 'no key' }, 'bad_request', '400'],
      ['tables.orders.put', {}, 'bad_request', '400'],
      ['tables.orders.put', { key: 42, value: 1 }, 'bad_request', '400'],
      ['tables.orders.put', { key: null, value: 1 }, 'bad_request', '400'],
      ['tables.orders.delete', { key: 42 }, 'bad_request', '400'],
      ['tables.orders.delete', { key: ['keep'] }, 'bad_request', '400'],
      ['tables.orders.delete', { key: 'k'.repeat(1025) }, 'bad_request', '400'],
      ['tables.orders.get', { key: 'k'.repeat(1025) }, 'bad_request', '400'],
      ['tables.orders.select', { after: 42 }, 'bad_request', '400'],
      ['tables.orders.select', { prefix: 7 }, 'bad_request', '400'],
      ['tables.orders.select', { prefix: { starts: 'o' } }, 'bad_request', '400'],
      ['tables.orders.select', { limit: -1 }, 'bad_request', '400'],
      ['tables.orders.select', { limit: 1e9 }, 'bad_request', '400'],
      ['tables.orders.select', { limit: 2.5 }, 'bad_request', '400'],
      ['tables.orders.select', { limit: '10' }, 'bad_request', '400'],
      ['tables.orders.put', { key: 'keep', value: 'x'.repeat(5000) }, 'bad_request', '413'],
      ['tables.orders.put', { key: 'k'.repeat(1025), value: 1 }, 'bad_request', '400'],
      ['tables.orders.put', { key: 'keep', value: 1, extra: true }, 'bad_request', '400'],
      ['tables.orders.select', { limit: 0 }, 'bad_request', '400'],
      ['tables.orders.frobnicate', {}, 'bad_request', '400'],
      ['tables.orders', { key: 'keep' }, 'bad_request', '400'],
      ['tables.orders.get.extra', { key: 'keep' }, 'bad_request', '400'],
      ['tables.nosuch.get', { key: 'a' }, 'not_found', '404'],
      ['tables.nosuch', { key: 'a' }, 'not_found', '404'],
    ];
    for (const [subject, body, code, status] of cases) {
      const { body: reply, headers } = await req(subject, body);
      expect({ subject, code: reply.error?.code }).toEqual({ subject, code });
      expect(typeof reply.error.message).toBe('string');
      expect(headers?.get('Nats-Service-Error-Code')).toBe(status);
      expect(headers?.get('Nats-Service-Error')).toBe(reply.error.message);
    }
    expect((await req('tables.orders.get', { key: 'keep' })).body).toEqual({ found: true, value: 'intact' });
    expect((await req('tables.orders.put', { key: 'after', value: 2 })).body).toEqual({ ok: true });
    expect((await req('tables.orders.get', { key: 'after' })).body).toEqual({ found: true, value: 2 });
    expect(serve!.exitCode).toBeNull();
  });

  test('serve - $SRV.INFO lists one endpoint per configured table', async () => {
    const info = (await req('$SRV.INFO.tablekeeper', new Uint8Array())).body;
    expect(info).toMatchObject({ type: 'io.nats.micro.v1.info_response', name: 'tablekeeper' });
    expect(info.endpoints.filter((e: { subject: string }) => e.subject.startsWith('tables.')).sort((a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name))).toEqual([
      { name: 'events', subject: 'tables.events.>', queue_group: 'q' },
      { name: 'orders', subject: 'tables.orders.>', queue_group: 'q' },
    ]);
  });

  test('serve - answers NATS micro-service discovery as tablekeeper', async () => {
    const ping = (await req('$SRV.PING.tablekeeper', new Uint8Array())).body;
    expect(ping).toMatchObject({ type: 'io.nats.micro.v1.ping_response', name: 'tablekeeper' });
    const stats = (await req('$SRV.STATS.tablekeeper', new Uint8Array())).body;
    expect(stats.type).toBe('io.nats.micro.v1.stats_response');
    const orders = stats.endpoints.find((e: { name: string }) => e.name === 'orders');
    expect(orders.num_requests).toBeGreaterThan(10);
    expect(orders.num_errors).toBeGreaterThan(5);
  });

  test('serve - SIGTERM flushes, closes every table and exits 0; data survives a restart', async () => {
    await req('tables.events.put', { key: 'e-1', value: 'unsynced policy, flushed on shutdown' });
    serve!.kill('SIGTERM');
    expect(await exited(serve!)).toBe(0);
    expect(logs.some((l) => l.includes('"tablekeeper stopped"'))).toBe(true);
    // Every line is one JSON object that names each field once.
    expect(repeatedFields(logs)).toEqual([]);
    expect(logs.filter((l) => l.includes('"table serving"')).map((l) => (JSON.parse(l) as { table: string }).table).sort()).toEqual(['events', 'orders']);

    const again = await startServe({
      NATS_URL: nats.url,
      TABLEKEEPER_CONFIG: path.join(dir, 'config.json'),
      TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
    });
    serve = again.child;
    expect((await req('tables.events.get', { key: 'e-1' })).body).toEqual({
      found: true,
      value: 'unsynced policy, flushed on shutdown',
    });
    expect((await req('tables.orders.get', { key: 'o-2' })).body).toEqual({ found: true, value: [1, 'two', null] });
    serve.kill('SIGINT');
    expect(await exited(serve)).toBe(0);
  });
});

describe('serve - configuration errors', () => {
  test('serve - an invalid config file stops the service with a readable message and exit code 2', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tk-e2e-cfg-'));
    try {
      const configFile = path.join(dir, 'config.json');
      writeFileSync(configFile, JSON.stringify({ tables: [{ name: 'ok', sink: 'always' }] }));
      const child = spawn(process.execPath, [MAIN, 'serve'], {
        env: { PATH: process.env.PATH ?? '', TABLEKEEPER_CONFIG: configFile, TABLEKEEPER_DATA_DIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      expect(await exited(child)).toBe(2);
      expect(stderr).toMatch(/\/tables\/0: unknown key 'sink'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
