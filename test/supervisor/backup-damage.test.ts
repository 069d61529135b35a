import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import { decodeJson, InProcessBus, requestJson } from '../../bus';
import { tableFilePath } from '../../actors/table-owner';
import { scanFile, type ScannedRecord, type StoreFs } from '../../store';
import { loadConfig, type Config } from '../../supervisor/config';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { until, within } from '../helpers/wait';
import { fieldCheckingLogger } from '../helpers/log-fields';

// Every line logged is checked (at every level) for a field named twice.
const { logger: silent, repeats } = fieldCheckingLogger();

function configFor(dir: string, tables: string[]): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: path.join(dir, 'data') } });
  return {
    ...base,
    tables: tables.map((name) => ({ name, sync: 'always' as const, maxValueBytes: 4096 })),
    // The simulated clock never reaches these: every run here is asked for.
    backup: { every: '24h', keep: 3 },
    compaction: { every: '24h', threshold: 0.1 },
    scrub: { every: '24h' },
  };
}

/** Every intact record of a table file, in file order. */
async function records(file: string): Promise<ScannedRecord[]> {
  const out: ScannedRecord[] = [];
  for await (const item of scanFile(file)) if (item.type === 'record') out.push(item);
  return out;
}

/** Flips the bits of one byte of the value of the newest record of `key`, in place (bit rot under a serving table). */
async function rotValueOf(file: string, key: string): Promise<void> {
  const rec = (await records(file)).filter((r) => r.key === key).at(-1);
  if (!rec) throw new Error(`no record of ${key}`);
  const at = rec.offset + rec.length - 2;
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    writeSync(fd, Buffer.from([byte[0] ^ 0x55]), 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

describe('backup damage', () => {
  const tmp = useTempDir('tk-backup-damage-');
  let bus: InProcessBus;
  let actor: SupervisorRef | undefined;
  let events: { subject: string; body: any }[];

  beforeEach(() => {
    bus = new InProcessBus({ logger: silent });
    events = [];
    bus.subscribe('backups.>', (msg) => void events.push({ subject: msg.subject, body: decodeJson(msg.data) }));
  });

  afterEach(async () => {
    if (actor && actor.getSnapshot().status === 'active') {
      actor.send({ type: 'STOP' });
      await within(toPromise(actor), 'the supervisor to stop');
    }
    actor = undefined;
    await bus.close();
    expect(repeats.splice(0)).toEqual([]);
  });

  async function start(config: Config, fs?: StoreFs): Promise<void> {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1));
    actor = createActor(supervisorMachine, { input: { config, bus, logger: silent, clock, fs }, clock });
    actor.start();
    await within(requestJson(bus, 'admin.health', {}, { timeoutMs: 20_000 }), 'admin.health after the start');
  }

  async function serving(table: string): Promise<void> {
    await within(waitFor(actor!, (s) => s.context.owners[table].state === 'serving' && !s.context.owners[table].recovering), `${table} to serve`);
  }

  const named = (name: string) => events.filter((e) => e.subject === `backups.${name}`);

  async function fill(table: string, from: number, to: number, tag: string): Promise<void> {
    await Promise.all(Array.from({ length: to - from }, (_, i) => requestJson(bus, `tables.${table}.put`, { key: `k${from + i}`, value: { tag, i: from + i } })));
  }

  async function get(table: string, key: string): Promise<unknown> {
    const reply = (await requestJson(bus, `tables.${table}.get`, { key })) as { found: boolean; value?: unknown };
    return reply.found ? reply.value : undefined;
  }

  test('backup damage - a backup that finds a damaged record in the table file starts the recovery, which rebuilds the table from the last backup', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 50, 'old');
    const first = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(first.results[0]).toMatchObject({ status: 'ok' });
    await fill('alpha', 50, 100, 'new');
    const file = tableFilePath(config.dataDir, 'alpha');
    await rotValueOf(file, 'k30'); // written before the backup: the backup still has it
    await rotValueOf(file, 'k70'); // written after it: truly gone

    // No read touches the damage: only the backup can find it.
    const reply = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(reply.results[0]).toMatchObject({ table: 'alpha', status: 'failed', error: { code: 'BACKUP_FAILED' } });
    await until(() => named('recovery_complete').length === 1, 'the recovery');
    await serving('alpha');

    expect(named('corruption_detected').map((e) => e.body)).toEqual([expect.objectContaining({ table: 'alpha', source: 'maintenance' })]);
    expect(named('recovery_complete')[0].body).toMatchObject({ table: 'alpha', trigger: 'auto', status: 'recovered', recordsLost: 1, lostKeys: ['k70'] });
    expect(await get('alpha', 'k30')).toEqual({ tag: 'old', i: 30 });
    expect(await get('alpha', 'k70')).toBeUndefined();
    expect(await get('alpha', 'k99')).toEqual({ tag: 'new', i: 99 });
    const health = (await requestJson(bus, 'admin.health', {})) as { tables: any[] };
    expect(health.tables[0]).toMatchObject({ table: 'alpha', state: 'serving', recoveries: { count: 1, failed: 0 } });
    // The rebuilt file backs up again.
    const again = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(again.results[0]).toMatchObject({ status: 'ok' });
  });

  test('backup damage - a copy written wrong is a failed backup only: the table file is sound and keeps serving', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, fs);
    await serving('alpha');
    await fill('alpha', 0, 20, 'v');
    fs.failOn({ op: 'write', nth: 1, corrupt: true }); // the copy's first write is silently changed
    const bad = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(bad.results[0]).toMatchObject({ status: 'failed', error: { code: 'BACKUP_FAILED' } });
    // The next backup runs on the owner after the failed one: a recovery would have taken the table out of serving first.
    const good = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(good.results[0]).toMatchObject({ status: 'ok' });
    await bus.flush();
    expect(named('corruption_detected')).toEqual([]);
    const health = (await requestJson(bus, 'admin.health', {})) as { tables: any[] };
    expect(health.tables[0]).toMatchObject({ state: 'serving', recoveries: { count: 0 } });
  });
});
