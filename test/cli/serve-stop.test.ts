import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { serveCommand, startService } from '../../cli/serve';
import { writeFileSync } from 'node:fs';
import { TableFile } from '../../store';
import { tableFilePath } from '../../actors/table-owner';
import { captureLogger, testConfig } from '../http/http-helpers';

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
