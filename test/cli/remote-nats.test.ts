/**
 * The operator commands over NATS (`--nats` / `NATS_URL`), against a real
 * nats-server and a real service: with deploy/nats-server.conf's users and
 * permissions, and with an nkey seed file (`NATS_NKEY`).
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import * as transport from '@nats-io/transport-node';
import { startService, type RunningService } from '../../cli/serve';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { DEPLOY_PASSWORDS, deployNatsConfigIn } from '../deploy/deploy-config';
import { closedPort, runCli, smallConfig } from './remote-helpers';

// The transport's type declarations lose nats-core's exports (see bus/nats-bus.ts); the module has them.
const { nkeys } = transport as unknown as typeof import('@nats-io/nats-core/lib/mod');
const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });

describe('cli remote - over NATS with the deployed users', () => {
  let dir: string;
  let nats: NatsServer;
  let service: RunningService;
  let operatorEnv: NodeJS.ProcessEnv;

  beforeAll(async () => {
    dir = makeTempDir('tk-cli-nats-');
    nats = await startNatsServer({ configFile: deployNatsConfigIn(dir), env: DEPLOY_PASSWORDS, args: ['-m', '-1'] });
    service = await startService(
      smallConfig(dir, { NATS_URL: nats.url, NATS_USER: 'tablekeeper', NATS_PASS: DEPLOY_PASSWORDS.NATS_SERVICE_PASSWORD }),
      silent,
    );
    operatorEnv = { NATS_URL: nats.url, NATS_USER: 'operator', NATS_PASS: DEPLOY_PASSWORDS.NATS_OPERATOR_PASSWORD };
  });

  afterAll(async () => {
    await service?.stop();
    await nats?.stop();
    if (dir) removeTempDir(dir);
  });

  test('cli remote - status over NATS_URL as the operator user', async () => {
    const run = await runCli('status', [], operatorEnv);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^service ok: 2 tables/);
    expect(run.stdout).toMatch(/\norders\s+serving\s/);
  });

  test('cli remote - backup --nats --json runs per table and prints one document', async () => {
    const { NATS_URL: url, ...creds } = operatorEnv;
    const run = await runCli('backup', ['--nats', url ?? '', '--json'], creds);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).results).toEqual([
      expect.objectContaining({ table: 'orders', status: 'ok' }),
      expect.objectContaining({ table: 'events', status: 'ok' }),
    ]);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(2);
  });

  test('cli remote - compact --force over NATS', async () => {
    const run = await runCli('compact', ['events', '--force'], operatorEnv);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^events  compacted  /);
  });

  test('cli remote - an application user may not send admin requests (exit 4)', async () => {
    const run = await runCli('status', ['--json'], { ...operatorEnv, NATS_USER: 'app', NATS_PASS: DEPLOY_PASSWORDS.NATS_APP_PASSWORD });
    expect(run.code).toBe(4);
    expect(JSON.parse(run.stdout).error).toEqual({ code: 'unauthorized', message: "not permitted to publish to 'admin.health'" });
  });

  test('cli remote - a wrong NATS password exits 4', async () => {
    const run = await runCli('status', [], { ...operatorEnv, NATS_PASS: 'guess' });
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/^tablekeeper status: the NATS server at nats:\/\/127\.0\.0\.1:\d+ refused the credentials/);
  });

  test('cli remote - no NATS server exits 3', async () => {
    const port = await closedPort();
    const run = await runCli('backup', ['--json'], { ...operatorEnv, NATS_URL: `nats://127.0.0.1:${port}` });
    expect(run.code).toBe(3);
    expect(JSON.parse(run.stdout).error.code).toBe('unreachable');
  });

  test('cli remote - a NATS server without the service exits 3', async () => {
    const bare = await startNatsServer();
    try {
      const run = await runCli('status', [], { NATS_URL: bare.url });
      expect(run.code).toBe(3);
      expect(run.stderr).toMatch(/no responders on 'admin\.health'/);
    } finally {
      await bare.stop();
    }
  });
});

describe('cli remote - over NATS with an nkey seed file', () => {
  let dir: string;
  let nats: NatsServer;
  let service: RunningService;
  let seedFile: string;

  beforeAll(async () => {
    dir = makeTempDir('tk-cli-nkey-');
    const user = nkeys.createUser();
    seedFile = path.join(dir, 'user.nk');
    writeFileSync(seedFile, `${new TextDecoder().decode(user.getSeed())}\n`, { mode: 0o600 });
    nats = await startNatsServer({ config: `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n` });
    // The service itself connects with NATS_NKEY too.
    service = await startService(smallConfig(dir, { NATS_URL: nats.url, NATS_NKEY: seedFile }), silent);
  });

  afterAll(async () => {
    await service?.stop();
    await nats?.stop();
    if (dir) removeTempDir(dir);
  });

  test('cli remote - NATS_NKEY authenticates the service and the CLI', async () => {
    const run = await runCli('status', ['--json'], { NATS_URL: nats.url, NATS_NKEY: seedFile });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).tables).toHaveLength(2);
  });

  test('cli remote - without the seed the server refuses (exit 4); an unreadable seed file is a usage error (exit 2)', async () => {
    const none = await runCli('status', [], { NATS_URL: nats.url });
    expect(none.code).toBe(4);
    const missing = await runCli('status', [], { NATS_URL: nats.url, NATS_NKEY: path.join(dir, 'absent.nk') });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the NATS credentials file/);
  });
});
