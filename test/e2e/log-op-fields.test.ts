/**
 * What an operator filters logs by: every line the service writes about a
 * table names the table and the operation (`op`) it comes from, for a torn
 * tail cut at open, compactions, backups and their pruning, and a damaged
 * record found by a get and recovered.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { requestJson } from '../../bus';
import { startService, type RunningService } from '../../cli/serve';
import { scanFile, TableFile } from '../../store';
import { loadConfig } from '../../supervisor/config';
import { useTempDir } from '../helpers/store-temp';
import { captureLogger, until } from '../http/http-helpers';

describe('service logs - table lines name their operation', () => {
  const tmp = useTempDir('tk-log-op-');
  let service: RunningService | undefined;

  afterEach(async () => {
    await service?.stop();
    service = undefined;
  });

  test('log fields - every line with a table has an op', async () => {
    const dataDir = path.join(tmp.dir, 'data');
    const config = {
      ...loadConfig({ env: { TABLEKEEPER_DATA_DIR: dataDir, TABLEKEEPER_HTTP_PORT: '0', TABLEKEEPER_ADMIN_TOKEN: 'log-op-token' } }),
      tables: [{ name: 'orders', sync: 'always' as const, maxValueBytes: 4096 }],
      backup: { every: '24h', keep: 1 },
    };
    // A table with overwrites, and a torn tail that the open cuts off.
    mkdirSync(dataDir, { recursive: true });
    const file = path.join(dataDir, 'orders.tkt');
    const t = await TableFile.open({ table: 'orders', path: file });
    for (let i = 0; i < 20; i++) await t.put(`k${i % 5}`, Buffer.from(JSON.stringify({ i })));
    await t.close();
    const fd = openSync(file, 'a');
    writeSync(fd, Buffer.from('torn tail'));
    closeSync(fd);

    const { logger, lines } = captureLogger('info');
    service = await startService(config, logger);
    const bus = service.bus;
    await until(() => lines.some((l) => l.includes('"backup verified"')), 'the first backup');
    await requestJson(bus, 'tables.orders.put', { key: 'k9', value: { late: true } });
    await requestJson(bus, 'admin.compact.orders', { force: true }, { timeoutMs: 30_000 });
    // keep 1: this backup prunes the first one.
    await requestJson(bus, 'admin.backup.orders', {}, { timeoutMs: 30_000 });
    await until(() => lines.some((l) => l.includes('"backups pruned"')), 'a prune');

    // Damage the newest record of k9 on disk (it is not in the read cache), then read it.
    let rec: { offset: number; length: number } | undefined;
    for await (const item of scanFile(file)) if (item.type === 'record' && item.key === 'k9') rec = item;
    const dfd = openSync(file, 'r+');
    writeSync(dfd, Buffer.from([0xee, 0xee]), 0, 2, rec!.offset + rec!.length - 3);
    closeSync(dfd);
    await requestJson(bus, 'tables.orders.get', { key: 'k9' }).catch(() => undefined);
    await until(() => lines.some((l) => l.includes('"table recovered"')), 'the recovery');

    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const seen = (msg: string): boolean => parsed.some((l) => l.msg === msg);
    for (const msg of ['torn tail truncated', 'compaction done', 'backups pruned', 'table corrupt', 'table recovered']) expect(seen(msg)).toBe(true);
    const withoutOp = parsed.filter((l) => l.table !== undefined && l.op === undefined).map((l) => `${String(l.msg)} (${String(l.table)})`);
    expect(withoutOp).toEqual([]);
  });
});
