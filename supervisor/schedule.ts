import { Cron } from 'croner';
import type { Logger } from 'pino';
import { parseDuration, type ScheduleSetting } from './config';

/** The clock the schedules run on; injected so tests can move time by hand. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

/**
 * How far a recorded time may lie ahead of the clock before the clock is taken
 * to have been set back (NTP correcting a clock that ran ahead). Below it, a
 * little skew between hosts or a slewed clock does not make a run repeat.
 */
export const CLOCK_BACK_TOLERANCE_MS = 60_000;

/** Whether `recorded` (a time the schedule saved) lies so far ahead of `now` that the clock must have been set back since. */
export function clockWentBack(recorded: number, now: number): boolean {
  return recorded > now + CLOCK_BACK_TOLERANCE_MS;
}

/**
 * When a schedule runs next. The next run comes from the last run's time, not
 * from boot, so a restart neither skips nor repeats a run: an interval runs at
 * `last + every`; a cron expression at its first time after `last`. A run that
 * fell due while the service was down runs once, now. With no run yet,
 * `firstRun` decides: `now` (run at once) or `later` (one period from now).
 * A last run later than now (see `clockWentBack`) is due now: counting from it
 * would wait out the whole correction (a day for a clock a day ahead) on top
 * of the period.
 */
export function nextRunAt(spec: ScheduleSetting, lastRun: number | undefined, now: number, firstRun: 'now' | 'later'): number {
  if (lastRun === undefined) {
    if (firstRun === 'now') return now;
    return 'every' in spec ? now + parseDuration(spec.every) : cronAfter(spec.cron, now);
  }
  if (clockWentBack(lastRun, now)) return now;
  const due = 'every' in spec ? lastRun + parseDuration(spec.every) : cronAfter(spec.cron, lastRun);
  return Math.max(due, now);
}

function cronAfter(expr: string, from: number): number {
  const next = new Cron(expr, { paused: true }).nextRun(new Date(from));
  // An expression that never fires again (a date in the past) never runs.
  return next ? next.getTime() : Number.POSITIVE_INFINITY;
}

/**
 * A schedule's persisted state. `lastRun` is the scheduled time of the last
 * finished run. Before the first run, `firstDue` holds the first run's time as
 * computed at the very first start (with the `spec` it was computed for), so
 * that restarts keep it instead of pushing it one period further each time.
 */
export interface ScheduleState {
  lastRun?: number;
  firstDue?: number;
  spec?: string;
}

/** What one run did: the targets it could not run at all (e.g. a table still opening), to be tried again. */
export interface RunReport {
  deferred: string[];
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;

/**
 * Runs `job` at the times `nextRunAt` gives, over `targets` (the tables), and
 * records the run's scheduled time with `save` once every target has had its
 * turn. A target the job could not run at all (reported in `deferred`: the
 * table was not serving) does not count: it is tried again, alone, when
 * `wake()` says a table came up, or after a short delay (1 s doubling to
 * 60 s), until the next run falls due, which then covers it. A target that ran
 * and failed counts as run (its retry policy is the job's: compaction retries
 * once, a backup waits for the next run). A crash mid-run leaves the run
 * unrecorded, so it runs again after the restart instead of being skipped.
 */
export class Schedule {
  private timer: unknown;
  private stopped = false;
  private running = false;
  // A table came up while a run was going: try the deferred targets again at once.
  private woke = false;
  // Targets of the current run still to be tried, and the run's scheduled time.
  private pending: { at: number; targets: string[]; retryMs: number } | undefined;
  // The recorded time of the last run this process finished, whether or not
  // saving it worked: with the save failed, the persisted one is older and
  // already due, and the run would start again at once, back to back.
  private lastRun: number | undefined;
  /** When the next run is due, or the next try of a run's deferred targets: what admin.health shows. */
  nextAt: number | undefined;

  constructor(
    private readonly opts: {
      name: string;
      spec: ScheduleSetting;
      clock: Clock;
      firstRun: 'now' | 'later';
      targets: string[];
      state: () => ScheduleState | undefined;
      save: (state: ScheduleState) => Promise<void>;
      job: (targets: string[]) => Promise<RunReport>;
      onError: (err: unknown) => void;
      /** For warnings that are not a failed run (the clock set back). */
      logger?: Logger;
    },
  ) {}

  /** Arms the timer for the next run. */
  start(): void {
    if (this.stopped) return;
    const { clock } = this.opts;
    const now = clock.now();
    const at = this.dueAt(now);
    this.nextAt = at;
    this.arm(at, () => void this.fire(at, this.opts.targets));
  }

  /** Tries the deferred targets of the current run now (a table came up). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.woke = true;
      return;
    }
    if (this.pending === undefined) return;
    this.clear();
    void this.retry();
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }

  private dueAt(now: number): number {
    const { spec, firstRun } = this.opts;
    const state = this.opts.state();
    // This process's own last run, once it has one, over the persisted one:
    // it is never older (the state is only written from it), and it is the
    // one that counts when the save failed, also when the persisted one is
    // later than now (a clock set back) and the run just made up for it.
    const lastRun = this.lastRun ?? state?.lastRun;
    if (lastRun !== undefined) {
      if (clockWentBack(lastRun, now)) this.warnClockBack(lastRun, now, 'last run is later than now: the clock was set back; running now');
      return nextRunAt(spec, lastRun, now, firstRun);
    }
    const key = JSON.stringify(spec);
    const first = nextRunAt(spec, undefined, now, firstRun);
    if (state?.firstDue !== undefined && state.spec === key) {
      // Saved as at most one period from the first start: a first run past the
      // one computed now was computed on a clock that has been set back since.
      if (!clockWentBack(state.firstDue, first)) return Math.max(state.firstDue, now);
      this.warnClockBack(state.firstDue, now, 'first run is further away than one period: the clock was set back; counting from now');
    }
    // Saved before it is waited for: a restart in between keeps this time.
    if (Number.isFinite(first)) this.opts.save({ firstDue: first, spec: key }).catch((err: unknown) => this.opts.onError(err));
    return first;
  }

  private warnClockBack(at: number, now: number, msg: string): void {
    this.opts.logger?.warn({ op: this.opts.name, at: new Date(at).toISOString(), now: new Date(now).toISOString(), aheadMs: at - now }, `schedule: ${msg}`);
  }

  private arm(at: number, fn: () => void): void {
    const { clock } = this.opts;
    if (!Number.isFinite(at)) return;
    // Timers cap at about 24.8 days; re-arm in steps for longer waits.
    const wait = Math.max(0, Math.min(at - clock.now(), 2 ** 31 - 1));
    const expected = clock.now() + wait;
    this.timer = clock.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      const now = clock.now();
      if (now >= at) return fn();
      // A timer waits out elapsed time, not the wall clock: short of its time
      // by more than the tolerance, the clock was set back while it waited.
      // The wait is over all the same; waiting for the wall clock to catch up
      // would add the whole correction (fire records the run at now).
      if (clockWentBack(expected, now)) {
        this.warnClockBack(expected, now, 'timer fired before its time: the clock was set back while it waited; running now');
        return fn();
      }
      this.arm(at, fn);
    }, wait);
  }

  private clear(): void {
    if (this.timer !== undefined) this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async fire(at: number, targets: string[]): Promise<void> {
    this.running = true;
    this.woke = false;
    let deferred: string[] = [];
    try {
      deferred = (await this.opts.job(targets)).deferred;
    } catch (err) {
      this.opts.onError(err);
    }
    this.running = false;
    if (this.stopped) return;
    if (deferred.length > 0) {
      const retryMs = this.pending?.at === at ? Math.min(this.pending.retryMs * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
      this.pending = { at, targets: deferred, retryMs };
      const { clock } = this.opts;
      // Past the next run's time the deferred targets join that run instead.
      const next = nextRunAt(this.opts.spec, at, clock.now(), this.opts.firstRun);
      const retryAt = this.woke ? clock.now() : clock.now() + retryMs;
      const woke = this.woke;
      this.woke = false;
      if (retryAt < next) {
        // What admin.health shows as the next run: the retry, not this run's own time, which is past.
        this.nextAt = retryAt;
        // A table came up during the run: retry at once, not through a timer
        // of zero (a simulated clock fires none until it is moved).
        if (woke) void this.retry();
        else this.arm(retryAt, () => void this.retry());
        return;
      }
    }
    this.pending = undefined;
    // A run's time is never later than now, but for a clock set back during
    // the wait (see arm) or the run: recorded as now, it is not due again at once.
    const lastRun = Math.min(at, this.opts.clock.now());
    this.lastRun = lastRun;
    try {
      await this.opts.save({ lastRun });
    } catch (err) {
      this.opts.onError(err);
    }
    this.start();
  }

  private async retry(): Promise<void> {
    const pending = this.pending;
    if (pending === undefined || this.stopped) return;
    await this.fire(pending.at, pending.targets);
  }
}
