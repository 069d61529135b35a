/**
 * The built CLI (`dist/cli/main.js`, from `npm run build`, which `npm test`
 * runs before jest) as real processes: `tablekeeper serve` in a child
 * process, and `status`, `compact`, `backup` and `restore` against it, with
 * their real exit codes and `--json` documents.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { until } from '../http/http-helpers';
import { closedPort } from './remote-helpers';

const MAIN = path.join(__dirname, '../../dist/cli/main.js');
const TOKEN = 'binary-test-admin-token-0123456789';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI with only the environment given (plus PATH), to its exit. */
function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('cli - the built binary against a running service', () => {
  let dir: string;
  let serve: ChildProcess | undefined;
  let serveExit: Promise<number | null>;
  let url: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` (npm test does) before these tests`);
    dir = makeTempDir('tk-cli-bin-');
    const config = path.join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ tables: [{ name: 'orders', sync: 'always' }, { name: 'events', sync: 'always' }] }));
    const child = spawn(process.execPath, [MAIN, 'serve'], {
      env: {
        PATH: process.env.PATH ?? '',
        TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
        TABLEKEEPER_CONFIG: config,
        TABLEKEEPER_HTTP_HOST: '127.0.0.1',
        TABLEKEEPER_HTTP_PORT: '0',
        TABLEKEEPER_ADMIN_TOKEN: TOKEN,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    serve = child;
    serveExit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    // The service logs JSON lines; the start line names where HTTP listens.
    url = await new Promise<string>((resolve, reject) => {
      let buffered = '';
      child.stdout!.on('data', (c: Buffer) => {
        buffered += c.toString();
        for (const line of buffered.split('\n')) {
          if (!line.includes('"tablekeeper started"')) continue;
          resolve((JSON.parse(line) as { http: string }).http);
        }
      });
      child.stderr!.on('data', (c: Buffer) => (buffered += c.toString()));
      child.once('exit', (code) => reject(new Error(`serve exited with ${code} before starting:\n${buffered}`)));
    });
    env = { TABLEKEEPER_URL: url, TABLEKEEPER_ADMIN_TOKEN: TOKEN };
  });

  afterAll(async () => {
    if (serve?.pid !== undefined && serve.exitCode === null) {
      process.kill(serve.pid, 'SIGTERM');
      await serveExit;
    }
    if (dir) removeTempDir(dir);
  });

  test('cli binary - status, backup, compact and restore exit 0 with one --json document each', async () => {
    const status = await cli(['status', '--json'], env);
    expect(status.code).toBe(0);
    const health = JSON.parse(status.stdout);
    expect(health.tables.map((t: { table: string; state: string }) => [t.table, t.state])).toEqual([['orders', 'serving'], ['events', 'serving']]);

    const human = await cli(['status'], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^service ok: 2 tables/);

    const backup = await cli(['backup', 'orders', '--json'], env);
    expect([backup.code, backup.stderr]).toEqual([0, expect.stringMatching(/^orders  ok/)]);
    expect(JSON.parse(backup.stdout).results).toEqual([expect.objectContaining({ table: 'orders', status: 'ok' })]);

    const compact = await cli(['compact', '--force', '--json'], env);
    expect(compact.code).toBe(0);
    expect(JSON.parse(compact.stdout).results.map((r: { table: string; status: string }) => [r.table, r.status])).toEqual([
      ['orders', 'compacted'],
      ['events', 'compacted'],
    ]);

    const restore = await cli(['restore', 'orders', '--json'], env);
    expect(restore.code).toBe(0);
    expect(JSON.parse(restore.stdout)).toMatchObject({ table: 'orders', mode: 'restore', status: 'restored' });
  });

  test('cli binary - failures exit 1, 2, 3 or 4 with an {error} document under --json', async () => {
    // Take away the backups of `events` once the first start's scheduled backup of it is done:
    // the service answers, and the restore fails.
    await until(async () => {
      const res = await fetch(`${url}/api/admin/history?limit=1000`, { headers: { authorization: `Bearer ${TOKEN}` } });
      const { entries } = (await res.json()) as { entries: { kind: string; table: string; trigger: string }[] };
      return entries.some((e) => e.kind === 'backup' && e.table === 'events' && e.trigger === 'scheduled');
    }, 'the first scheduled backup of events');
    rmSync(path.join(dir, 'data', 'backups', 'events'), { recursive: true, force: true });
    const noBackup = await cli(['restore', 'events', '--json'], env);
    expect(noBackup.code).toBe(1);
    expect(JSON.parse(noBackup.stdout).error).toEqual(expect.objectContaining({ code: 'not_found' }));

    const unknown = await cli(['backup', 'nope', '--json'], env);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout).error.code).toBe('usage');

    const unreachable = await cli(['status', '--json', '--url', `http://127.0.0.1:${await closedPort()}`], env);
    expect(unreachable.code).toBe(3);
    expect(JSON.parse(unreachable.stdout).error.code).toBe('unreachable');

    const wrongToken = await cli(['status', '--json'], { ...env, TABLEKEEPER_ADMIN_TOKEN: 'not-the-token' });
    expect(wrongToken.code).toBe(4);
    expect(JSON.parse(wrongToken.stdout).error.code).toBe('unauthorized');
  });

  test('cli binary - a second serve on the same data directory exits 1 and says which service holds it', async () => {
    const second = await cli(['serve'], {
      TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
      TABLEKEEPER_CONFIG: path.join(dir, 'config.json'),
      TABLEKEEPER_HTTP_HOST: '127.0.0.1',
      TABLEKEEPER_HTTP_PORT: '0',
    });
    expect(second.code).toBe(1);
    // Same host and boot, and that pid is still the same process: refused without waiting.
    expect(second.stdout).not.toContain('waiting to see whether its owner is still alive');
    expect(second.stdout).toContain('tablekeeper failed to start');
    expect(second.stdout).toContain(`is in use by another Tablekeeper service (pid ${serve!.pid}`);
    // The running one was not disturbed.
    const status = await cli(['status', '--json'], env);
    expect(status.code).toBe(0);
  });

  test('cli binary - serve stops cleanly on SIGTERM with exit 0', async () => {
    process.kill(serve!.pid!, 'SIGTERM');
    expect(await serveExit).toBe(0);
  });
});
