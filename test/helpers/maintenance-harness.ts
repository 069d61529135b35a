import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { InProcessBus } from '../../bus';
import { Subjects } from '../../bus/subjects';
import { loadConfig } from '../../supervisor/config';
import { HistoryStore } from '../../supervisor/history';
import { Maintenance, type MaintenanceDeps } from '../../supervisor/maintenance';
import { useTempDir } from './store-temp';

/**
 * For tests of Maintenance on its own: a temporary directory, and `alpha()`,
 * which gives a configuration with the one table `alpha` (its data directory
 * made), a fresh in-process bus, the opened history table, and a Maintenance
 * over them with the clock, owner and owner control the test gives. The bus
 * and the history are closed after each test, the directory removed.
 */
export function useMaintenanceHarness(prefix: string, logger: Logger) {
  const tmp = useTempDir(prefix);
  let bus: InProcessBus | undefined;
  let history: HistoryStore | undefined;

  afterEach(async () => {
    await history?.close();
    history = undefined;
    await bus?.close();
    bus = undefined;
  });

  return {
    tmp,
    async alpha(parts: Pick<MaintenanceDeps, 'clock' | 'submit' | 'owners'>) {
      const config = { ...loadConfig({ env: { TABLEKEEPER_DATA_DIR: path.join(tmp.dir, 'data') } }), tables: [{ name: 'alpha', sync: 'always' as const, maxValueBytes: 4096 }] };
      mkdirSync(config.dataDir, { recursive: true });
      bus = new InProcessBus({ logger });
      history = await HistoryStore.open(config.dataDir, { logger });
      const maintenance = new Maintenance({ config, bus, subjects: new Subjects(''), logger, history, ...parts });
      return { config, bus, history, maintenance };
    },
  };
}
