/**
 * The operator commands over HTTP: a real service (embedded bus, temporary
 * directory) behind the real HTTP API (http/), on 127.0.0.1 and a free port.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { requestJson } from '../../bus';
import { startService, type RunningService } from '../../cli/serve';
import { createHttpServer, listenHttp } from '../../http';
import type { Config } from '../../supervisor/config';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { closedPort, runCli, smallConfig } from './remote-helpers';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });
const TOKEN = 'test-admin-token';
// The tests talk to an HTTP API of their own (below), configured with the same token.
const SERVICE_ENV = { TABLEKEEPER_ADMIN_TOKEN: TOKEN };

/** What a test's HTTP API received, and how to stop it. */
interface Api {
  url: string;
  /** `METHOD /path` of each request, in arrival order. */
  requests: string[];
  close(): Promise<void>;
}

/** The HTTP API over `service`'s bus; `onRequest` sees each request as it arrives. */
async function startApi(service: RunningService, config: Config, onRequest: (line: string) => void = () => undefined): Promise<Api> {
  const app = createHttpServer({ config, bus: service.bus, logger: silent, adminToken: TOKEN });
  const requests: string[] = [];
  app.addHook('onRequest', async (req) => {
    const line = `${req.method} ${req.url}`;
    requests.push(line);
    onRequest(line);
  });
  const url = await listenHttp(app, { ...config.http, host: '127.0.0.1', port: 0 });
  return { url, requests, close: () => app.close() };
}

describe('cli remote - over HTTP', () => {
  let dir: string;
  let service: RunningService;
  let stub: Api;
  // Everything the API received and the CLI wrote, in order.
  let timeline: string[];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    dir = makeTempDir('tk-cli-http-');
    // No rate limit to speak of here; it has a test of its own.
    const config = smallConfig(dir, SERVICE_ENV);
    config.http = { ...config.http, rateLimit: { burst: 1000, perMinute: 600_000 } };
    service = await startService(config, silent);
    stub = await startApi(service, config, (line) => timeline.push(`req:${line}`));
  });

  beforeEach(() => {
    timeline = [];
    // Only what a test gives: nothing from the machine's environment.
    env = { TABLEKEEPER_URL: stub.url, TABLEKEEPER_ADMIN_TOKEN: TOKEN, TABLEKEEPER_DATA_DIR: path.join(dir, 'data') };
  });

  afterAll(async () => {
    await stub?.close();
    await service?.stop();
    if (dir) removeTempDir(dir);
  });

  test('cli remote - status prints a table of every table and exits 0', async () => {
    const run = await runCli('status', [], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^service ok: 2 tables \(next backup .*, next compaction .*\)$/);
    expect(lines[2]).toMatch(/^TABLE\s+STATE\s+RECORDS\s+SIZE\s+FRAG\s+BACKUPS\s+LAST BACKUP\s+LAST COMPACTION$/);
    expect(lines[3]).toMatch(/^orders\s+serving\s+\d+\s/);
    expect(lines[4]).toMatch(/^events\s+serving\s+\d+\s/);
  });

  test('cli remote - status --json prints the health reply as one document', async () => {
    const run = await runCli('status', ['--json'], env);
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.status).toBe('ok');
    expect(doc.tables.map((t: { table: string }) => t.table)).toEqual(['orders', 'events']);
    expect(doc.tables[0]).toEqual(expect.objectContaining({ state: 'serving', stats: expect.objectContaining({ table: 'orders' }) }));
  });

  test('cli remote - backup without a table runs one request per table and prints each line as it finishes', async () => {
    const log = timeline;
    const run = await runCli('backup', [], env, log);
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^orders  ok      \d+(\.\d)? (B|KiB), \d+ records, orders-\S+ in \d+ ms$/);
    expect(lines[1]).toMatch(/^events  ok      /);
    expect(lines[2]).toMatch(/^2 backed up, 0 failed \(2 tables, /);
    // The first table's line was out before the second table's request went.
    const orderLine = log.findIndex((e) => e.startsWith('out:orders  ok'));
    const eventsRequest = log.indexOf('req:POST /api/admin/backup/events');
    expect(orderLine).toBeGreaterThan(log.indexOf('req:POST /api/admin/backup/orders'));
    expect(eventsRequest).toBeGreaterThan(orderLine);
  });

  test('cli remote - backup --json: one document on stdout, progress on stderr', async () => {
    const run = await runCli('backup', ['--json'], env);
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(Object.keys(doc).sort()).toEqual(['durationMs', 'results']);
    expect(doc.results).toEqual([
      expect.objectContaining({ table: 'orders', status: 'ok', bytes: expect.any(Number), file: expect.stringMatching(/^orders-/) }),
      expect.objectContaining({ table: 'events', status: 'ok' }),
    ]);
    expect(run.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^orders  ok/), expect.stringMatching(/^events  ok/)]);
  });

  test('cli remote - compact of one table, with and without --force', async () => {
    const skipped = await runCli('compact', ['orders'], env);
    expect(skipped.code).toBe(0);
    expect(skipped.stdout).toMatch(/^orders  skipped    /);
    // The reason names the fragmentation already: said once.
    expect(skipped.stdout.match(/fragmentation/g)).toHaveLength(1);
    expect(stub.requests).toContain('POST /api/admin/compact/orders');

    const forced = await runCli('compact', ['orders', '--force', '--json'], env);
    expect(forced.code).toBe(0);
    const doc = JSON.parse(forced.stdout);
    expect(doc.results).toEqual([expect.objectContaining({ table: 'orders', status: 'compacted' })]);
    expect(forced.stderr).toMatch(/^orders  compacted  .* -> .*, writes paused /);
  });

  test('cli remote - restore rolls a table back to its latest backup and reports it', async () => {
    await requestJson(service.bus, 'tables.orders.put', { key: 'kept', value: 1 });
    expect((await runCli('backup', ['orders'], env)).code).toBe(0);
    await requestJson(service.bus, 'tables.orders.put', { key: 'after-backup', value: 2 });

    const run = await runCli('restore', ['orders', '--json'], env);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(
      expect.objectContaining({
        table: 'orders',
        status: 'restored',
        trigger: 'manual',
        durationMs: expect.any(Number),
        backupUsed: expect.stringMatching(/^orders-/),
      }),
    );
    expect(run.stderr).toBe('restoring orders from its latest verified backup\n');
    await expect(requestJson(service.bus, 'tables.orders.get', { key: 'kept' })).resolves.toEqual({ found: true, value: 1 });
    await expect(requestJson(service.bus, 'tables.orders.get', { key: 'after-backup' })).resolves.toEqual({ found: false });

    const human = await runCli('restore', ['orders'], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^restoring orders from its latest verified backup\norders: restored from orders-\S+ in \d+/);
  });

  test('cli remote - an unknown table is a usage error (exit 2)', async () => {
    const run = await runCli('backup', ['nosuch'], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe("tablekeeper backup: no table named 'nosuch' (tables: orders, events)\n");
    expect(run.stdout).toBe('');
    expect(stub.requests).not.toContain('POST /api/admin/backup/nosuch');

    const json = await runCli('restore', ['nosuch', '--json'], env);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({ error: { code: 'usage', message: expect.stringContaining('nosuch') } });
  });

  test('cli remote - bad command lines exit 2 without asking the service', async () => {
    const before = stub.requests.length;
    for (const [command, argv] of [
      ['restore', []],
      ['status', ['orders']],
      ['backup', ['--force']],
      ['compact', ['--bogus']],
      ['backup', ['a.b']],
      ['status', ['--url', 'ftp://x']],
      ['status', ['--url', stub.url, '--nats', 'nats://127.0.0.1:4222']],
      ['status', ['--timeout', 'soon']],
    ] as const) {
      const run = await runCli(command, [...argv], env);
      expect({ argv, code: run.code }).toEqual({ argv, code: 2 });
      expect(run.stderr).toMatch(/^tablekeeper \w+: .+\nrun 'tablekeeper \w+ --help' for usage\n$/);
    }
    expect(stub.requests.length).toBe(before);
  });

  test('cli remote - an unreachable service exits 3', async () => {
    const port = await closedPort();
    const run = await runCli('status', ['--url', `http://127.0.0.1:${port}`], env);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/cannot reach the service at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);

    const json = await runCli('backup', ['--json', '--url', `http://127.0.0.1:${port}`], env);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout).error.code).toBe('unreachable');
  });

  test('cli remote - a service that does not answer in time exits 3', async () => {
    const silentServer: Server = createServer(() => undefined); // never answers
    await new Promise<void>((resolve) => silentServer.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silentServer.address() as AddressInfo;
      const run = await runCli('status', ['--json', '--timeout', '300ms', '--url', `http://127.0.0.1:${port}`], env);
      expect(run.code).toBe(3);
      expect(JSON.parse(run.stdout).error).toEqual({ code: 'timeout', message: expect.stringContaining('timed out after 300 ms') });
    } finally {
      silentServer.closeAllConnections();
      await new Promise<void>((resolve) => silentServer.close(() => resolve()));
    }
  });

  test('cli remote - a wrong or missing token exits 4', async () => {
    const wrong = await runCli('status', ['--token', 'not-the-token'], env);
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/^tablekeeper status: the bearer token is not valid\n$/);

    const missing = await runCli('backup', ['orders', '--json'], { TABLEKEEPER_URL: stub.url, TABLEKEEPER_DATA_DIR: path.join(dir, 'none') });
    expect(missing.code).toBe(4);
    expect(JSON.parse(missing.stdout).error.code).toBe('unauthorized');
  });

  test('cli remote - the token the service generated is read from <dataDir>/.tablekeeper/admin-token', async () => {
    const data = path.join(dir, 'token-data');
    mkdirSync(path.join(data, '.tablekeeper'), { recursive: true });
    writeFileSync(path.join(data, '.tablekeeper', 'admin-token'), `${TOKEN}\n`);
    const run = await runCli('status', [], { TABLEKEEPER_URL: stub.url, TABLEKEEPER_DATA_DIR: data });
    expect(run.code).toBe(0);
  });

  test('cli remote - a rate-limited request is retried after Retry-After', async () => {
    // One admin mutation at once, one more per second.
    const config = smallConfig(dir, SERVICE_ENV);
    const limited = await startApi(service, { ...config, http: { ...config.http, rateLimit: { burst: 1, perMinute: 60 } } });
    try {
      const run = await runCli('backup', [], { ...env, TABLEKEEPER_URL: limited.url });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^orders  ok .*\nrate limited by the service; retrying in \d+ s\nevents  ok /);
      expect(limited.requests.filter((r) => r === 'POST /api/admin/backup/events')).toHaveLength(2);
    } finally {
      await limited.close();
    }
  });
});

describe('cli remote - over HTTP, a table whose backups fail', () => {
  let dir: string;
  let service: RunningService;
  let stub: Api;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    dir = makeTempDir('tk-cli-http-fail-');
    const backupDir = path.join(dir, 'backups');
    mkdirSync(backupDir, { recursive: true });
    // A dangling link where `orders`' backup directory belongs: it cannot be created, so every backup of it fails.
    symlinkSync(path.join(dir, 'nowhere', 'orders'), path.join(backupDir, 'orders'));
    const config = smallConfig(dir, { ...SERVICE_ENV, TABLEKEEPER_BACKUP_DIR: backupDir });
    service = await startService(config, silent);
    stub = await startApi(service, config);
    env = { TABLEKEEPER_URL: stub.url, TABLEKEEPER_ADMIN_TOKEN: TOKEN };
  });

  afterAll(async () => {
    await stub?.close();
    await service?.stop();
    if (dir) removeTempDir(dir);
  });

  test('cli remote - backup exits 1 when a table failed, and still backs up the others', async () => {
    const run = await runCli('backup', [], env);
    expect(run.code).toBe(1);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^orders  failed  BACKUP_FAILED: table 'orders': backup failed/);
    expect(lines[1]).toMatch(/^events  ok      /);
    expect(lines[2]).toMatch(/^1 backed up, 1 failed /);

    const json = await runCli('backup', ['orders', '--json'], env);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout).results).toEqual([
      expect.objectContaining({ table: 'orders', status: 'failed', error: expect.objectContaining({ code: expect.any(String) }) }),
    ]);
  });

  test('cli remote - restore of a table with no verified backup exits 1 with the service\'s reason', async () => {
    const run = await runCli('restore', ['orders', '--json'], env);
    expect(run.code).toBe(1);
    const doc = JSON.parse(run.stdout);
    expect(doc).toEqual({ error: { code: 'not_found', message: "table 'orders' has no verified backup" } });
    expect(run.stderr).toMatch(/^restoring orders from its latest verified backup\ntablekeeper restore: .+\n$/);
  });
});
