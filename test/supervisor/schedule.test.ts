import pino, { type Logger } from 'pino';
import { SimulatedClock } from 'xstate';
import type { ScheduleSetting } from '../../supervisor/config';
import { nextRunAt, Schedule, type Clock, type RunReport, type ScheduleState } from '../../supervisor/schedule';

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

  const flush = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };

  /** A schedule over `targets` whose state lives in `store.state` (as the history table keeps it). */
  function make(
    clock: Clock,
    store: { state?: ScheduleState },
    opts: {
      spec?: ScheduleSetting;
      firstRun?: 'now' | 'later';
      targets?: string[];
      job?: (targets: string[]) => Promise<RunReport>;
      save?: (state: ScheduleState) => Promise<void>;
      onError?: (err: unknown) => void;
      logger?: Logger;
    } = {},
  ): { schedule: Schedule; runs: { at: number; targets: string[] }[] } {
    const runs: { at: number; targets: string[] }[] = [];
    const schedule = new Schedule({
      name: 'test',
      spec: opts.spec ?? { every: '1h' },
      clock,
      firstRun: opts.firstRun ?? 'later',
      targets: opts.targets ?? ['a'],
      state: () => store.state,
      save:
        opts.save ??
        (async (state) => {
          store.state = state;
        }),
      job: async (targets) => {
        runs.push({ at: clock.now(), targets });
        return opts.job ? opts.job(targets) : { deferred: [] };
      },
      onError:
        opts.onError ??
        ((err) => {
          throw err;
        }),
      logger: opts.logger,
    });
    return { schedule, runs };
  }

  test('schedule - runs on the clock, records each run after it finishes, and survives a restart', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    let { schedule: s, runs } = make(clock, store);
    s.start();
    expect(s.nextAt).toBe(T0 + H);
    clock.increment(H - 1);
    await flush();
    expect(runs).toEqual([]);
    clock.increment(1);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0 + H]);
    expect(store.state).toEqual({ lastRun: T0 + H });
    expect(s.nextAt).toBe(T0 + 2 * H);
    s.stop();
    // A restart 30 minutes later picks up the persisted last run.
    clock.increment(30 * 60_000);
    ({ schedule: s, runs } = make(clock, store));
    s.start();
    expect(s.nextAt).toBe(T0 + 2 * H);
    clock.increment(30 * 60_000);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0 + 2 * H]);
    s.stop();
    clock.increment(2 * H);
    await flush();
    expect(runs).toHaveLength(1);
  });

  test('schedule - the first run time is saved at once, so restarts before it neither push it back nor lose it', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    let { schedule: s, runs } = make(clock, store, { spec: { every: '6h' } });
    s.start();
    await flush();
    expect(s.nextAt).toBe(T0 + 6 * H);
    expect(store.state).toMatchObject({ firstDue: T0 + 6 * H });
    s.stop();
    // Restarted every 4 hours: the run still falls due 6 hours after the very first start.
    clock.increment(4 * H);
    ({ schedule: s, runs } = make(clock, store, { spec: { every: '6h' } }));
    s.start();
    expect(s.nextAt).toBe(T0 + 6 * H);
    s.stop();
    // Down past it: it runs once, right after the next start.
    clock.increment(4 * H);
    ({ schedule: s, runs } = make(clock, store, { spec: { every: '6h' } }));
    s.start();
    expect(s.nextAt).toBe(T0 + 8 * H);
    clock.increment(0);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0 + 8 * H]);
    expect(store.state).toEqual({ lastRun: T0 + 8 * H });
    expect(s.nextAt).toBe(T0 + 14 * H);
    s.stop();
  });

  test('schedule - a cron schedule keeps its first run across a restart that misses it', async () => {
    const clock = new SimulatedClock();
    const start = new Date(2026, 0, 1, 1, 0, 0).getTime(); // 01:00 local
    clock.set(start);
    const store: { state?: ScheduleState } = {};
    const spec = { cron: '0 */6 * * *' };
    let { schedule: s, runs } = make(clock, store, { spec });
    s.start();
    const six = new Date(2026, 0, 1, 6, 0, 0).getTime();
    expect(s.nextAt).toBe(six);
    s.stop();
    clock.set(six + 3 * H); // down from 01:00 to 09:00
    ({ schedule: s, runs } = make(clock, store, { spec }));
    s.start();
    expect(s.nextAt).toBe(six + 3 * H);
    clock.increment(0);
    await flush();
    expect(runs).toHaveLength(1);
    expect(new Date(s.nextAt!).getHours()).toBe(12);
    s.stop();
  });

  test('schedule - a spec changed before the first run recomputes the first run time', () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    let { schedule: s } = make(clock, store, { spec: { every: '24h' } });
    s.start();
    s.stop();
    ({ schedule: s } = make(clock, store, { spec: { every: '1h' } }));
    s.start();
    expect(s.nextAt).toBe(T0 + H);
    s.stop();
  });

  test('schedule - targets that could not run are tried again alone, on wake or after a delay, before the run counts as done', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    const up = new Set(['a']);
    const { schedule: s, runs } = make(clock, store, {
      firstRun: 'now',
      targets: ['a', 'b', 'c'],
      job: async (targets) => ({ deferred: targets.filter((t) => !up.has(t)) }),
    });
    s.start();
    clock.increment(0);
    await flush();
    expect(runs).toEqual([{ at: T0, targets: ['a', 'b', 'c'] }]);
    expect(store.state?.lastRun).toBeUndefined(); // b and c have not had their turn
    // What admin.health shows as the next run: the retry, not the run's own time, now past.
    expect(s.nextAt).toBe(T0 + 1000);
    // A table comes up: the deferred ones are tried at once.
    up.add('b');
    s.wake();
    await flush();
    expect(runs.at(-1)).toEqual({ at: T0, targets: ['b', 'c'] });
    expect(store.state?.lastRun).toBeUndefined();
    expect(s.nextAt).toBe(T0 + 2000);
    // Without a wake, after the retry delay (1 s, doubling).
    up.add('c');
    clock.increment(999);
    await flush();
    expect(runs).toHaveLength(2);
    clock.increment(1001);
    await flush();
    expect(runs.at(-1)).toEqual({ at: T0 + 2000, targets: ['c'] });
    expect(store.state).toEqual({ lastRun: T0 });
    expect(s.nextAt).toBe(T0 + H);
    s.stop();
  });

  test('schedule - a table that comes up during the run is retried when the run ends, without the clock moving', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    const up = new Set(['a']);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { schedule: s, runs } = make(clock, store, {
      firstRun: 'now',
      targets: ['a', 'b'],
      job: async (targets) => {
        const deferred = targets.filter((t) => !up.has(t));
        if (runs.length === 1) await gate; // the first run is still going when b comes up
        return { deferred };
      },
    });
    s.start();
    clock.increment(0);
    await flush();
    up.add('b');
    s.wake();
    release();
    await flush();
    // No clock move since: a retry through a timer of zero would never fire on this clock.
    expect(runs).toEqual([{ at: T0, targets: ['a', 'b'] }, { at: T0, targets: ['b'] }]);
    expect(store.state).toEqual({ lastRun: T0 });
    s.stop();
  });

  test('schedule - a target still down when the next run falls due joins that run, and the missed run is recorded', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = {};
    const { schedule: s, runs } = make(clock, store, {
      spec: { every: '2s' },
      firstRun: 'now',
      targets: ['a', 'b'],
      job: async (targets) => ({ deferred: targets.filter((t) => t === 'b') }),
    });
    s.start();
    clock.increment(0);
    await flush();
    clock.increment(1000); // the retry at +1 s
    await flush();
    expect(runs.map((r) => r.targets)).toEqual([['a', 'b'], ['b']]);
    // The next retry (+2 s more) would pass the next run (T0 + 2 s): the run is recorded instead.
    expect(store.state).toEqual({ lastRun: T0 });
    clock.increment(1000);
    await flush();
    expect(runs.at(-1)).toEqual({ at: T0 + 2000, targets: ['a', 'b'] });
    s.stop();
  });
  /** A logger whose records (parsed) end up in `lines`. */
  function capture(): { logger: Logger; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = [];
    return { logger: pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
  }

  /**
   * A clock whose timers wait out elapsed time while its wall time can be set
   * back, as a real one's (setTimeout does not follow Date.now()). SimulatedClock
   * cannot go back.
   */
  class JumpClock implements Clock {
    private elapsed = 0;
    private offset: number;
    private nextId = 0;
    private readonly timers = new Map<number, { due: number; fn: () => void }>();
    constructor(wall: number) {
      this.offset = wall;
    }
    now(): number {
      return this.elapsed + this.offset;
    }
    setTimeout(fn: () => void, ms: number): unknown {
      const id = this.nextId++;
      this.timers.set(id, { due: this.elapsed + ms, fn });
      return id;
    }
    clearTimeout(id: unknown): void {
      this.timers.delete(id as number);
    }
    /** Moves elapsed (and wall) time on by `ms`, firing the timers due on the way. */
    advance(ms: number): void {
      const end = this.elapsed + ms;
      for (;;) {
        let first: [number, { due: number; fn: () => void }] | undefined;
        for (const t of this.timers) if (t[1].due <= end && (!first || t[1].due < first[1].due)) first = t;
        if (!first) break;
        this.timers.delete(first[0]);
        this.elapsed = Math.max(this.elapsed, first[1].due);
        first[1].fn();
      }
      this.elapsed = end;
    }
    /** Sets the wall time (NTP), without moving elapsed time. */
    setWall(wall: number): void {
      this.offset = wall - this.elapsed;
    }
  }

  test('schedule - a run whose record could not be saved is not run again at once: the next run counts from it', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const store: { state?: ScheduleState } = { state: { lastRun: T0 - H } }; // due now
    const errors: unknown[] = [];
    const { schedule: s, runs } = make(clock, store, {
      save: async () => {
        throw Object.assign(new Error('EIO: history write failed'), { code: 'EIO' });
      },
      onError: (err) => errors.push(err),
    });
    s.start();
    expect(s.nextAt).toBe(T0);
    clock.increment(0);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0]);
    expect(errors).toHaveLength(1);
    // The persisted last run is still an hour old: counting from it, the run would be due again now.
    expect(store.state).toEqual({ lastRun: T0 - H });
    expect(s.nextAt).toBe(T0 + H);
    clock.increment(0);
    await flush();
    expect(runs).toHaveLength(1);
    clock.increment(H - 1);
    await flush();
    expect(runs).toHaveLength(1);
    clock.increment(1);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0, T0 + H]);
    expect(s.nextAt).toBe(T0 + 2 * H);
    s.stop();
  });

  test('schedule - a last run later than now (the clock set back) is due now, with a warning, and the schedule goes on from now', async () => {
    const T = T0 + 24 * H; // recorded while the clock ran a day ahead
    const store: { state?: ScheduleState } = { state: { lastRun: T } };
    const clock = new SimulatedClock();
    const restart = T - 24 * H + 5 * 60_000; // restarted after NTP set it back a day
    clock.set(restart);
    const { logger, lines } = capture();
    const { schedule: s, runs } = make(clock, store, { logger });
    s.start();
    expect(s.nextAt).toBe(restart);
    expect(lines).toEqual([
      expect.objectContaining({ level: 40, op: 'test', at: new Date(T).toISOString(), now: new Date(restart).toISOString(), aheadMs: T - restart }),
    ]);
    clock.increment(0);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([restart]);
    expect(store.state).toEqual({ lastRun: restart });
    expect(s.nextAt).toBe(restart + H);
    for (let h = 1; h <= 25; h++) {
      clock.increment(H);
      await flush();
    }
    // Hourly from the restart on, not once the clock has caught up with the old last run.
    expect(runs).toHaveLength(26);
    expect(runs.at(-1)?.at).toBe(restart + 25 * H);
    expect(lines).toHaveLength(1);
    s.stop();
  });

  test('schedule - a last run later than now whose make-up run could not be saved is not run again at once', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    // Persisted while the clock ran a day ahead; saving the run made up for it fails.
    const store: { state?: ScheduleState } = { state: { lastRun: T0 + 24 * H } };
    const errors: unknown[] = [];
    const { schedule: s, runs } = make(clock, store, {
      save: async () => {
        throw new Error('EIO: history write failed');
      },
      onError: (err) => errors.push(err),
    });
    s.start();
    clock.increment(0);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T0]);
    // The run just made counts, not the persisted one still ahead of the clock.
    expect(s.nextAt).toBe(T0 + H);
    clock.increment(0);
    await flush();
    expect(runs).toHaveLength(1);
    s.stop();
  });

  test('schedule - a cron schedule whose last run is later than now is due now too', () => {
    const local = new Date(2026, 0, 2, 12, 0, 0).getTime();
    const now = local - 24 * H + 60_000 + 1;
    expect(nextRunAt({ cron: '0 * * * *' }, local, now, 'later')).toBe(now);
    expect(nextRunAt({ every: '1h' }, local, now, 'later')).toBe(now);
  });

  test('schedule - a last run ahead of the clock by less than the tolerance is not run again', () => {
    // A little skew (a slewed clock, a restart on another host): still one period after the last run.
    expect(nextRunAt({ every: '1h' }, T0 + 30_000, T0, 'later')).toBe(T0 + 30_000 + H);
    expect(nextRunAt({ every: '1h' }, T0 + 60_000, T0, 'later')).toBe(T0 + 60_000 + H);
    expect(nextRunAt({ every: '1h' }, T0 + 60_001, T0, 'later')).toBe(T0);
  });

  test('schedule - a first run time saved before the clock was set back is computed afresh from now', async () => {
    const clock = new SimulatedClock();
    clock.set(T0 + 24 * H); // the very first start, on a clock a day ahead
    const store: { state?: ScheduleState } = {};
    let { schedule: s } = make(clock, store, { spec: { every: '6h' } });
    s.start();
    await flush();
    expect(store.state).toMatchObject({ firstDue: T0 + 30 * H });
    s.stop();
    const back = new SimulatedClock();
    back.set(T0 + H); // restarted after NTP set it back a day
    const { logger, lines } = capture();
    ({ schedule: s } = make(back, store, { spec: { every: '6h' }, logger }));
    s.start();
    await flush();
    expect(s.nextAt).toBe(T0 + 7 * H);
    expect(store.state).toMatchObject({ firstDue: T0 + 7 * H });
    expect(lines).toEqual([expect.objectContaining({ level: 40, op: 'test', at: new Date(T0 + 30 * H).toISOString() })]);
    s.stop();
    // Within one period of the first start the saved time stands, as before.
    const later = new SimulatedClock();
    later.set(T0 + 3 * H);
    ({ schedule: s } = make(later, store, { spec: { every: '6h' } }));
    s.start();
    expect(s.nextAt).toBe(T0 + 7 * H);
    s.stop();
  });

  test('schedule - a clock set back while the next run is waited for does not hold the run back', async () => {
    const T = T0 + 24 * H; // the clock runs a day ahead
    const clock = new JumpClock(T);
    const store: { state?: ScheduleState } = {};
    const { logger, lines } = capture();
    const { schedule: s, runs } = make(clock, store, { firstRun: 'now', logger });
    s.start();
    clock.advance(0);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T]);
    expect(s.nextAt).toBe(T + H);
    clock.advance(10 * 60_000);
    clock.setWall(T0 + 10 * 60_000); // NTP sets it back a day
    clock.advance(50 * 60_000);
    await flush();
    // The hour has passed: the run is due, though the wall clock shows a day less.
    expect(runs.map((r) => r.at)).toEqual([T, T0 + H]);
    expect(store.state).toEqual({ lastRun: T0 + H });
    expect(s.nextAt).toBe(T0 + 2 * H);
    expect(lines).toEqual([expect.objectContaining({ level: 40, op: 'test' })]);
    clock.advance(H);
    await flush();
    expect(runs.map((r) => r.at)).toEqual([T, T0 + H, T0 + 2 * H]);
    s.stop();
  });
});
