import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import { decodeJson, InProcessBus, requestJson } from '../../bus';
import { loadConfig, type Config } from '../../supervisor/config';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });

/** Waits until `cond` holds (bus events are not actor snapshots, so waitFor cannot see them). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!cond()) throw new Error(`gave up waiting for ${what}`);
}
const HOUR = 3_600_000;

function configFor(dir: string, tables: string[], extra: Partial<Config> = {}): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: path.join(dir, 'data') } });
  return {
    ...base,
    tables: tables.map((name) => ({ name, sync: 'always' as const, maxValueBytes: 4096 })),
    backup: { every: '1h', keep: 2 },
    compaction: { every: '6h', threshold: 0.1 },
    ...extra,
  };
}

describe('maintenance', () => {
  const tmp = useTempDir('tk-maint-');
  let bus: InProcessBus;
  let actor: SupervisorRef | undefined;
  let events: { subject: string; body: any }[];

  beforeEach(() => {
    bus = new InProcessBus({ logger: silent });
    events = [];
    bus.subscribe('backups.>', (msg) => void events.push({ subject: msg.subject, body: decodeJson(msg.data) }));
  });

  afterEach(async () => {
    await stop();
    await bus.close();
  });

  async function stop(): Promise<void> {
    if (actor && actor.getSnapshot().status === 'active') {
      actor.send({ type: 'STOP' });
      await toPromise(actor);
    }
    actor = undefined;
  }

  async function start(config: Config, opts: { clock?: SimulatedClock; fs?: FaultyFs } = {}): Promise<SupervisorRef> {
    actor = createActor(supervisorMachine, {
      input: { config, bus, logger: silent, clock: opts.clock ?? new SimulatedClock(), fs: opts.fs },
      // Only a simulated clock is passed: `clock: undefined` would replace xstate's default.
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    actor.start();
    for (const t of config.tables) await waitFor(actor, (s) => s.context.owners[t.name].state === 'serving');
    return actor;
  }

  async function nextBackupIs(iso: string): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      const health = (await requestJson(bus, 'admin.health', {})) as { nextRuns: { backup: string | null } };
      if (health.nextRuns.backup === iso) return;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`the next backup never became ${iso}`);
  }

  const backupFiles = (config: Config, table: string) =>
    readdirSync(path.join(config.backupDir, table)).filter((f) => f.endsWith('.tkt')).sort();

  async function fill(table: string, n: number, overwrite = 1): Promise<void> {
    for (let r = 0; r < overwrite; r++) {
      await Promise.all(Array.from({ length: n }, (_, i) => requestJson(bus, `tables.${table}.put`, { key: `k${i}`, value: { r, i } })));
    }
  }

  test('maintenance - admin.backup backs up every table, verifies it, keeps the newest N, records history and events', async () => {
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config);
    await fill('alpha', 20);
    for (let i = 0; i < 3; i++) {
      const reply = (await requestJson(bus, 'admin.backup', {})) as { results: { table: string; status: string; bytes: number }[] };
      expect(reply.results.map((r) => [r.table, r.status])).toEqual([['alpha', 'ok'], ['beta', 'ok']]);
      expect(reply.results[0].bytes).toBeGreaterThan(20 * 20);
    }
    expect(backupFiles(config, 'alpha')).toHaveLength(2);
    expect(backupFiles(config, 'beta')).toHaveLength(2);
    await bus.flush();
    const complete = events.filter((e) => e.subject === 'backups.backup_complete');
    expect(complete.length).toBeGreaterThanOrEqual(3);
    expect(complete.at(-1)!.body.tables.map((t: { table: string }) => t.table)).toEqual(['alpha', 'beta']);
    const history = (await requestJson(bus, 'admin.history', { limit: 100 })) as { entries: { kind: string; table: string; result: string }[] };
    expect(history.entries.filter((e) => e.kind === 'backup' && e.result === 'ok')).toHaveLength(6); // the simulated clock never fires the schedule here
    const one = (await requestJson(bus, 'admin.backup.beta', {})) as { results: { table: string }[] };
    expect(one.results.map((r) => r.table)).toEqual(['beta']);
    await expect(requestJson(bus, 'admin.backup.nosuch', {})).rejects.toMatchObject({ wireCode: 'not_found' });
  });

  test('maintenance - compaction skips under the threshold, compacts when forced or fragmented, over admin and tables subjects', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await fill('alpha', 10);
    const skipped = (await requestJson(bus, 'admin.compact.alpha', {})) as { results: any[] };
    expect(skipped.results[0]).toMatchObject({ table: 'alpha', status: 'skipped', fragmentation: 0 });
    const forced = (await requestJson(bus, 'admin.compact.alpha', { force: true })) as { results: any[] };
    expect(forced.results[0]).toMatchObject({ table: 'alpha', status: 'compacted' });
    await fill('alpha', 10, 3); // three quarters of the file is now dead
    const viaTable = (await requestJson(bus, 'tables.alpha.compact', {})) as any;
    expect(viaTable).toMatchObject({ table: 'alpha', status: 'compacted' });
    expect(viaTable.bytesAfter).toBeLessThan(viaTable.bytesBefore);
    const stats = (await requestJson(bus, 'tables.alpha.stats', {})) as any;
    expect(stats).toMatchObject({ records: 10, deadBytes: 0, fragmentation: 0, generation: 3 });
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k3' })).toEqual({ found: true, value: { r: 2, i: 3 } });
    await bus.flush();
    const complete = events.filter((e) => e.subject === 'backups.compaction_complete');
    expect(complete.map((e) => e.body.results[0].status)).toEqual(['skipped', 'compacted', 'compacted']);
    expect(events.some((e) => e.subject === 'backups.compaction_failed')).toBe(false);
  });

  test('maintenance - a failed compaction is retried once; a second failure is reported and the data is intact', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { fs });
    await fill('alpha', 10, 2);
    fs.failOn({ op: 'rename', nth: 1, code: 'EIO' });
    const once = (await requestJson(bus, 'admin.compact', {})) as { results: any[] };
    expect(once.results[0]).toMatchObject({ status: 'compacted', attempts: 2 });
    fs.failOn({ op: 'rename', nth: 1, code: 'EIO', sticky: true });
    const twice = (await requestJson(bus, 'admin.compact', { force: true })) as { results: any[] };
    expect(twice.results[0]).toMatchObject({ status: 'error', attempts: 2 });
    fs.heal();
    await bus.flush();
    const failed = events.filter((e) => e.subject === 'backups.compaction_failed');
    expect(failed).toHaveLength(1);
    expect(failed[0].body.results[0].table).toBe('alpha');
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k9' })).toEqual({ found: true, value: { r: 1, i: 9 } });
  });

  test('maintenance - a backup and a compaction of the same table asked at once both run, one after the other', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await fill('alpha', 50, 2);
    const [b, c] = await Promise.all([
      requestJson(bus, 'admin.backup.alpha', {}) as Promise<{ results: any[] }>,
      requestJson(bus, 'admin.compact.alpha', { force: true }) as Promise<{ results: any[] }>,
    ]);
    expect(b.results[0].status).toBe('ok');
    expect(c.results[0].status).toBe('compacted');
  });

  test('maintenance - the backup schedule runs from the persisted last run, so a restart neither skips nor repeats', async () => {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1, 0, 0, 0));
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { clock });
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed
    // First ever start: a backup is due at once.
    clock.increment(0);
    await until(() => events.filter((e) => e.subject === 'backups.backup_complete').length === 1, 'the first backup');
    // The run is recorded and the next one armed after the event: wait for it.
    await nextBackupIs('2026-01-01T01:00:00.000Z');
    clock.increment(HOUR - 1);
    await bus.flush();
    expect(events.filter((e) => e.subject === 'backups.backup_complete')).toHaveLength(1);
    clock.increment(1);
    await until(() => events.filter((e) => e.subject === 'backups.backup_complete').length === 2, 'the second backup');
    await nextBackupIs('2026-01-01T02:00:00.000Z'); // the run is recorded
    await stop();

    // Restart half an hour later: the next run is one hour after the last, not now.
    const clock2 = new SimulatedClock();
    clock2.set(Date.UTC(2026, 0, 1, 1, 30, 0));
    events = []; // the subscription made in beforeEach fills the new array
    await start(config, { clock: clock2 });
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.nextRuns.backup).toBe('2026-01-01T02:00:00.000Z');
    expect(health.tables[0]).toMatchObject({ table: 'alpha', state: 'serving', backups: 2 });
    expect(health.tables[0].lastBackup.verified).toBe(true);
    expect(events.filter((e) => e.subject === 'backups.backup_complete')).toHaveLength(0);
    // History written before the restart is still there.
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; trigger: string }[] };
    expect(history.entries.map((e) => [e.kind, e.trigger])).toEqual([['backup', 'scheduled'], ['backup', 'scheduled']]);
    clock2.increment(30 * 60_000);
    await until(() => events.filter((e) => e.subject === 'backups.backup_complete').length === 1, 'the backup after the restart');
  });
});
