import pino from 'pino';
import type { MaintenanceOutcome, MaintenanceRequest } from '../../actors';
import type { Clock } from '../../supervisor/schedule';
import { useMaintenanceHarness } from '../helpers/maintenance-harness';
import { until } from '../helpers/wait';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });

describe('maintenance queue', () => {
  const harness = useMaintenanceHarness('tk-maint-queue-', silent);

  /**
   * A Maintenance whose owner (`submit`) counts its jobs; with `holdAll` it
   * holds each one until the test lets it go, else only the first.
   */
  async function setup(holdAll = false) {
    const clock: Clock = { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined };
    const jobs: { request: MaintenanceRequest; finish: () => void }[] = [];
    const outcome = (request: MaintenanceRequest): MaintenanceOutcome =>
      request.kind === 'compact'
        ? { kind: 'compact', status: 'skipped', reason: 'under the threshold', fragmentation: 0 }
        : {
            kind: 'backup',
            manifest: { table: 'alpha', name: `alpha-${jobs.length}`, generation: 1, length: 16, records: 0, liveKeys: 0, maxSeq: 0, sha256: '0'.repeat(64), createdAt: new Date(0).toISOString() },
          } as MaintenanceOutcome;
    const { maintenance, history } = await harness.alpha({
      clock,
      submit: (_table, request) =>
        new Promise((resolve) => {
          jobs.push({ request, finish: () => resolve(outcome(request)) });
          if (!holdAll && jobs.length > 1) resolve(outcome(request));
        }),
      owners: { stop: async () => undefined, start: async () => 'serving' },
    });
    return { maintenance, jobs, history };
  }

  for (const kind of ['compact', 'backup'] as const) {
    test(`maintenance queue - a flood of the same ${kind} request runs it at most twice: one running, one waiting that the rest join, and every request is answered`, async () => {
      const { maintenance, jobs, history: h } = await setup();
      const ask = () => (kind === 'compact' ? maintenance.compact(['alpha'], { force: true, trigger: 'manual' }) : maintenance.backup(['alpha'], 'manual'));
      const first = ask();
      await until(() => jobs.length === 1, 'the first run to reach the owner');
      // 1000 more while it runs (as many `tables.alpha.compact` or `admin.backup.alpha` requests would be).
      const flood = Array.from({ length: 1000 }, ask);
      await new Promise((r) => setImmediate(r));
      expect(jobs).toHaveLength(1);
      jobs[0].finish();
      const answers = await Promise.all([first, ...flood]);
      expect(answers).toHaveLength(1001);
      for (const a of answers) expect(a.results).toHaveLength(1);
      // The flood shares one run: the owner saw two jobs, and history has two entries, not 1001.
      expect(jobs).toHaveLength(2);
      expect(new Set(flood)).toEqual(new Set([flood[0]]));
      expect(h.recent(1000).filter((e) => e.kind === (kind === 'compact' ? 'compaction' : 'backup'))).toHaveLength(2);
    });
  }

  test('maintenance queue - requests that differ (force, tables) or scheduled runs do not join each other', async () => {
    const { maintenance, jobs } = await setup(true);
    const running = maintenance.compact(['alpha'], { force: true, trigger: 'manual' });
    await until(() => jobs.length === 1, 'the first run to reach the owner');
    const runs = [
      maintenance.compact(['alpha'], { force: false, trigger: 'manual' }),
      maintenance.compact(['alpha'], { force: true, trigger: 'manual' }),
      maintenance.compact(['alpha'], { force: false, trigger: 'scheduled', defer: true }),
      maintenance.compact(['alpha'], { force: false, trigger: 'scheduled', defer: true }),
    ];
    for (let n = 1; n <= 5; n++) {
      await until(() => jobs.length === n, `run ${n} to reach the owner`);
      jobs[n - 1].finish();
    }
    await Promise.all([running, ...runs]);
    expect(jobs.map((j) => (j.request.kind === 'compact' ? j.request.force : undefined))).toEqual([true, false, true, false, false]);
  });
});
