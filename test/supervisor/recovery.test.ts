import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import { decodeJson, InProcessBus, requestJson } from '../../bus';
import { tableFilePath } from '../../actors/table-owner';
import { NodeStoreFs, scanFile, type OpenMode, type ScannedRecord, type StoreFs } from '../../store';
import { loadConfig, type Config } from '../../supervisor/config';
import { journalDir, pendingJournals, quarantineDir, writeJournal } from '../../supervisor/recovery-journal';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { until, within } from '../helpers/wait';
import { fieldCheckingLogger } from '../helpers/log-fields';

// Every line logged is checked (at every level) for a field named twice.
const { logger: silent, repeats, warnings } = fieldCheckingLogger();
const HOUR = 3_600_000;

function configFor(dir: string, tables: string[]): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: path.join(dir, 'data') } });
  return {
    ...base,
    tables: tables.map((name) => ({ name, sync: 'always' as const, maxValueBytes: 4096 })),
    // The simulated clock never reaches these unless a test moves it.
    backup: { every: '24h', keep: 3 },
    compaction: { every: '24h', threshold: 0.1 },
    scrub: { every: '1h' },
  };
}

/** Every intact record of a table file, in file order. */
async function records(file: string): Promise<ScannedRecord[]> {
  const out: ScannedRecord[] = [];
  for await (const item of scanFile(file)) if (item.type === 'record') out.push(item);
  return out;
}

/** Overwrites bytes of a file in place (through its own descriptor, as a disk fault would). */
function damage(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Flips one byte of the value of the newest record of `key`. */
async function damageValueOf(file: string, key: string): Promise<void> {
  const rec = (await records(file)).filter((r) => r.key === key).at(-1);
  if (!rec) throw new Error(`no record of ${key}`);
  damage(file, rec.offset + rec.length - 2, Buffer.from([0x5a ^ 0xff]));
}

describe('recovery', () => {
  const tmp = useTempDir('tk-recover-');
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

  /** Starts the supervisor and waits until every table has settled (serving, or recovered to serving). */
  async function start(config: Config, clock = new SimulatedClock(), fs?: StoreFs): Promise<SupervisorRef> {
    actor = createActor(supervisorMachine, { input: { config, bus, logger: silent, clock, fs }, clock });
    actor.start();
    await within(requestJson(bus, 'admin.health', {}, { timeoutMs: 20_000 }), 'admin.health after the start'); // answered once the history is open and schedules armed
    return actor;
  }

  async function serving(table: string): Promise<void> {
    try {
      await within(waitFor(actor!, (s) => s.context.owners[table].state === 'serving' && !s.context.owners[table].recovering), `${table} to serve`);
    } catch (err) {
      // Say where the owner is, to tell a hang from a wrong turn.
      const { restarts, gaveUpAt, ...owner } = actor!.getSnapshot().context.owners[table];
      throw new Error(`${(err as Error).message}: owner ${JSON.stringify({ ...owner, restarts: restarts.length, gaveUpAt })}; last warnings:\n${warnings.join('\n')}`);
    }
  }

  const named = (name: string) => events.filter((e) => e.subject === `backups.${name}`);

  async function put(table: string, key: string, value: unknown): Promise<void> {
    await requestJson(bus, `tables.${table}.put`, { key, value });
  }

  async function get(table: string, key: string): Promise<unknown> {
    const reply = (await requestJson(bus, `tables.${table}.get`, { key })) as { found: boolean; value?: unknown };
    return reply.found ? reply.value : undefined;
  }

  async function fill(table: string, from: number, to: number, tag: string): Promise<void> {
    await Promise.all(Array.from({ length: to - from }, (_, i) => put(table, `k${from + i}`, { tag, i: from + i })));
  }

  test('recovery - a damaged record found by a read: the caller gets unavailable, the table is rebuilt from the backup plus every intact record', async () => {
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config);
    await Promise.all([serving('alpha'), serving('beta')]);
    await fill('alpha', 0, 50, 'old');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 50, 100, 'new');
    await fill('alpha', 0, 10, 'over');
    await requestJson(bus, 'tables.alpha.delete', { key: 'k20' });
    await fill('beta', 0, 5, 'b');
    const file = tableFilePath(config.dataDir, 'alpha');
    await damageValueOf(file, 'k60'); // written after the backup: truly gone
    await damageValueOf(file, 'k30'); // written before the backup: the backup still has it

    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k60' })).rejects.toMatchObject({ wireCode: 'unavailable' });
    await until(() => named('recovery_complete').length === 1, 'the recovery');
    await serving('alpha');

    const detected = named('corruption_detected');
    expect(detected).toHaveLength(1);
    expect(detected[0].body).toMatchObject({ table: 'alpha', source: 'read' });
    const done = named('recovery_complete')[0].body;
    expect(done).toMatchObject({ table: 'alpha', trigger: 'auto', status: 'recovered', verified: true, recordsLost: 1, lostKeys: ['k60'] });
    expect(done.backupUsed).toEqual(expect.any(String));
    expect(done.recordsFromBackup).toBeGreaterThan(0);
    expect(done.recordsFromDamaged).toBeGreaterThan(0);
    expect(events.findIndex((e) => e.subject === 'backups.corruption_detected')).toBeLessThan(
      events.findIndex((e) => e.subject === 'backups.recovery_complete'),
    );

    // Nothing intact was lost; the one damaged record written after the backup is gone, not wrong.
    expect(await get('alpha', 'k60')).toBeUndefined();
    expect(await get('alpha', 'k30')).toEqual({ tag: 'old', i: 30 });
    expect(await get('alpha', 'k5')).toEqual({ tag: 'over', i: 5 });
    expect(await get('alpha', 'k20')).toBeUndefined(); // deleted after the backup: not resurrected
    expect(await get('alpha', 'k99')).toEqual({ tag: 'new', i: 99 });
    expect(((await requestJson(bus, 'tables.alpha.stats', {})) as { records: number }).records).toBe(98);
    expect(await get('beta', 'k4')).toEqual({ tag: 'b', i: 4 });

    expect(readdirSync(quarantineDir(config.dataDir)).filter((f) => f.startsWith('alpha-'))).toHaveLength(1);
    const history = (await requestJson(bus, 'admin.history', {})) as { entries: { kind: string; table: string; result: string; trigger: string }[] };
    expect(history.entries.find((e) => e.kind === 'recovery')).toMatchObject({ table: 'alpha', result: 'ok', trigger: 'auto' });
    const health = (await requestJson(bus, 'admin.health', {})) as { tables: any[] };
    expect(health.tables.find((t) => t.table === 'alpha')).toMatchObject({ state: 'serving', recoveries: { count: 1, failed: 0 }, degraded: null });
  });

  test('recovery - damage a manual compaction finds is its reported error (no retry into the recovery), and the table is recovered', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 40, 'old');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 0, 40, 'new');
    await damageValueOf(tableFilePath(config.dataDir, 'alpha'), 'k7');
    const answer = (await requestJson(bus, 'admin.compact.alpha', { force: true })) as { results: any[] };
    expect(answer.results).toEqual([expect.objectContaining({ table: 'alpha', status: 'error', attempts: 1, error: expect.objectContaining({ code: 'TABLE_CORRUPT' }) })]);
    await until(() => named('recovery_complete').length === 1, 'the recovery');
    await serving('alpha');
    expect(named('corruption_detected')[0].body).toMatchObject({ table: 'alpha', source: 'maintenance' });
    // k7's newest record was damaged and is in no backup: gone, not wrong; the rest is intact.
    expect(named('recovery_complete')[0].body).toMatchObject({ status: 'recovered', lostKeys: ['k7'] });
    expect(await get('alpha', 'k8')).toEqual({ tag: 'new', i: 8 });
  });

  test('recovery - a backup that finds a damaged record in the table file starts the recovery, which rebuilds the table from the last backup', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 50, 'old');
    const first = (await requestJson(bus, 'admin.backup.alpha', {})) as { results: any[] };
    expect(first.results[0]).toMatchObject({ status: 'ok' });
    await fill('alpha', 50, 100, 'new');
    const file = tableFilePath(config.dataDir, 'alpha');
    await damageValueOf(file, 'k30'); // written before the backup: the backup still has it
    await damageValueOf(file, 'k70'); // written after it: truly gone

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

  test('recovery - a copy written wrong is a failed backup only: the table file is sound and keeps serving', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, undefined, fs);
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

  test('recovery - a table file that fails to open is recovered at start, and the other tables serve', async () => {
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config);
    await Promise.all([serving('alpha'), serving('beta')]);
    await fill('alpha', 0, 30, 'old');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 30, 40, 'new');
    await fill('beta', 0, 3, 'b');
    await stop();
    damage(tableFilePath(config.dataDir, 'alpha'), 0, Buffer.alloc(16)); // a zeroed header

    events = [];
    await start(config);
    await serving('beta');
    expect(await get('beta', 'k2')).toEqual({ tag: 'b', i: 2 });
    await until(() => named('recovery_complete').length === 1, 'the recovery');
    await serving('alpha');
    expect(named('corruption_detected')[0].body).toMatchObject({ table: 'alpha', source: 'open', offset: 0 });
    expect(named('recovery_complete')[0].body).toMatchObject({ table: 'alpha', recordsLost: 0, lostKeys: [] });
    for (let i = 0; i < 40; i++) expect(await get('alpha', `k${i}`)).toEqual({ tag: i < 30 ? 'old' : 'new', i });
  });

  test('recovery - a table file that keeps failing to open with an I/O error goes through the recovery cycle after the restart limit, not a restart loop', async () => {
    const config = { ...configFor(tmp.dir, ['alpha']), supervisor: { maxRestarts: 2, restartWindowMs: 60_000, requestTimeoutMs: 5_000 } };
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    await stop();
    const file = tableFilePath(config.dataDir, 'alpha');
    // Every open of this very file (its inode) fails, as a bad sector under its metadata would.
    const bad = statSync(file).ino;
    let failedOpens = 0;
    class BadFileFs extends NodeStoreFs {
      override open(f: string, mode: OpenMode): Promise<number> {
        if (f === file && existsSync(f) && statSync(f).ino === bad) {
          failedOpens++;
          return Promise.reject(Object.assign(new Error(`EIO: i/o error, open '${f}'`), { code: 'EIO' }));
        }
        return super.open(f, mode);
      }
    }
    events = [];
    const clock = new SimulatedClock();
    await start(config, clock, new BadFileFs());
    await waitFor(actor!, (s) => s.context.owners.alpha.restarts.length === 1 && s.context.owners.alpha.state === 'down');
    clock.increment(100);
    await waitFor(actor!, (s) => s.context.owners.alpha.restarts.length === 2 && s.context.owners.alpha.state === 'down');
    clock.increment(200); // the third failure reaches the limit
    await until(() => named('recovery_complete').length === 1, 'the recovery after the restart limit');
    await serving('alpha');
    expect(failedOpens).toBe(3);
    expect(named('corruption_detected')[0].body).toMatchObject({ table: 'alpha', source: 'open', reason: expect.stringMatching(/failed to open 3 times.*EIO/) });
    expect(named('recovery_complete')[0].body).toMatchObject({ table: 'alpha', recordsFromDamaged: 10, recordsLost: 0 });
    for (let i = 0; i < 10; i++) expect(await get('alpha', `k${i}`)).toEqual({ tag: 'x', i });
    expect(actor!.getSnapshot().context.owners.alpha.openRecoveryTried).toBeUndefined();
  });

  test('recovery - a table file that cannot be opened for lack of permission is left alone: only restarts, no recovery', async () => {
    const config = { ...configFor(tmp.dir, ['alpha']), supervisor: { maxRestarts: 2, restartWindowMs: 60_000, requestTimeoutMs: 5_000 } };
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 3, 'x');
    await stop();
    const file = tableFilePath(config.dataDir, 'alpha');
    class DeniedFs extends NodeStoreFs {
      override open(f: string, mode: OpenMode): Promise<number> {
        if (f === file) return Promise.reject(Object.assign(new Error(`EACCES: permission denied, open '${f}'`), { code: 'EACCES' }));
        return super.open(f, mode);
      }
    }
    events = [];
    const clock = new SimulatedClock();
    await start(config, clock, new DeniedFs());
    await waitFor(actor!, (s) => s.context.owners.alpha.restarts.length === 1 && s.context.owners.alpha.state === 'down');
    clock.increment(100);
    await waitFor(actor!, (s) => s.context.owners.alpha.restarts.length === 2 && s.context.owners.alpha.state === 'down');
    clock.increment(200); // the third failure reaches the limit: it waits a window instead of rebuilding
    await waitFor(actor!, (s) => s.context.owners.alpha.gaveUpAt !== undefined);
    expect(named('corruption_detected')).toHaveLength(0);
    expect(readdirSync(config.dataDir)).toContain('alpha.tkt');
    expect(existsSync(path.join(config.dataDir, 'quarantine')) ? readdirSync(path.join(config.dataDir, 'quarantine')) : []).toEqual([]);
  });

  test('recovery - a deleted table file is rebuilt from its latest backup at the next start', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 20, 'old');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 20, 25, 'new');
    await stop();
    rmSync(tableFilePath(config.dataDir, 'alpha'));

    events = [];
    await start(config);
    await until(() => named('recovery_complete').length === 1, 'the recovery');
    await serving('alpha');
    const done = named('recovery_complete')[0].body;
    expect(done).toMatchObject({ table: 'alpha', recordsFromBackup: 20, recordsFromDamaged: 0, quarantined: null });
    expect(await get('alpha', 'k19')).toEqual({ tag: 'old', i: 19 });
    expect(await get('alpha', 'k20')).toBeUndefined(); // only ever in the deleted file
  });

  test('recovery - a table file that vanished with no backup is corruption (degraded, critical), while a table never created starts empty quietly', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    expect(named('corruption_detected')).toHaveLength(0); // never created: a new, empty table
    await fill('alpha', 0, 5, 'x');
    await stop();
    rmSync(tableFilePath(config.dataDir, 'alpha')); // and no backup was ever taken

    events = [];
    await start(config);
    await until(() => named('recovery_failed').length === 1, 'the failed recovery');
    await serving('alpha');
    expect(named('corruption_detected')[0].body).toMatchObject({ table: 'alpha', source: 'open', reason: expect.stringMatching(/missing/) });
    expect(named('recovery_failed')[0].body).toMatchObject({ table: 'alpha', degraded: true, quarantined: null });
    const health = (await requestJson(bus, 'admin.health', {})) as { status: string; tables: any[] };
    expect(health.status).toBe('degraded');
    expect(health.tables[0].degraded).toMatchObject({ reason: expect.stringMatching(/missing/) });
    expect(await get('alpha', 'k1')).toBeUndefined();
  });

  test('recovery - a file deleted while the table serves is found by the scheduled scrub, and nothing is lost', async () => {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1));
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, clock);
    await serving('alpha');
    await fill('alpha', 0, 10, 'old');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 10, 20, 'new');
    rmSync(tableFilePath(config.dataDir, 'alpha'));

    clock.increment(HOUR);
    await until(() => named('recovery_complete').length === 1, 'the recovery after the scrub');
    await serving('alpha');
    expect(named('corruption_detected')[0].body).toMatchObject({ table: 'alpha', source: 'scrub' });
    expect(named('recovery_complete')[0].body).toMatchObject({ recordsLost: 0 });
    for (let i = 0; i < 20; i++) expect(await get('alpha', `k${i}`)).toEqual({ tag: i < 10 ? 'old' : 'new', i });
    const health = (await requestJson(bus, 'admin.health', {})) as { tables: any[] };
    expect(health.tables[0].scrub).toMatchObject({ fileMissing: true });
  });

  test('recovery - a clean scheduled scrub reports what it checked and changes nothing', async () => {
    const clock = new SimulatedClock();
    clock.set(Date.UTC(2026, 0, 1));
    const config = configFor(tmp.dir, ['alpha']);
    await start(config, clock);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    await requestJson(bus, 'admin.health', {}); // answered once the schedules are armed: only then may the clock move
    clock.increment(HOUR);
    let health: { tables: any[] } = { tables: [] };
    for (let i = 0; i < 2000 && health.tables[0]?.scrub == null; i++) {
      health = (await requestJson(bus, 'admin.health', {})) as { tables: any[] };
      if (health.tables[0]?.scrub == null) await new Promise((r) => setTimeout(r, 10));
    }
    expect(health.tables[0].scrub).toMatchObject({ records: 10, damagedRanges: 0, fileMissing: false });
    expect(health.tables[0].state).toBe('serving');
    expect(named('corruption_detected')).toHaveLength(0);
  });

  test('recovery - with nothing usable the table starts empty and degraded until an operator clears it', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    await stop();
    const file = tableFilePath(config.dataDir, 'alpha');
    damage(file, 0, Buffer.alloc(statSync(file).size)); // every byte zeroed, and no backup exists

    events = [];
    await start(config);
    await until(() => named('recovery_failed').length === 1, 'the failed recovery');
    await serving('alpha');
    expect(named('recovery_failed')[0].body).toMatchObject({ table: 'alpha', degraded: true });
    expect(await get('alpha', 'k1')).toBeUndefined();
    await put('alpha', 'fresh', 1);
    expect(await get('alpha', 'fresh')).toBe(1);
    const quarantined = readdirSync(quarantineDir(config.dataDir));
    expect(quarantined).toHaveLength(1);
    let health = (await requestJson(bus, 'admin.health', {})) as { status: string; tables: any[] };
    expect(health.status).toBe('degraded');
    expect(health.tables[0].degraded).toMatchObject({ quarantined: path.join(quarantineDir(config.dataDir), quarantined[0]) });

    await stop(); // the mark survives a restart
    await start(config);
    await serving('alpha');
    health = (await requestJson(bus, 'admin.health', {})) as { status: string; tables: any[] };
    expect(health.tables[0].degraded).not.toBeNull();
    const cleared = (await requestJson(bus, 'admin.clear.alpha', {})) as { cleared: unknown };
    expect(cleared.cleared).not.toBeNull();
    health = (await requestJson(bus, 'admin.health', {})) as { status: string; tables: any[] };
    expect(health).toMatchObject({ status: 'ok' });
    expect(health.tables[0].degraded).toBeNull();
    await expect(requestJson(bus, 'admin.clear', {})).rejects.toMatchObject({ wireCode: 'bad_request' });
    await expect(requestJson(bus, 'admin.clear.nosuch', {})).rejects.toMatchObject({ wireCode: 'not_found' });
  });

  test('recovery - admin.restore rolls a table back to its latest verified backup, exactly, and keeps the replaced file', async () => {
    const config = configFor(tmp.dir, ['alpha', 'beta']);
    await start(config);
    await Promise.all([serving('alpha'), serving('beta')]);
    await expect(requestJson(bus, 'admin.restore.alpha', {})).rejects.toMatchObject({ wireCode: 'not_found' }); // no backup yet
    expect(await get('alpha', 'k0')).toBeUndefined(); // and nothing was touched: still serving
    await fill('alpha', 0, 10, 'kept');
    await requestJson(bus, 'admin.backup.alpha', {});
    await fill('alpha', 0, 15, 'bad');
    const reply = (await requestJson(bus, 'admin.restore.alpha', {})) as any;
    expect(reply).toMatchObject({ table: 'alpha', mode: 'restore', trigger: 'manual', status: 'restored', liveKeys: 10, verified: true });
    await serving('alpha');
    for (let i = 0; i < 10; i++) expect(await get('alpha', `k${i}`)).toEqual({ tag: 'kept', i });
    expect(await get('alpha', 'k12')).toBeUndefined();
    expect(existsSync(reply.quarantined)).toBe(true);
    expect(named('recovery_complete').at(-1)!.body).toMatchObject({ table: 'alpha', trigger: 'manual', mode: 'restore' });
    expect(named('corruption_detected')).toHaveLength(0);
    await expect(requestJson(bus, 'admin.restore', {})).rejects.toMatchObject({ wireCode: 'bad_request' });
    await expect(requestJson(bus, 'admin.restore.nosuch', {})).rejects.toMatchObject({ wireCode: 'not_found' });
  });

  test('recovery - a stop while a recovery takes its owner down ends the run before the supervisor stops; the next start finishes it', async () => {
    const fs = new FaultyFs();
    const config = configFor(tmp.dir, ['alpha']);
    const a = await start(config, undefined, fs);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    // The owner's close, the recovery's first step, is held: the stop comes in the middle of the run.
    const close = fs.hold('close');
    const asked = requestJson(bus, 'tables.alpha.corruption', { reason: 'suspect disk' }, { timeoutMs: 20_000 });
    await close.reached;
    a.send({ type: 'STOP' });
    close.release();
    // Answered (not left to time out), and by the time the supervisor is done, nothing of the run goes on.
    await expect(asked).rejects.toMatchObject({ wireCode: 'unavailable' });
    await within(toPromise(a), 'the supervisor to stop');
    actor = undefined;
    expect(pendingJournals(config.dataDir, ['alpha'])).toHaveLength(1);
    expect(existsSync(tableFilePath(config.dataDir, 'alpha'))).toBe(true);
    expect(named('recovery_failed')).toEqual([]);
    // The next start finishes the run from its journal, and nothing is lost.
    await start(config);
    await until(() => named('recovery_complete').length === 1, 'the resumed recovery');
    await serving('alpha');
    expect(named('recovery_complete')[0].body).toMatchObject({ table: 'alpha', recordsLost: 0, liveKeys: 10 });
    expect(await get('alpha', 'k9')).toEqual({ tag: 'x', i: 9 });
  });

  test('recovery - an operator corruption request is answered once the table serves again, with nothing lost', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    const reply = (await requestJson(bus, 'tables.alpha.corruption', { reason: 'suspect disk' }, { timeoutMs: 20_000 })) as any;
    expect(reply).toMatchObject({ table: 'alpha', trigger: 'manual', status: 'recovered', recordsLost: 0, recordsFromDamaged: 10, liveKeys: 10 });
    expect(named('corruption_detected')[0].body).toMatchObject({ source: 'operator', reason: 'suspect disk' });
    expect(await get('alpha', 'k9')).toEqual({ tag: 'x', i: 9 });
    await expect(requestJson(bus, 'tables.alpha.corruption', {})).rejects.toMatchObject({ wireCode: 'bad_request' });
  });

  test('recovery - a failed recovery is reported, leaves the table unavailable with the journal kept, and is redone at the next start', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config);
    await serving('alpha');
    await fill('alpha', 0, 10, 'x');
    // A file where the quarantine folder should be: moving the table file there fails.
    writeFileSync(quarantineDir(config.dataDir), 'in the way');
    await expect(requestJson(bus, 'tables.alpha.corruption', { reason: 'test' }, { timeoutMs: 20_000 })).rejects.toMatchObject({ wireCode: 'internal' });
    await until(() => named('recovery_failed').length === 1, 'the failed recovery');
    expect(named('recovery_failed')[0].body).toMatchObject({ table: 'alpha', degraded: false, error: { code: 'RECOVERY_FAILED' } });
    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k1' })).rejects.toMatchObject({ wireCode: 'unavailable' });
    expect(readdirSync(journalDir(config.dataDir))).toEqual(['alpha.json']);
    await stop();

    rmSync(quarantineDir(config.dataDir));
    events = [];
    await start(config);
    await until(() => named('recovery_complete').length === 1, 'the redone recovery');
    await serving('alpha');
    expect(await get('alpha', 'k9')).toEqual({ tag: 'x', i: 9 });
    expect(readdirSync(journalDir(config.dataDir))).toEqual([]);
  });

  describe.each([
    ['the journal was written', 'journal'],
    ['the file was moved to quarantine', 'quarantined'],
    ['the rebuilt file was renamed into place', 'rebuilt'],
  ])('a crash after %s', (_what, step) => {
    test(`recovery - the interrupted run is finished at the next start (${step})`, async () => {
      const config = configFor(tmp.dir, ['alpha']);
      await start(config);
      await serving('alpha');
      await fill('alpha', 0, 10, 'old');
      await requestJson(bus, 'admin.backup.alpha', {});
      await fill('alpha', 10, 20, 'new');
      await stop();

      // The disk as the interrupted run left it.
      const file = tableFilePath(config.dataDir, 'alpha');
      const quarantine = path.join(quarantineDir(config.dataDir), 'alpha-crashed.tkt');
      await writeJournal(config.dataDir, { table: 'alpha', mode: 'recover', trigger: 'auto', reason: 'test', source: 'scrub', quarantine, startedAt: new Date().toISOString() });
      if (step !== 'journal') {
        mkdirSync(quarantineDir(config.dataDir), { recursive: true });
        renameSync(file, quarantine);
      }
      if (step === 'rebuilt') writeFileSync(file, readFileSync(quarantine));

      events = [];
      await start(config);
      await until(() => named('recovery_complete').length === 1, 'the finished recovery');
      await serving('alpha');
      expect(named('recovery_complete')[0].body).toMatchObject({ table: 'alpha', recordsLost: 0 });
      // The resumed run's events stay paired: its corruption_detected comes first.
      expect(named('corruption_detected').map((e) => e.body)).toEqual([expect.objectContaining({ table: 'alpha', source: 'scrub', reason: 'test', resumed: true })]);
      expect(events.findIndex((e) => e.subject === 'backups.corruption_detected')).toBeLessThan(events.findIndex((e) => e.subject === 'backups.recovery_complete'));
      for (let i = 0; i < 20; i++) expect(await get('alpha', `k${i}`)).toEqual({ tag: i < 10 ? 'old' : 'new', i });
      expect(existsSync(quarantine)).toBe(true);
      expect(readdirSync(journalDir(config.dataDir))).toEqual([]);
    });
  });

  test('recovery - random damage through the whole cycle never serves a wrong value and loses only damaged records', async () => {
    const config = configFor(tmp.dir, ['alpha']);
    await start(config); // a simulated clock that stays at 0: every round runs at the same time
    await serving('alpha');
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const history = new Map<string, unknown[]>(); // every value a key ever had
    const expected = new Map<string, unknown>(); // what a key must read back: its newest value, unless its record was damaged
    const write = async (key: string, value: unknown) => {
      await put('alpha', key, value);
      history.set(key, [...(history.get(key) ?? []), value]);
      expected.set(key, value);
    };
    const file = tableFilePath(config.dataDir, 'alpha');
    const quarantined = new Set<string>();
    let lostInAll = 0;
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 30; i++) await write(`k${rand(40)}`, { round, i });
      if (round % 3 === 0) await requestJson(bus, 'admin.backup.alpha', {});
      const newest = new Map<string, ScannedRecord>();
      for (const r of await records(file)) newest.set(r.key, r);
      const size = statSync(file).size;
      const at = 16 + rand(size - 16);
      damage(file, at, Buffer.from([rand(256) ^ 0xa5, rand(256)]));
      const damagedSha = createHash('sha256').update(readFileSync(file)).digest('hex');
      // Keys whose newest record the two bytes touched: only these may lose their newest value.
      const hit = new Set([...newest].filter(([, r]) => r.offset < at + 2 && at < r.offset + r.length).map(([key]) => key));
      const before = named('recovery_complete').length + named('recovery_failed').length;
      // Ask for the recovery the way a scrub would, then read everything back.
      const outcome = (await requestJson(bus, 'tables.alpha.corruption', { reason: `round ${round}`, source: 'scrub' }, { timeoutMs: 20_000 })) as any;
      await until(() => named('recovery_complete').length + named('recovery_failed').length > before, `recovery ${round}`);
      await serving('alpha');
      expect(outcome).toMatchObject({ status: 'recovered', verified: true });
      expect(outcome.recordsLost).toBeLessThanOrEqual(2); // two bytes touch at most two records
      lostInAll += outcome.recordsLost;
      // This round's own table file, and no other run's, went to quarantine.
      expect(quarantined.has(outcome.quarantined)).toBe(false);
      quarantined.add(outcome.quarantined);
      expect(createHash('sha256').update(readFileSync(outcome.quarantined)).digest('hex')).toBe(damagedSha);
      for (const [key, values] of history) {
        const got = await get('alpha', key);
        if (got !== undefined) expect(values).toContainEqual(got); // never a value the key did not have
        if (hit.has(key)) expected.set(key, got);
        else expect({ key, got }).toEqual({ key, got: expected.get(key) }); // an undamaged key keeps its newest value
      }
    }
    expect(named('recovery_failed')).toHaveLength(0);
    expect(readdirSync(quarantineDir(config.dataDir)).sort()).toEqual([...quarantined].map((f) => path.basename(f)).sort());
    expect(lostInAll).toBeGreaterThan(0); // the damage did hit records that mattered
  });
});
