import * as path from 'node:path';
import pino from 'pino';
import { tableFilePath, type TableOwnerState } from '../../actors/table-owner';
import { decodeJson } from '../../bus';
import { backupTable, TableFile } from '../../store';
import type { OwnerControl } from '../../supervisor/recovery';
import { quarantinePath, writeJournal } from '../../supervisor/recovery-journal';
import type { Clock } from '../../supervisor/schedule';
import { useMaintenanceHarness } from '../helpers/maintenance-harness';
import { contentsOf } from '../store/recovery-helpers';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });
const b = (s: string): Buffer => Buffer.from(s);

describe('maintenance recovery', () => {
  const harness = useMaintenanceHarness('tk-maint-rec-', silent);

  /** A Maintenance over real files, with a clock the test moves and owners it controls. */
  async function setup(owners: OwnerControl) {
    const time = { now: 1_000 };
    const clock: Clock = { now: () => time.now, setTimeout: () => undefined, clearTimeout: () => undefined };
    const { config, bus, history, maintenance } = await harness.alpha({ clock, submit: () => Promise.reject(new Error('no owner in this test')), owners });
    const events: { subject: string; body: any }[] = [];
    bus.subscribe('backups.>', (msg) => void events.push({ subject: msg.subject, body: decodeJson(msg.data) }));
    return { config, maintenance, time, events, file: tableFilePath(config.dataDir, 'alpha'), history };
  }

  const serving: OwnerControl['start'] = async (): Promise<TableOwnerState> => 'serving';

  test('maintenance recovery - a restore asked for while a recovery runs waits for it, then rolls back exactly', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let stops = 0;
    const ctx = await setup({
      stop: async () => {
        if (stops++ === 0) await gate; // the recovery holds here until the restore has been asked for
      },
      start: serving,
    });
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await t.put('k', b('backed-up'));
    await backupTable(t, ctx.config.backupDir);
    await t.put('k', b('newer'));
    await t.put('only-after', b('x'));
    await t.close();

    const recovery = ctx.maintenance.recover('alpha', { reason: 'test', source: 'operator' });
    const restore = ctx.maintenance.restore('alpha');
    release();
    await expect(recovery).resolves.toMatchObject({ mode: 'recover', status: 'recovered', liveKeys: 2 });
    await expect(restore).resolves.toMatchObject({ mode: 'restore', status: 'restored', liveKeys: 1 });
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k', 'backed-up']]));
  });

  test('maintenance recovery - restores asked for while one runs share the one that waits behind it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let stops = 0;
    const ctx = await setup({
      stop: async () => {
        if (stops++ === 0) await gate; // the first restore holds here until the others have been asked for
      },
      start: serving,
    });
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await t.put('k', b('backed-up'));
    await backupTable(t, ctx.config.backupDir);
    await t.close();

    const first = ctx.maintenance.restore('alpha');
    const later = Array.from({ length: 5 }, () => ctx.maintenance.restore('alpha'));
    release();
    await expect(first).resolves.toMatchObject({ mode: 'restore', status: 'restored' });
    const outcomes = await Promise.all(later);
    // One rollback for the five, after the first: two in all, two files in quarantine.
    expect(new Set(outcomes).size).toBe(1);
    expect(outcomes[0]).toMatchObject({ mode: 'restore', status: 'restored', liveKeys: 1 });
    expect(outcomes[0].quarantined).not.toBe((await first).quarantined);
    expect(stops).toBe(2);
    expect(ctx.history.recent(10, (e) => e.kind === 'recovery')).toHaveLength(2);
    // Asked for once the waiting one has started, a restore is a run of its own again.
    await expect(ctx.maintenance.restore('alpha')).resolves.toMatchObject({ status: 'restored' });
    expect(stops).toBe(3);
  });

  test('maintenance recovery - damage the new owner reports while the run starts it gets a run of its own', async () => {
    let starts = 0;
    let second: Promise<unknown> | undefined;
    const ctx = await setup({
      stop: async () => undefined,
      start: async () => {
        if (starts++ > 0) return 'serving';
        // The new owner finds damage as it opens and reports it before the run hears how the open went.
        second = ctx.maintenance.recover('alpha', { reason: 'damaged at open', source: 'open' });
        return 'corrupt';
      },
    });
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await t.put('k', b('v'));
    await t.close();
    await expect(ctx.maintenance.recover('alpha', { reason: 'test', source: 'scrub' })).rejects.toMatchObject({ code: 'RECOVERY_FAILED' });
    await expect(second).resolves.toMatchObject({ mode: 'recover', status: 'recovered', reason: 'damaged at open', liveKeys: 1 });
    expect(starts).toBe(2);
  });

  test('maintenance recovery - a run that ends never ends the record of the run queued behind it', async () => {
    // A journaled run taken up while a restore of the table is under way (a restarted maintenance
    // actor resumes what its predecessor left, while an operator's restore has come in).
    const gates: (() => void)[] = [];
    const stopped: string[] = [];
    const ctx = await setup({
      stop: async () => {
        stopped.push('stop');
        await new Promise<void>((resolve) => gates.push(resolve));
      },
      start: serving,
    });
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await t.put('k', b('v'));
    await backupTable(t, ctx.config.backupDir);
    await t.close();
    const journal = { table: 'alpha', mode: 'recover' as const, trigger: 'auto' as const, reason: 'interrupted', quarantine: quarantinePath(ctx.config.dataDir, 'alpha', new Date(0)), startedAt: new Date(0).toISOString() };
    await writeJournal(ctx.config.dataDir, journal);

    const restore = ctx.maintenance.restore('alpha');
    for (let i = 0; i < 400 && gates.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const resumed = ctx.maintenance.resume(journal);
    gates.shift()!(); // the restore goes on, and ends
    await expect(restore).resolves.toMatchObject({ mode: 'restore', status: 'restored' });
    for (let i = 0; i < 400 && gates.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(stopped).toEqual(['stop', 'stop']);
    // The resumed run holds the table: it still counts as recovering, and a report joins it.
    expect(ctx.maintenance.recovering('alpha')).toBe(true);
    const replies: unknown[] = [];
    const report = ctx.maintenance.recover('alpha', { reason: 'reported meanwhile', source: 'operator', reply: (body) => void replies.push(body) });
    gates.shift()!();
    await expect(resumed).resolves.toMatchObject({ mode: 'recover', status: 'recovered', reason: 'interrupted' });
    await expect(report).resolves.toMatchObject({ reason: 'interrupted' });
    expect(replies).toEqual([expect.objectContaining({ mode: 'recover', reason: 'interrupted' })]);
    expect(stopped).toEqual(['stop', 'stop']);
    expect(ctx.maintenance.recovering('alpha')).toBe(false);
  });

  test('maintenance recovery - a failed recovery is recorded and published with its real duration', async () => {
    const ctx = await setup({
      stop: async () => {
        ctx.time.now += 250; // the owner takes a while to stop, then the run fails
        throw new Error('the owner would not stop');
      },
      start: serving,
    });
    await expect(ctx.maintenance.recover('alpha', { reason: 'test', source: 'scrub' })).rejects.toMatchObject({ code: 'RECOVERY_FAILED' });
    expect(ctx.history.recent(1, (e) => e.kind === 'recovery')[0]).toMatchObject({ table: 'alpha', result: 'failed', durationMs: 250 });
    expect(ctx.events.find((e) => e.subject === 'backups.recovery_failed')?.body).toMatchObject({ table: 'alpha', durationMs: 250 });
  });
});
