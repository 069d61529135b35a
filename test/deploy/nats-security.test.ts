/**
 * deploy/nats-server.conf on a real nats-server: the service runs as its own
 * user, and each role can do what the README says and nothing more.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { connect } from '@nats-io/transport-node';
import { decodeJson, NatsBus, RemoteError, requestJson } from '../../bus';
import { startService, type RunningService } from '../../cli/serve';
import { loadConfig } from '../../supervisor/config';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { DEPLOY_PASSWORDS, deployNatsConfigIn } from './deploy-config';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });
const ROOT = path.resolve(__dirname, '..', '..');
const PASSWORDS = DEPLOY_PASSWORDS;

/** Resolves with the first message on `subject` whose body passes `want`, or rejects after `ms`. */
function firstMessage(
  bus: NatsBus,
  subject: string,
  ms: number,
  want: (body: Record<string, unknown>) => boolean,
): { next: Promise<{ subject: string; body: unknown }> } {
  let timer: NodeJS.Timeout | undefined;
  const next = new Promise<{ subject: string; body: unknown }>((resolve, reject) => {
    const sub = bus.subscribe(subject, (msg) => {
      const body = decodeJson(msg.data) as Record<string, unknown>;
      if (!want(body)) return;
      clearTimeout(timer);
      sub.unsubscribe();
      resolve({ subject: msg.subject, body });
    });
    timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`nothing on ${subject} within ${ms} ms`));
    }, ms);
  });
  return { next };
}

describe('deploy - NATS users and permissions', () => {
  let dir: string;
  let nats: NatsServer;
  let service: RunningService;
  let app: NatsBus;
  let operator: NatsBus;

  beforeAll(async () => {
    dir = makeTempDir('tk-deploy-nats-');
    nats = await startNatsServer({ configFile: deployNatsConfigIn(dir), env: PASSWORDS, args: ['-m', '-1'] });
    const base = loadConfig({
      env: {
        NATS_URL: nats.url,
        NATS_USER: 'tablekeeper',
        NATS_PASS: PASSWORDS.NATS_SERVICE_PASSWORD,
        TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
        TABLEKEEPER_HTTP_PORT: '0',
      },
    });
    service = await startService(
      { ...base, tables: [{ name: 'orders', sync: 'always', maxValueBytes: 4096 }] },
      silent,
    );
    app = await NatsBus.connect({ servers: nats.url, user: 'app', pass: PASSWORDS.NATS_APP_PASSWORD });
    operator = await NatsBus.connect({ servers: nats.url, user: 'operator', pass: PASSWORDS.NATS_OPERATOR_PASSWORD });
  });

  afterAll(async () => {
    await app?.close();
    await operator?.close();
    await service?.stop();
    await nats?.stop();
    if (dir) removeTempDir(dir);
  });

  test('deploy - the config names no password, only environment variables', () => {
    const text = readFileSync(path.join(ROOT, 'deploy', 'nats-server.conf'), 'utf8');
    const passwords = [...text.matchAll(/password:\s*([^,}\s]+)/g)].map((m) => m[1]);
    expect(passwords).toEqual(['$NATS_SERVICE_PASSWORD', '$NATS_APP_PASSWORD', '$NATS_OPERATOR_PASSWORD']);
    expect(text).toMatch(/jetstream\s*{[^}]*store_dir: \/data/);
  });

  test('deploy - an application user can put and get', async () => {
    await expect(requestJson(app, 'tables.orders.put', { key: 'o-1', value: { qty: 2 } })).resolves.toEqual({ ok: true });
    await expect(requestJson(app, 'tables.orders.get', { key: 'o-1' })).resolves.toEqual({ found: true, value: { qty: 2 } });
  });

  test('deploy - an application user cannot publish admin requests', async () => {
    const err = await requestJson(app, 'admin.health', {}, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).wireCode).toBe('unauthorized');
    expect((err as RemoteError).status).toBe(403);
  });

  test('deploy - an operator can call admin.health but cannot touch table data', async () => {
    const health = (await requestJson(operator, 'admin.health', {}, { timeoutMs: 10_000 })) as {
      tables: { table: string; state: string }[];
    };
    expect(health.tables.map((t) => [t.table, t.state])).toEqual([['orders', 'serving']]);
    const err = await requestJson(operator, 'tables.orders.get', { key: 'o-1' }).catch((e: unknown) => e);
    expect((err as RemoteError).wireCode).toBe('unauthorized');
  });

  test('deploy - neither an application nor an operator can pose as the service', async () => {
    for (const [user, pass] of [
      ['app', PASSWORDS.NATS_APP_PASSWORD],
      ['operator', PASSWORDS.NATS_OPERATOR_PASSWORD],
    ]) {
      const nc = await connect({ servers: nats.url, user, pass });
      try {
        for (const subject of ['tables.>', 'admin.>']) {
          const sub = nc.subscribe(subject);
          // The server refuses the subscription; the client closes it with the permission error.
          const closed = await sub.closed;
          expect(closed).toBeInstanceOf(Error);
          expect((closed as Error).message).toMatch(/permissions violation/i);
        }
      } finally {
        await nc.close();
      }
    }
  });

  test('deploy - everyone can subscribe to backups.> and sees an operator-requested backup', async () => {
    // The service also backs up once right after its first start: wait for the manual one.
    const manual = (body: Record<string, unknown>) => body.trigger === 'manual';
    const appSees = firstMessage(app, 'backups.>', 10_000, manual);
    const operatorSees = firstMessage(operator, 'backups.>', 10_000, manual);
    const serviceSees = firstMessage(service.bus as NatsBus, 'backups.backup_complete', 10_000, manual);
    // Subscriptions reach the server before the request that causes the event.
    await app.flush();
    await operator.flush();
    await service.bus.flush();
    const reply = (await requestJson(operator, 'admin.backup.orders', {}, { timeoutMs: 30_000 })) as {
      results: { table: string; status: string }[];
    };
    expect(reply.results).toEqual([expect.objectContaining({ table: 'orders', status: 'ok' })]);
    for (const seen of [await appSees.next, await operatorSees.next, await serviceSees.next]) {
      expect(seen.subject).toBe('backups.backup_complete');
      expect(seen.body).toEqual(
        expect.objectContaining({ event: 'backup_complete', tables: [expect.objectContaining({ table: 'orders' })] }),
      );
    }
  });

  test('deploy - the service may ask $SRV.STATS for the bus gauges of /metrics', async () => {
    const token = readFileSync(path.join(dir, 'data', '.tablekeeper', 'admin-token'), 'utf8').trim();
    const res = await service.http.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } });
    expect(res.statusCode).toBe(200);
    expect(res.body).toMatch(/^tablekeeper_up 1$/m);
    // From the service's own `$SRV.STATS` request, which its user must be allowed to publish.
    expect(res.body).toMatch(/^tablekeeper_bus_table_requests\{table="orders"\} \d+$/m);
  });

  test('deploy - a wrong password is refused at connect', async () => {
    await expect(NatsBus.connect({ servers: nats.url, user: 'operator', pass: 'guess' })).rejects.toThrow(/authorization/i);
  });
});
