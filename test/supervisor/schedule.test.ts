import { SimulatedClock } from 'xstate';
import { nextRunAt, Schedule } from '../../supervisor/schedule';

const H = 3_600_000;
const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);

describe('schedule', () => {
  test('schedule - an interval runs one period after the last run', () => {
    expect(nextRunAt({ every: '6h' }, T0, T0 + H, 'later')).toBe(T0 + 6 * H);
  });

  test('schedule - a run that fell due while down runs once, now', () => {
    expect(nextRunAt({ every: '6h' }, T0, T0 + 20 * H, 'later')).toBe(T0 + 20 * H);
  });

  test('schedule - with no run yet, firstRun decides', () => {
    expect(nextRunAt({ every: '1h' }, undefined, T0, 'now')).toBe(T0);
    expect(nextRunAt({ every: '1h' }, undefined, T0, 'later')).toBe(T0 + H);
  });

  test('schedule - a cron expression runs at its first time after the last run', () => {
    const local = new Date(2026, 0, 1, 1, 0, 0).getTime(); // 01:00 local
    expect(new Date(nextRunAt({ cron: '0 */6 * * *' }, local, local + 1, 'later')).getHours()).toBe(6);
    expect(nextRunAt({ cron: '0 */6 * * *' }, local, local + 10 * H, 'later')).toBe(local + 10 * H);
  });

  test('schedule - runs on the clock, records each run after it finishes, and survives a restart', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    let last: number | undefined;
    const runs: number[] = [];
    const make = () =>
      new Schedule({
        name: 'test',
        spec: { every: '1h' },
        clock,
        firstRun: 'later',
        lastRun: () => last,
        record: async (at) => {
          last = at;
        },
        job: async () => {
          runs.push(clock.now());
        },
        onError: (err) => {
          throw err;
        },
      });
    const flush = () => new Promise((r) => setImmediate(r));
    let s = make();
    s.start();
    expect(s.nextAt).toBe(T0 + H);
    clock.increment(H - 1);
    await flush();
    expect(runs).toEqual([]);
    clock.increment(1);
    await flush();
    expect(runs).toEqual([T0 + H]);
    expect(last).toBe(T0 + H);
    expect(s.nextAt).toBe(T0 + 2 * H);
    s.stop();
    // A restart 30 minutes later picks up the persisted last run.
    clock.increment(30 * 60_000);
    s = make();
    s.start();
    expect(s.nextAt).toBe(T0 + 2 * H);
    clock.increment(30 * 60_000);
    await flush();
    expect(runs).toEqual([T0 + H, T0 + 2 * H]);
    s.stop();
    clock.increment(2 * H);
    await flush();
    expect(runs).toHaveLength(2);
  });
});
