import { closeSync, openSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import { tableFilePath } from '../../actors/table-owner';
import { encodeJson, InProcessBus, requestJson, type Bus } from '../../bus';
import { nodeStoreFs, TableFile } from '../../store';
import { loadConfig, type Config } from '../../supervisor/config';
import { HistoryStore } from '../../supervisor/history';
import { Schedule } from '../../supervisor/schedule';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import { FailsFirstOpenOf, FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { fieldCheckingLogger } from '../helpers/log-fields';

// Every line logged is checked (at every level) for a field named twice.
const { logger: silent, repeats } = fieldCheckingLogger();

function configFor(dataDir: string, tables: string[], supervisor?: Partial<Config['supervisor']>): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: dataDir } });
  return {
    ...base,
    tables: tables.map((name) => ({ name, sync: 'always' as const, maxValueBytes: 1024 })),
    supervisor: { ...base.supervisor, ...supervisor },
  };
}

/** The error code of a reply, or 'ok'. */
async function outcome(bus: Bus, subject: string, body: unknown): Promise<string> {
  try {
    await requestJson(bus, subject, body, { timeoutMs: 2000 });
    return 'ok';
  } catch (err) {
    return (err as { wireCode?: string }).wireCode ?? String(err);
  }
}

describe('supervisor', () => {
  const tmp = useTempDir('tk-sup-');
  let bus: InProcessBus;
  let actor: SupervisorRef | undefined;

  beforeEach(() => {
    bus = new InProcessBus({ logger: silent });
  });

  afterEach(async () => {
    if (actor && actor.getSnapshot().status === 'active') {
      actor.send({ type: 'STOP' });
      await toPromise(actor);
    }
    actor = undefined;
    await bus.close();
    expect(repeats.splice(0)).toEqual([]);
  });

  function start(config: Config, extra: { fs?: FaultyFs; clock?: SimulatedClock } = {}): SupervisorRef {
    actor = createActor(supervisorMachine, {
      input: { config, bus, logger: silent, fs: extra.fs, now: extra.clock ? () => extra.clock!.now() : undefined },
      // Only a simulated clock is passed: `clock: undefined` would replace xstate's default.
      ...(extra.clock ? { clock: extra.clock } : {}),
    });
    actor.start();
    return actor;
  }

  const serving = (a: SupervisorRef, table: string) => waitFor(a, (s) => s.context.owners[table].state === 'serving');

  test('supervisor - one owner per table serves its subjects; an unknown table gets not_found', async () => {
    const a = start(configFor(tmp.dir, ['alpha', 'beta']));
    await serving(a, 'alpha');
    await serving(a, 'beta');
    await requestJson(bus, 'tables.alpha.put', { key: 'k', value: 1 });
    await requestJson(bus, 'tables.beta.put', { key: 'k', value: 2 });
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k' })).toEqual({ found: true, value: 1 });
    expect(await requestJson(bus, 'tables.beta.get', { key: 'k' })).toEqual({ found: true, value: 2 });
    expect(await outcome(bus, 'tables.gamma.get', { key: 'k' })).toBe('not_found');
    expect(await outcome(bus, 'tables.alpha.explode', {})).toBe('bad_request');
  });

  test('supervisor - a table request reaches one subscription of the service, not one per layer', async () => {
    const patterns: string[] = [];
    const original = bus.subscribe.bind(bus);
    jest.spyOn(bus, 'subscribe').mockImplementation((subject, handler, opts) => {
      patterns.push(subject);
      return original(subject, handler, opts);
    });
    const a = start(configFor(tmp.dir, ['alpha', 'beta']));
    await serving(a, 'alpha');
    await serving(a, 'beta');
    const tokens = 'tables.alpha.get'.split('.');
    const matches = (pattern: string): boolean => {
      const p = pattern.split('.');
      for (let i = 0; i < p.length; i++) {
        if (p[i] === '>') return tokens.length > i;
        if (i >= tokens.length || (p[i] !== '*' && p[i] !== tokens[i])) return false;
      }
      return p.length === tokens.length;
    };
    expect(patterns.filter(matches)).toEqual(['tables.>']);
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'k' })).toEqual({ found: false });
  });

  test('supervisor - STOP closes every table after its writes, and the data is on disk', async () => {
    const a = start(configFor(tmp.dir, ['alpha']));
    await serving(a, 'alpha');
    const writes = Array.from({ length: 50 }, (_, i) => requestJson(bus, 'tables.alpha.put', { key: `k${i}`, value: i }));
    await Promise.all(writes);
    a.send({ type: 'STOP' });
    await toPromise(a);
    expect(a.getSnapshot().value).toBe('stopped');
    const file = await TableFile.open({ table: 'alpha', path: tableFilePath(tmp.dir, 'alpha') });
    try {
      expect(file.stats().records).toBe(50);
      expect(file.get('k49')?.toString()).toBe('49');
    } finally {
      await file.close();
    }
  });

  test('supervisor - an owner that fails to open is restarted with backoff; other tables are unaffected', async () => {
    // Only alpha's table file fails, once: the two tables open concurrently, in no fixed order.
    const fs = new FailsFirstOpenOf('alpha.tkt');
    const clock = new SimulatedClock();
    const a = start(configFor(tmp.dir, ['alpha', 'beta']), { fs, clock });
    await serving(a, 'beta');
    await waitFor(a, (s) => s.context.owners.alpha.restarts.length === 1 && s.context.owners.alpha.state === 'down');
    expect(a.getSnapshot().context.owners.alpha.lastError).toMatch(/EIO|open/);
    // While alpha is down its requests are answered, not dropped.
    expect(await outcome(bus, 'tables.alpha.get', { key: 'k' })).toBe('unavailable');
    expect(await outcome(bus, 'tables.beta.put', { key: 'k', value: 'b' })).toBe('ok');
    clock.increment(99);
    expect(a.getSnapshot().context.owners.alpha.state).toBe('down');
    clock.increment(1);
    await serving(a, 'alpha');
    expect(await outcome(bus, 'tables.alpha.put', { key: 'k', value: 'a' })).toBe('ok');
  });

  test('supervisor - past the restart limit it waits one window, then tries again', async () => {
    const fs = new FaultyFs();
    const clock = new SimulatedClock();
    fs.failOn({ op: 'open', nth: 1, code: 'EIO', sticky: true });
    const a = start(configFor(tmp.dir, ['alpha'], { maxRestarts: 2, restartWindowMs: 60_000 }), { fs, clock });
    await waitFor(a, (s) => s.context.owners.alpha.restarts.length === 1 && s.context.owners.alpha.state === 'down');
    clock.increment(100); // first backoff
    await waitFor(a, (s) => s.context.owners.alpha.restarts.length === 2 && s.context.owners.alpha.state === 'down');
    clock.increment(200); // second backoff, doubled
    await waitFor(a, (s) => s.context.owners.alpha.gaveUpAt !== undefined);
    expect(a.getSnapshot().context.owners.alpha.state).toBe('down');
    clock.increment(59_999);
    expect(a.getSnapshot().context.owners.alpha.gaveUpAt).toBeDefined();
    expect(await outcome(bus, 'tables.alpha.get', { key: 'k' })).toBe('unavailable');
    fs.heal();
    clock.increment(1);
    await serving(a, 'alpha');
    expect(a.getSnapshot().context.owners.alpha.gaveUpAt).toBeUndefined();
  });

  test('supervisor - damage found on read: the caller gets unavailable, never a wrong value, and the owner reports it', async () => {
    const a = start(configFor(tmp.dir, ['alpha', 'beta']));
    await serving(a, 'alpha');
    await serving(a, 'beta');
    await requestJson(bus, 'tables.alpha.put', { key: 'victim', value: 'AAAAAAAAAAAAAAAA' });
    await requestJson(bus, 'tables.beta.put', { key: 'fine', value: true });
    // Flip one byte of the stored value behind the owner's back.
    const file = tableFilePath(tmp.dir, 'alpha');
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from('B'), 0, 1, 16 + 20 + 'victim'.length + 3);
    closeSync(fd);
    expect(await outcome(bus, 'tables.alpha.get', { key: 'victim' })).toBe('unavailable');
    await waitFor(a, (s) => s.context.owners.alpha.state === 'corrupt');
    expect(await outcome(bus, 'tables.alpha.get', { key: 'victim' })).toBe('unavailable');
    expect(await outcome(bus, 'tables.alpha.put', { key: 'other', value: 1 })).toBe('unavailable');
    expect(await requestJson(bus, 'tables.beta.get', { key: 'fine' })).toEqual({ found: true, value: true });
    // The recovery it set off ends with the table serving again (no backup: the damaged record is lost, nothing else).
    await waitFor(a, (s) => s.context.owners.alpha.state === 'serving' && !s.context.owners.alpha.recovering);
    expect(await requestJson(bus, 'tables.alpha.get', { key: 'victim' })).toEqual({ found: false });
  });

  test('supervisor - a table file that is corrupt at open leaves its owner corrupt, not crash-looping', async () => {
    const file = tableFilePath(tmp.dir, 'alpha');
    const t = await TableFile.open({ table: 'alpha', path: file });
    await t.put('a', Buffer.from('"1"'));
    await t.put('b', Buffer.from('"2"'));
    await t.close();
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from([0xff]), 0, 1, 16 + 20); // first record's key byte
    closeSync(fd);
    const a = start(configFor(path.dirname(file), ['alpha']));
    await waitFor(a, (s) => s.context.owners.alpha.state === 'corrupt');
    expect(a.getSnapshot().context.owners.alpha.restarts).toEqual([]);
    expect(await outcome(bus, 'tables.alpha.get', { key: 'a' })).toBe('unavailable');
    // A request that could never succeed says so, even while the table does not serve.
    expect(await outcome(bus, 'tables.alpha.explode', {})).toBe('bad_request');
    expect(await outcome(bus, 'tables.alpha', {})).toBe('bad_request');
  });

  test('supervisor - a corruption request is answered, not left to time out, when maintenance could not start', async () => {
    // A read of the history table that fails while maintenance starts (here its first read, a
    // schedule's state) leaves maintenance off until the next start: nothing can run the recovery.
    const getState = jest.spyOn(HistoryStore.prototype, 'getState').mockImplementationOnce(() => {
      throw Object.assign(new Error('EIO: injected read failure of the history table'), { code: 'EIO' });
    });
    try {
      const a = start(configFor(tmp.dir, ['alpha']));
      await serving(a, 'alpha');
      for (let i = 0; i < 400 && getState.mock.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(getState).toHaveBeenCalled();
      expect(await outcome(bus, 'admin.health', {})).toBe('internal');
      expect(await outcome(bus, 'tables.alpha.corruption', { reason: 'reported while maintenance is off' })).toBe('internal');
      expect(a.getSnapshot().context.owners.alpha.state).toBe('corrupt');
    } finally {
      getState.mockRestore();
    }
  });

  const helperActive = (s: ReturnType<SupervisorRef['getSnapshot']>, id: 'gateway' | 'maintenance'): boolean =>
    s.children[id]?.getSnapshot().status === 'active';

  /** Makes the next `count` subscriptions to `subject` throw, as a helper's start would on a failing bus. */
  function failSubscribe(subject: string, count: number): void {
    const original = bus.subscribe.bind(bus);
    let left = count;
    jest.spyOn(bus, 'subscribe').mockImplementation((subj, handler, opts) => {
      if (subj === subject && left > 0) {
        left--;
        throw new Error(`injected subscribe failure on ${subj}`);
      }
      return original(subj, handler, opts);
    });
  }

  test('supervisor - a gateway that crashes is restarted with backoff, and requests are answered again', async () => {
    const clock = new SimulatedClock();
    failSubscribe('tables.>', 1);
    const a = start(configFor(tmp.dir, ['alpha']), { clock });
    await serving(a, 'alpha');
    await waitFor(a, (s) => s.context.helpers.gateway.restarts.length === 1);
    expect(a.getSnapshot().context.helpers.gateway.lastError).toMatch(/injected/);
    // Without the gateway nobody takes table requests.
    expect(await outcome(bus, 'tables.alpha.get', { key: 'k' })).not.toBe('ok');
    clock.increment(100);
    await waitFor(a, (s) => helperActive(s, 'gateway'));
    expect(await outcome(bus, 'tables.alpha.put', { key: 'k', value: 1 })).toBe('ok');
    expect(await outcome(bus, 'tables.gamma.get', { key: 'k' })).toBe('not_found');
  });

  test('supervisor - a crash-looping gateway stops being restarted at the limit, then is retried after one window', async () => {
    const clock = new SimulatedClock();
    failSubscribe('tables.>', 3);
    const a = start(configFor(tmp.dir, ['alpha'], { maxRestarts: 2, restartWindowMs: 60_000 }), { clock });
    await waitFor(a, (s) => s.context.helpers.gateway.restarts.length === 1);
    clock.increment(100);
    await waitFor(a, (s) => s.context.helpers.gateway.restarts.length === 2);
    clock.increment(200);
    await waitFor(a, (s) => s.context.helpers.gateway.gaveUpAt !== undefined);
    clock.increment(59_999);
    expect(helperActive(a.getSnapshot(), 'gateway')).toBe(false);
    clock.increment(1);
    await waitFor(a, (s) => helperActive(s, 'gateway') && s.context.helpers.gateway.gaveUpAt === undefined);
    await serving(a, 'alpha');
    expect(await outcome(bus, 'tables.alpha.put', { key: 'k', value: 1 })).toBe('ok');
  });

  test('supervisor - a restore asked of a restarted maintenance actor waits for the recovery its predecessor left going', async () => {
    const a = start(configFor(tmp.dir, ['alpha']));
    await serving(a, 'alpha');
    await requestJson(bus, 'tables.alpha.put', { key: 'k', value: 'backed-up' });
    await requestJson(bus, 'admin.backup.alpha', {}, { timeoutMs: 5000 });
    await requestJson(bus, 'tables.alpha.put', { key: 'after-backup', value: 'rolled back by the restore' });
    // The recovery's rebuild holds at its read of the quarantined file...
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const atGate = new Promise<void>((resolve) => (reached = resolve));
    const open = nodeStoreFs.open.bind(nodeStoreFs);
    let held = false;
    let answeredBeforeRelease: boolean | undefined;
    const spy = jest.spyOn(nodeStoreFs, 'open').mockImplementation(async (file, mode) => {
      if (!held && file.includes(`${path.sep}quarantine${path.sep}alpha-`)) {
        held = true;
        reached();
        await gate;
      }
      return open(file, mode);
    });
    try {
      const report = requestJson(bus, 'tables.alpha.corruption', { reason: 'reported' }, { timeoutMs: 20000 }).catch((err: unknown) => err);
      await atGate;
      // ...while the maintenance actor crashes (a throw in its event handler) and is restarted.
      jest.spyOn(Schedule.prototype, 'wake').mockImplementationOnce(() => {
        throw new Error('injected crash of the maintenance actor');
      });
      a.getSnapshot().children.maintenance?.send({ type: 'OWNER_STATE', table: 'alpha', state: 'serving' });
      await waitFor(a, (s) => s.context.helpers.maintenance.restarts.length === 1);
      await waitFor(a, (s) => helperActive(s, 'maintenance') && s.context.helpers.maintenance.down === false, { timeout: 5000 });
      let answered = false;
      const restore = requestJson(bus, 'admin.restore.alpha', {}, { timeoutMs: 20000 }).finally(() => (answered = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      answeredBeforeRelease = answered;
      release();
      await expect(restore).resolves.toMatchObject({ mode: 'restore', status: 'restored' });
      await expect(report).resolves.toMatchObject({ wireCode: 'unavailable' });
      await requestJson(bus, 'tables.alpha.put', { key: 'after-restore', value: 'acknowledged' });
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      release();
      spy.mockRestore();
    }
    a.send({ type: 'STOP' });
    await toPromise(a);
    // The write acknowledged after the restore is there, and the rollback stands.
    const t = await TableFile.open({ table: 'alpha', path: tableFilePath(tmp.dir, 'alpha') });
    const keys = t.select({ limit: 10 }).items.map((i) => [i.key, JSON.parse(i.value.toString())]);
    await t.close();
    expect(keys).toEqual([['after-restore', 'acknowledged'], ['k', 'backed-up']]);
    // The old run still built the table's file: the restore waited for it.
    expect(answeredBeforeRelease).toBe(false);
  });

  test('supervisor - a maintenance actor that crashes is restarted and knows the owners again', async () => {
    const clock = new SimulatedClock();
    failSubscribe('admin.>', 1);
    const a = start(configFor(tmp.dir, ['alpha']), { clock });
    await serving(a, 'alpha');
    await waitFor(a, (s) => s.context.helpers.maintenance.restarts.length === 1);
    expect(await outcome(bus, 'admin.health', {})).not.toBe('ok');
    // Meanwhile a compact request is answered, not dropped; a corruption report is held for the restarted actor.
    await expect(requestJson(bus, 'tables.alpha.compact', {}, { timeoutMs: 2000 })).rejects.toMatchObject({ wireCode: 'unavailable' });
    bus.publish('tables.alpha.corruption', encodeJson({ reason: 'reported while maintenance was down' }));
    await waitFor(a, (s) => s.context.heldReports.length === 1);
    clock.increment(100);
    await waitFor(a, (s) => helperActive(s, 'maintenance'));
    // The held report reaches the restarted actor, which recovers the table.
    await waitFor(a, (s) => s.context.heldReports.length === 0 && s.context.owners.alpha.state === 'serving' && s.context.owners.alpha.restartCount === 0);
    // The run is recorded just after the table serves again.
    let entries: { kind: string; table: string }[] = [];
    for (let i = 0; i < 400 && !entries.some((e) => e.kind === 'recovery'); i++) {
      entries = ((await requestJson(bus, 'admin.history', {}, { timeoutMs: 2000 })) as { entries: typeof entries }).entries;
      if (!entries.some((e) => e.kind === 'recovery')) await new Promise((r) => setTimeout(r, 5));
    }
    expect(entries).toContainEqual(expect.objectContaining({ kind: 'recovery', table: 'alpha' }));
    const health = (await requestJson(bus, 'admin.health', {}, { timeoutMs: 2000 })) as { tables: { table: string; state: string }[] };
    expect(health.tables).toEqual([expect.objectContaining({ table: 'alpha', state: 'serving' })]);
  });
});
