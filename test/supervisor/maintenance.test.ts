import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import { decodeJson, InProcessBus, requestJson } from '../../bus';
import { loadConfig, type Config } from '../../supervisor/config';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import type { StoreFs } from '../../store';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { fieldCheckingLogger } from '../helpers/log-fields';
import { until, within } from '../helpers/wait';

// Every line logged is checked (at every level) for a field named twice.
const { logger: silent, repeats, warnings } = fieldCheckingLogger();

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
    expect(repeats.splice(0)).toEqual([]);
  });

  async function stop(): Promise<void> {
    if (actor && actor.getSnapshot().status === 'active') {
      actor.send({ type: 'STOP' });
      await within(toPromise(actor), 'the supervisor to stop');
    }
    actor = undefined;
  }

  async function start(config: Config, opts: { clock?: SimulatedClock; fs?: StoreFs; noWait?: boolean } = {}): Promise<SupervisorRef> {
    actor = createActor(supervisorMachine, {
      input: { config, bus, logger: silent, clock: opts.clock ?? new SimulatedClock(), fs: opts.fs },
      // Only a simulated clock is passed: `clock: undefined` would replace xstate's default.
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    actor.start();
    if (opts.noWait) return actor;
    for (const t of config.tables) {
      try {
        await within(waitFor(actor, (s) => s.context.owners[t.name].state === 'serving'), `${t.name} to serve`);
      } catch (err) {
        // Say where the owner is, to tell a hang from a wrong turn.
        const { restarts, gaveUpAt, ...owner } = actor.getSnapshot().context.owners[t.name];
        throw new Error(`${(err as Error).message}: owner ${JSON.stringify({ ...owner, restarts: restarts.length, gaveUpAt })}; last warnings:\n${warnings.join('\n')}`);
      }
    }
    return actor;
  }

  async function nextRunIs(name: 'backup' | 'compaction' | 'scrub', iso: string): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      const health = (await requestJson(bus, 'admin.health', {})) as { nextRuns: Record<string, string | null> };
      if (health.nextRuns[name] === iso) return;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`the next ${name} run never became ${iso}`);
  }
  const nextBackupIs = (iso: string) => nextRunIs('backup', iso);
  const count = (event: string) => events.filter((e) => e.subject === `backups.${event}`).length;

  const backupFiles = (config: Config, table: string) =>
    readdirSync(path.join(config.backupDir, table)).filter((f) => f.endsWith('.tkt')).sort();

  async function fill(table: string, n: number, overwrite = 1): Promise<void> {
    for (let r = 0; r < overwrite; r++) {
      await Promise.all(Array.from({ length: n }, (_, i) => requestJson(bus, `tables.${table}.put`, { key: `k${i}`, value: { r, i } })));
    }
  }

  test('maintenance - an unknown admin operation is named as such, whatever its body', async () => {
    await start(configFor(tmp.dir, ['alpha']));
    for (const data of [Buffer.from('not json'), Buffer.from('{}'), Buffer.alloc(0)]) {
      const reply = await bus.request('admin.frobnicate', data);
      expect(decodeJson(reply.data)).toEqual({ error: { code: 'bad_request', message: "unknown operation 'frobnicate'" } });
    }
    // A known one with a bad body still says what is wrong with the body.
    const bad = await bus.request('admin.health', Buffer.from('not json'));
    expect(decodeJson(bad.data)).toEqual({ error: { code: 'bad_request', message: 'body is not valid JSON' } });
  });

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
    // Over `tables.<t>.compact` the error carries a wire code, not the internal one.
    await expect(requestJson(bus, 'tables.alpha.compact', { force: true })).rejects.toMatchObject({ wireCode: 'internal' });
    fs.heal();
    await bus.flush();
    const failed = events.filter((e) => e.subject === 'backups.compaction_failed');
    expect(failed).toHaveLength(2);
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

  test('maintenance - a stop during a scheduled backup cancels it: nothing kept or recorded, and the run is due again at the next start', async () => {
    const fs = new FaultyFs();
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1, 0, 0, 0));
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { clock, fs });
    await fill('alpha', 20);
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed
    // Nothing else writes through the owners' file access now: the next write is the backup's copy.
    const gate = fs.hold('write');
    clock.increment(0); // the first-ever backup is due at once
    await within(gate.reached, "the backup's first write");
    const stopped = toPromise(actor!);
    actor!.send({ type: 'STOP' });
    // The write in flight finishes; the backup then sees the stop and gives up.
    gate.release();
    await within(stopped, 'the supervisor to stop');
    actor = undefined;
    await bus.flush();
    const dir = path.join(config.backupDir, 'alpha');
    expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
    expect(events.filter((e) => e.subject.startsWith('backups.backup'))).toEqual([]);

    // Not recorded as run: the next start backs the table up at once.
    const clock2 = new SimulatedClock();
    clock2.set(Date.UTC(2026, 0, 1, 0, 10, 0));
    await start(config, { clock: clock2 });
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: unknown[] };
    expect(history.entries).toEqual([]);
    clock2.increment(0);
    await until(() => count('backup_complete') === 1, 'the backup after the restart');
    expect(backupFiles(config, 'alpha')).toHaveLength(1);
  });

  /**
   * Sends `subject`, holds its first write (nothing else writes through `fs`
   * meanwhile), stops the supervisor while it is held, then lets it go.
   * Resolves with the answer once the supervisor has stopped.
   */
  async function stopDuringRequest(fs: FaultyFs, subject: string, body: unknown): Promise<{ results: any[] }> {
    const gate = fs.hold('write');
    const reply = requestJson(bus, subject, body, { timeoutMs: 20_000 }) as Promise<{ results: any[] }>;
    await within(gate.reached, `the first write of ${subject}`);
    const stopped = toPromise(actor!);
    actor!.send({ type: 'STOP' });
    gate.release();
    const answer = await within(reply, `the answer to ${subject}`);
    await within(stopped, 'the supervisor to stop');
    actor = undefined;
    return answer;
  }

  test('maintenance - a stop during a backup asked for over the bus answers it as failed (TABLE_CLOSED), records and publishes that, and keeps nothing', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { fs });
    await fill('alpha', 20);
    const answer = await stopDuringRequest(fs, 'admin.backup.alpha', {}); // held at the backup's copy
    expect(answer.results).toEqual([expect.objectContaining({ table: 'alpha', status: 'failed', error: expect.objectContaining({ code: 'TABLE_CLOSED' }) })]);
    await bus.flush();
    expect(count('backup_failed')).toBe(1);
    const dir = path.join(config.backupDir, 'alpha');
    expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
    await start(config);
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: any[] };
    expect(history.entries).toEqual([expect.objectContaining({ kind: 'backup', table: 'alpha', result: 'failed', trigger: 'manual' })]);
  });

  test('maintenance - a stop during a compaction asked for over the bus answers it as failed (TABLE_CLOSED) after one attempt, and leaves the old file', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { fs });
    await fill('alpha', 20, 2);
    const answer = await stopDuringRequest(fs, 'admin.compact.alpha', { force: true }); // held at the new file's header
    expect(answer.results).toEqual([expect.objectContaining({ table: 'alpha', status: 'error', attempts: 1, error: expect.objectContaining({ code: 'TABLE_CLOSED' }) })]);
    expect(readdirSync(config.dataDir).filter((f) => f.startsWith('alpha'))).toEqual(['alpha.tkt']);
    await start(config);
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k7' })).toEqual({ found: true, value: { r: 1, i: 7 } });
  });

  /** Makes the maintenance actor's `receive` throw, as a bug in it would (an event whose reading throws), and waits until the supervisor has seen it. */
  async function crashMaintenanceActor(a: SupervisorRef): Promise<void> {
    const poisoned = { type: 'OWNER_STATE', table: 'alpha', state: 'serving' } as Record<string, unknown>;
    Object.defineProperty(poisoned, 'restarts', {
      get: () => {
        throw new Error('injected fault in the maintenance actor');
      },
    });
    a.getSnapshot().children.maintenance!.send(poisoned as never);
    await within(waitFor(a, (s) => s.context.helpers.maintenance.restarts.length === 1), 'the crash to be noticed');
  }

  test('maintenance - a corruption report held while the actor is down is answered when the service stops', async () => {
    const clock = new SimulatedClock();
    const config = configFor(tmp.dir, ['alpha']);
    const a = await start(config, { clock });
    await crashMaintenanceActor(a); // the clock stays put: no restart yet
    const asked = requestJson(bus, 'tables.alpha.corruption', { reason: 'suspect disk' }, { timeoutMs: 20_000 });
    await within(waitFor(a, (s) => s.context.heldReports.length === 1), 'the report to be held');
    a.send({ type: 'STOP' });
    await expect(asked).rejects.toMatchObject({ wireCode: 'unavailable' });
    await within(toPromise(a), 'the supervisor to stop');
  });

  test('maintenance - a recovery under way when the actor crashes is finished once, by the restarted actor', async () => {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1, 0, 0, 0));
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    const a = await start(config, { clock, fs });
    await fill('alpha', 10);
    // The owner's close, the recovery's first step, is held while the actor crashes.
    const close = fs.hold('close');
    const asked = requestJson(bus, 'tables.alpha.corruption', { reason: 'suspect disk' }, { timeoutMs: 20_000 });
    await close.reached;
    await crashMaintenanceActor(a);
    clock.increment(1000); // past the restart backoff
    await within(waitFor(a, (s) => s.children.maintenance?.getSnapshot().status === 'active'), 'the restart');
    close.release();
    await expect(asked).rejects.toMatchObject({ wireCode: 'unavailable' });
    await until(() => count('recovery_complete') === 1, 'the recovery');
    await within(waitFor(a, (s) => s.context.owners.alpha.state === 'serving' && !s.context.owners.alpha.recovering), 'alpha to serve');
    await bus.flush();
    expect(count('recovery_failed')).toBe(0);
    expect(events.find((e) => e.subject === 'backups.recovery_complete')!.body).toMatchObject({ table: 'alpha', recordsLost: 0, liveKeys: 10 });
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; result: string }[] };
    expect(history.entries.filter((e) => e.kind === 'recovery').map((e) => e.result)).toEqual(['ok']);
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k9' })).toEqual({ found: true, value: { r: 0, i: 9 } });
  });

  test('maintenance - an actor that crashes after its start leaves no schedule or subscription behind: the restarted one runs alone', async () => {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1, 0, 0, 0));
    const config = configFor(tmp.dir, ['alpha']);
    const a = await start(config, { clock });
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed
    clock.increment(0);
    await until(() => count('backup_complete') === 1, 'the first backup');
    await nextBackupIs('2026-01-01T01:00:00.000Z');
    await crashMaintenanceActor(a);
    clock.increment(1000); // past the restart backoff
    await within(waitFor(a, (s) => s.children.maintenance?.getSnapshot().status === 'active'), 'the restart');
    await nextBackupIs('2026-01-01T01:00:00.000Z');
    // The next run is made once, by the restarted actor: the crashed one's
    // schedule would start a second backup at the same time, which the table
    // refuses (a conflict, recorded as failed).
    clock.increment(3_600_000);
    await until(() => count('backup_complete') === 2, 'the second backup');
    await nextBackupIs('2026-01-01T02:00:00.000Z');
    await bus.flush();
    expect(count('backup_failed')).toBe(0);
    expect(count('backup_complete')).toBe(2);
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; result: string }[] };
    expect(history.entries.map((e) => [e.kind, e.result])).toEqual([
      ['backup', 'ok'],
      ['backup', 'ok'],
    ]);
    // One actor takes admin requests: a second subscriber would run this backup twice (or fail one as a conflict).
    await requestJson(bus, 'admin.backup.alpha', {});
    await requestJson(bus, 'admin.health', {}); // a round trip after it
    await bus.flush();
    expect([count('backup_complete'), count('backup_failed')]).toEqual([3, 0]);
    const after = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; result: string; trigger: string }[] };
    expect(after.entries.map((e) => [e.kind, e.result, e.trigger])).toEqual([
      ['backup', 'ok', 'manual'],
      ['backup', 'ok', 'scheduled'],
      ['backup', 'ok', 'scheduled'],
    ]);
  });

  test('maintenance - a run of a crashed actor goes no further than the table it was on', async () => {
    const fs = new FaultyFs();
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1, 0, 0, 0));
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    const a = await start(config, { clock, fs });
    await fill('alpha', 20);
    await fill('beta', 20);
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed
    const gate = fs.hold('write'); // alpha's backup's first write: the run holds there
    clock.increment(0);
    await within(gate.reached, "alpha's backup");
    await crashMaintenanceActor(a);
    gate.release();
    // The crashed actor's run ends with alpha: beta is left to the restarted actor.
    clock.increment(1000);
    await within(waitFor(a, (s) => s.children.maintenance?.getSnapshot().status === 'active'), 'the restart');
    await requestJson(bus, 'admin.health', {});
    clock.increment(0); // the restarted actor's first run: nothing was recorded as run
    await until(() => events.some((e) => e.subject === 'backups.backup_complete' && e.body.tables.some((t: { table: string }) => t.table === 'beta')), "beta's backup");
    await bus.flush();
    expect(count('backup_failed')).toBe(0);
    // The restarted actor found alpha still busy with the crashed actor's backup: alpha waits for a retry.
    expect(backupFiles(config, 'alpha')).toHaveLength(1);
    clock.increment(1000);
    await until(() => backupFiles(config, 'alpha').length === 2, "alpha's backup by the restarted actor");
    await bus.flush();
    expect(count('backup_failed')).toBe(0);
    // beta was backed up once: by the restarted actor, not by the crashed one's run too.
    expect(backupFiles(config, 'beta')).toHaveLength(1);
  });

  const iso = (ms: number) => new Date(ms).toISOString();
  const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);
  const tick = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };

  test('maintenance - a scheduled run that falls due while the table is still opening runs once it serves, and only then counts', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const fs = new FaultyFs();
    const opening = fs.hold('open'); // the table file's open: the owner stays in `opening`
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { clock, fs, noWait: true });
    await opening.reached;
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed
    clock.increment(0); // the first-ever backup falls due while the table opens
    await tick();
    expect(actor!.getSnapshot().context.owners.alpha.state).toBe('opening');
    opening.release();
    await until(() => count('backup_complete') === 1, 'the deferred first backup');
    await nextBackupIs(iso(T0 + HOUR)); // recorded only now
    expect(count('backup_failed')).toBe(0);
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; result: string; trigger: string }[] };
    expect(history.entries.map((e) => [e.kind, e.result, e.trigger])).toEqual([['backup', 'ok', 'scheduled']]);
    expect(backupFiles(config, 'alpha')).toHaveLength(1);
  });

  test('maintenance - after a restart that missed runs, the backup, the compaction and a cron scrub each run once, at once', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const config = configFor(tmp.dir, ['alpha'], { scrub: { cron: '0 * * * *' } });
    await start(config, { clock });
    await requestJson(bus, 'admin.health', {});
    clock.increment(0);
    await until(() => count('backup_complete') === 1, 'the first backup');
    await nextBackupIs(iso(T0 + HOUR));
    const before = (await requestJson(bus, 'admin.health', {})) as { nextRuns: Record<string, string> };
    expect(before.nextRuns).toEqual({ backup: iso(T0 + HOUR), compaction: iso(T0 + 6 * HOUR), scrub: iso(T0 + HOUR) });
    await stop();

    // Down for seven hours (restarted each time before a run fell due, the compaction would never have run).
    const clock2 = new SimulatedClock();
    clock2.set(T0 + 7 * HOUR);
    events = [];
    await start(config, { clock: clock2 });
    const due = (await requestJson(bus, 'admin.health', {})) as { nextRuns: Record<string, string> };
    expect(due.nextRuns).toEqual({ backup: iso(T0 + 7 * HOUR), compaction: iso(T0 + 7 * HOUR), scrub: iso(T0 + 7 * HOUR) });
    clock2.increment(0);
    await until(() => count('backup_complete') === 1 && count('compaction_complete') === 1, 'the missed runs');
    await nextRunIs('compaction', iso(T0 + 13 * HOUR));
    await nextRunIs('backup', iso(T0 + 8 * HOUR));
    await nextRunIs('scrub', iso(T0 + 8 * HOUR));
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.tables[0].scrub).toMatchObject({ at: iso(T0 + 7 * HOUR) });
    expect(health.tables[0].lastCompaction).toMatchObject({ kind: 'compaction', table: 'alpha', result: 'skipped', trigger: 'scheduled' });
    await bus.flush();
    expect([count('backup_complete'), count('compaction_complete')]).toEqual([1, 1]);
  });

  test('maintenance - backups take their time from the injected clock; two in the same millisecond both succeed', async () => {
    const clock = new SimulatedClock();
    clock.set(T0 + 10 * HOUR);
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { clock });
    await fill('alpha', 5);
    const a = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    const b = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect([a.results[0].status, b.results[0].status]).toEqual(['ok', 'ok']);
    expect(a.results[0].file).toBe('alpha-20260101T100000000Z-g1');
    // The second is taken 1 ms after the first, so it sorts after it.
    expect(b.results[0].file).toBe('alpha-20260101T100000001Z-g1');
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.tables[0].lastBackup).toMatchObject({ at: iso(T0 + 10 * HOUR + 1), file: b.results[0].file, verified: true });
    expect(health.tables[0].backups).toBe(2);
  });

  test('maintenance - retention never deletes the last backup that verifies, even when newer-looking ones have rotted', async () => {
    const clock = new SimulatedClock();
    clock.set(T0 + 10 * HOUR);
    const config = configFor(tmp.dir, ['alpha']); // keep 2
    await start(config, { clock });
    await fill('alpha', 5);
    await requestJson(bus, 'admin.backup.alpha', {});
    await requestJson(bus, 'admin.backup.alpha', {});
    await stop();
    // Both rot on disk; the clock is then set back ten hours (a wrong RTC), so the next backup sorts oldest.
    for (const f of backupFiles(config, 'alpha')) writeFileSync(path.join(config.backupDir, 'alpha', f), 'rotted');
    // A backup cut short while the clock ran ahead left its partial copy, named after both.
    const cutShort = path.join(config.backupDir, 'alpha', 'alpha-20260101T110000000Z-g1.tkt.partial');
    writeFileSync(cutShort, 'partial');
    const clock2 = new SimulatedClock();
    clock2.set(T0);
    await start(config, { clock: clock2 });
    const reply = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    // Timed after the newest backup despite the clock, so it is the newest, and the one that verifies is kept.
    expect(reply.results[0]).toMatchObject({ status: 'ok', pruned: 1, file: 'alpha-20260101T100000002Z-g1' });
    expect(backupFiles(config, 'alpha')).toEqual(
      ['alpha-20260101T100000001Z-g1', 'alpha-20260101T100000002Z-g1'].map((n) => `${n}.tkt`).sort(),
    );
    // No backup of the table runs while pruning, so it is removed although it is named after the newest backup.
    expect(existsSync(cutShort)).toBe(false);
  });

  test('maintenance - a backup whose pruning fails is still a success; the failure is reported beside it', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']); // keep 2
    await start(config, { fs });
    await fill('alpha', 5);
    await requestJson(bus, 'admin.backup.alpha', {});
    await requestJson(bus, 'admin.backup.alpha', {});
    fs.failOn({ op: 'unlink', nth: 1, code: 'EIO' });
    const reply = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(reply.results[0]).toMatchObject({ table: 'alpha', status: 'ok', pruned: 0, pruneError: { code: expect.any(String), message: expect.stringContaining('EIO') } });
    expect(backupFiles(config, 'alpha')).toHaveLength(3);
    await bus.flush();
    expect(count('backup_failed')).toBe(0);
    const complete = events.filter((e) => e.subject === 'backups.backup_complete').at(-1)!;
    expect(complete.body.tables[0]).toMatchObject({ table: 'alpha', file: reply.results[0].file, pruneError: { code: expect.any(String) } });
    const history = (await requestJson(bus, 'admin.history', { limit: 1 })) as { entries: any[] };
    expect(history.entries[0]).toMatchObject({ kind: 'backup', result: 'ok', detail: { pruneError: { code: expect.any(String) } } });
    // The next backup prunes again.
    const next = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(next.results[0]).toMatchObject({ status: 'ok', pruned: 2 });
    expect(backupFiles(config, 'alpha')).toHaveLength(2);
  });

  test('maintenance - a backup whose copy does not verify is published as backup_failed and leaves nothing', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, { fs });
    await fill('alpha', 20);
    fs.failOn({ op: 'write', nth: 1, corrupt: true }); // the copy's first write is silently changed
    const reply = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(reply.results[0]).toMatchObject({ table: 'alpha', status: 'failed', error: { code: 'BACKUP_FAILED' } });
    expect(fs.fired).toHaveLength(1);
    await bus.flush();
    const failed = events.filter((e) => e.subject === 'backups.backup_failed');
    expect(failed.map((e) => e.body)).toEqual([expect.objectContaining({ table: 'alpha', trigger: 'manual', error: expect.objectContaining({ code: 'BACKUP_FAILED' }) })]);
    expect(count('backup_complete')).toBe(0);
    const dir = path.join(config.backupDir, 'alpha');
    expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.tables[0]).toMatchObject({ lastBackup: null, backups: 0 });
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: any[] };
    expect(history.entries).toEqual([expect.objectContaining({ kind: 'backup', table: 'alpha', result: 'failed', trigger: 'manual' })]);
  });

  test('maintenance - a blocked backup of one table holds up neither the compaction of another nor its requests', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config, { fs });
    await fill('alpha', 20);
    await fill('beta', 20, 3);
    const gate = fs.hold('fdatasync'); // the next fdatasync is alpha's backup's
    let settled = false;
    const backup = (requestJson(bus, 'admin.backup.alpha', {}, { timeoutMs: 60_000 }) as Promise<{ results: any[] }>).finally(() => {
      settled = true;
    });
    await gate.reached;
    const compact = (await requestJson(bus, 'admin.compact.beta', {})) as { results: any[] };
    expect(compact.results[0]).toMatchObject({ table: 'beta', status: 'compacted' });
    await requestJson(bus, 'tables.beta.put', { key: 'new', value: 1 });
    expect(await requestJson(bus, 'tables.beta.get', { key: 'new' })).toEqual({ found: true, value: 1 });
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k1' })).toEqual({ found: true, value: { r: 0, i: 1 } });
    expect(settled).toBe(false); // alpha's backup is still held
    gate.release();
    expect((await backup).results[0]).toMatchObject({ table: 'alpha', status: 'ok' });
  });

  test('maintenance - events, history and health carry bytes, durations and per-table results', async () => {
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config);
    await fill('alpha', 10, 4);
    const backup = (await requestJson(bus, 'admin.backup', {})) as { results: any[] };
    const compact = (await requestJson(bus, 'admin.compact', {})) as { results: any[] };
    await bus.flush();
    const size = (table: string, file: string) => statSync(path.join(config.backupDir, table, `${file}.tkt`)).size;
    const bc = events.find((e) => e.subject === 'backups.backup_complete')!.body;
    expect(bc.tables).toEqual(
      backup.results.map((r) => ({ table: r.table, bytes: size(r.table, r.file), records: 10 * Number(r.table === 'alpha'), file: r.file, durationMs: expect.any(Number), pruned: 0 })),
    );
    expect(bc.bytes).toBe(bc.tables[0].bytes + bc.tables[1].bytes);
    expect(bc).toMatchObject({ trigger: 'manual', durationMs: expect.any(Number), failed: [] });
    const cc = events.find((e) => e.subject === 'backups.compaction_complete')!.body;
    expect(cc.results).toEqual(compact.results);
    expect(cc.results[0]).toMatchObject({ table: 'alpha', status: 'compacted', attempts: 1, durationMs: expect.any(Number), bytesBefore: expect.any(Number), bytesAfter: expect.any(Number) });
    expect(cc.results[0].bytesAfter).toBeLessThan(cc.results[0].bytesBefore);
    expect(cc.results[1]).toMatchObject({ table: 'beta', status: 'skipped', fragmentation: 0 });
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: any[] };
    const alphaBackup = history.entries.find((e) => e.kind === 'backup' && e.table === 'alpha');
    expect(alphaBackup).toMatchObject({ result: 'ok', bytes: size('alpha', backup.results[0].file), durationMs: expect.any(Number), detail: { file: backup.results[0].file, records: 10 } });
    const alphaCompaction = history.entries.find((e) => e.kind === 'compaction' && e.table === 'alpha');
    expect(alphaCompaction).toMatchObject({ result: 'ok', bytes: cc.results[0].bytesAfter, detail: { bytesBefore: cc.results[0].bytesBefore, attempts: 1 } });
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.tables.map((t: any) => [t.table, t.lastCompaction?.result, t.lastBackup?.file])).toEqual([
      ['alpha', 'ok', backup.results[0].file],
      ['beta', 'skipped', backup.results[1].file],
    ]);
    expect(health.tables[0].lastCompaction).toEqual(alphaCompaction);
  });

  test('maintenance - a history table that cannot be opened is quarantined and started fresh; maintenance goes on', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    const dir = path.join(config.dataDir, '.tablekeeper');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'history.tkt'), Buffer.alloc(4096, 0xab));
    await start(config);
    const health = (await requestJson(bus, 'admin.health', {})) as any;
    expect(health.tables[0]).toMatchObject({ table: 'alpha', state: 'serving' });
    await bus.flush();
    const reset = events.filter((e) => e.subject === 'backups.corruption_detected');
    expect(reset.map((e) => e.body)).toEqual([expect.objectContaining({ table: '_history', source: 'open', quarantined: expect.stringContaining('_history-') })]);
    expect(existsSync(reset[0].body.quarantined)).toBe(true);
    const reply = (await requestJson(bus, 'admin.backup', {})) as { results: any[] };
    expect(reply.results[0].status).toBe('ok');
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: any[] };
    expect(history.entries).toHaveLength(1);
  });
});
