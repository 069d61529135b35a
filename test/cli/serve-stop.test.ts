import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { serveCommand, startService } from '../../cli/serve';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { LOCK_DIR_NAME } from '../../supervisor';
import { TableFile } from '../../store';
import { tableFilePath } from '../../actors/table-owner';
import { captureLogger, testConfig, until } from '../http/http-helpers';

describe('serve - stopping', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tk-serve-stop-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('serve - a stop requested before the tables have opened still closes every table cleanly', async () => {
    const config = testConfig(dir);
    const { logger, text } = captureLogger('info');
    const abort = new AbortController();
    abort.abort();
    // With the stop already requested, start returns without waiting for the tables to settle.
    const running = await startService(config, logger, { abort: abort.signal });
    expect(text()).toContain('start interrupted by a stop request');
    expect(text()).not.toContain('tablekeeper started');
    await running.stop();
    expect(text()).toContain('tablekeeper stopped');
    // Every table file that was created is whole and reopens with no torn tail.
    for (const t of config.tables) {
      const file = await TableFile.open({ table: t.name, path: tableFilePath(config.dataDir, t.name) });
      expect(file.openReport.tornTailBytes).toBe(0);
      await file.close();
    }
  });

  test('serve - a second signal during the shutdown is ignored: the handlers stay until the stop is over, then go', async () => {
    const before = { term: process.listenerCount('SIGTERM'), int: process.listenerCount('SIGINT') };
    const configFile = path.join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ tables: [{ name: 'orders' }] }));
    const exit = serveCommand({
      TABLEKEEPER_CONFIG: configFile,
      TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
      TABLEKEEPER_HTTP_HOST: '127.0.0.1',
      TABLEKEEPER_HTTP_PORT: '0',
      TABLEKEEPER_LOG_LEVEL: 'silent',
    });
    // Installed before the first table opens.
    expect(process.listenerCount('SIGTERM')).toBe(before.term + 1);
    process.emit('SIGTERM', 'SIGTERM');
    // Still handled, so a second signal (Ctrl-C under npm arrives twice) does not take the default action and kill the shutdown.
    expect(process.listenerCount('SIGINT')).toBe(before.int + 1);
    expect(process.listenerCount('SIGTERM')).toBe(before.term + 1);
    process.emit('SIGINT', 'SIGINT');
    expect(await exit).toBe(0);
    expect(process.listenerCount('SIGTERM')).toBe(before.term);
    expect(process.listenerCount('SIGINT')).toBe(before.int);
    const file = await TableFile.open({ table: 'orders', path: tableFilePath(path.join(dir, 'data'), 'orders') });
    expect(file.openReport.tornTailBytes).toBe(0);
    await file.close();
  });

  const serveEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
    const configFile = path.join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ tables: [{ name: 'orders' }] }));
    return {
      TABLEKEEPER_CONFIG: configFile,
      TABLEKEEPER_DATA_DIR: path.join(dir, 'data'),
      TABLEKEEPER_HTTP_HOST: '127.0.0.1',
      TABLEKEEPER_HTTP_PORT: '0',
      TABLEKEEPER_LOG_LEVEL: 'silent',
      ...extra,
    };
  };
  const lockOwnerFile = (): string => path.join(dir, 'data', LOCK_DIR_NAME, 'owner.json');

  test('serve - a stop requested while the start waits for a locked data directory ends it with exit 0, leaving the lock alone', async () => {
    mkdirSync(path.join(dir, 'data', LOCK_DIR_NAME), { recursive: true });
    const left = { pid: 1, hostname: 'some-other-host', bootId: '', startedAt: '2026-01-01T00:00:00.000Z', token: 'theirs' };
    writeFileSync(lockOwnerFile(), JSON.stringify(left));
    const exit = serveCommand(serveEnv());
    // The start is waiting for the lock now (it is fresh, and not provably abandoned).
    process.emit('SIGTERM', 'SIGTERM');
    expect(await exit).toBe(0);
    expect(JSON.parse(readFileSync(lockOwnerFile(), 'utf8'))).toEqual(left);
  });

  test('serve - a service whose data directory lock is taken over stops and exits 1', async () => {
    // Touched, and checked, every 100 ms.
    const exit = serveCommand(serveEnv({ TABLEKEEPER_LOCK_STALE: '600ms' }));
    await until(() => existsSync(lockOwnerFile()) && (JSON.parse(readFileSync(lockOwnerFile(), 'utf8')) as { pid: number }).pid === process.pid, 'the lock to be taken');
    const mine = JSON.parse(readFileSync(lockOwnerFile(), 'utf8')) as Record<string, unknown>;
    writeFileSync(lockOwnerFile(), JSON.stringify({ ...mine, pid: 4242, hostname: 'elsewhere', token: 'theirs' }));
    expect(await exit).toBe(1);
    // Not its lock any more: left as the other owner wrote it.
    expect(JSON.parse(readFileSync(lockOwnerFile(), 'utf8'))).toMatchObject({ token: 'theirs' });
  });

  test('serve - a data or backup directory that is a file stops the start with CONFIG_INVALID, before anything opens', async () => {
    const file = path.join(dir, 'plain-file');
    writeFileSync(file, 'x');
    const { logger } = captureLogger('info');
    await expect(startService({ ...testConfig(dir), backupDir: file }, logger)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/^backupDir: '.*plain-file' is not a directory$/) });
    await expect(startService({ ...testConfig(file), backupDir: path.join(dir, 'b') }, logger)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/^dataDir: /) });
    await expect(startService({ ...testConfig(dir), backupDir: path.join(file, 'below') }, logger)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    // Nothing was started: no lock, no table file.
    expect(existsSync(path.join(dir, LOCK_DIR_NAME))).toBe(false);
    expect(existsSync(tableFilePath(dir, 'orders'))).toBe(false);
  });

  test('serve - writes acknowledged before a stop are on disk after it', async () => {
    const config = testConfig(dir);
    const { logger } = captureLogger('warn');
    const running = await startService(config, logger);
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    for (let i = 0; i < 20; i++) {
      const reply = await running.bus.request('tables.orders.put', enc({ key: `k${i}`, value: { i } }));
      expect(JSON.parse(new TextDecoder().decode(reply.data))).toEqual({ ok: true });
    }
    await running.stop();
    const file = await TableFile.open({ table: 'orders', path: tableFilePath(config.dataDir, 'orders') });
    try {
      expect(file.stats().records).toBe(20);
      expect(JSON.parse(file.get('k19')!.toString('utf8'))).toEqual({ i: 19 });
    } finally {
      await file.close();
    }
  });
});
