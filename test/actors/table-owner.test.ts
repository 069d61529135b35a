import * as path from 'node:path';
import { createActor, setup, toPromise, waitFor } from 'xstate';
import { InProcessBus, requestJson } from '../../bus';
import { tableOwnerMachine } from '../../actors/table-owner';
import { useTempDir } from '../helpers/store-temp';
import { fieldCheckingLogger } from '../helpers/log-fields';

const { logger, repeats } = fieldCheckingLogger();

describe('table owner', () => {
  const tmp = useTempDir('tk-owner-');

  test('table owner - a new table whose data directory does not exist yet creates it and serves', async () => {
    const bus = new InProcessBus({ logger });
    const dataDir = path.join(tmp.dir, 'not', 'yet', 'made');
    // The owner reports to its parent: a parent that takes every report and does nothing.
    const parent = setup({ actors: { owner: tableOwnerMachine } }).createMachine({
      invoke: {
        id: 'owner',
        src: 'owner',
        input: {
          table: { name: 'alpha', sync: 'always', maxValueBytes: 1024, readCacheBytes: 0 },
          dataDir,
          backupDir: path.join(tmp.dir, 'backups'),
          bus,
          subjectPrefix: '',
          logger,
        },
      },
      on: { '*': {} },
    });
    const actor = createActor(parent);
    actor.start();
    const owner = actor.getSnapshot().children.owner!;
    const settled = await waitFor(owner, (s) => s.value !== 'opening', { timeout: 20_000 });
    expect(settled.matches('serving')).toBe(true);
    await requestJson(bus, 'tables.alpha.put', { key: 'k', value: 1 });
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k' })).toEqual({ found: true, value: 1 });
    owner.send({ type: 'STOP' });
    await toPromise(owner);
    actor.stop();
    await bus.close();
    expect(repeats).toEqual([]);
  });
});
