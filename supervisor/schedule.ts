import { Cron } from 'croner';
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
 * When a schedule runs next. The next run comes from the last run's time, not
 * from boot, so a restart neither skips nor repeats a run: an interval runs at
 * `last + every`; a cron expression at its first time after `last`. A run that
 * fell due while the service was down runs once, now. With no run yet,
 * `firstRun` decides: `now` (run at once) or `later` (one period from now).
 */
export function nextRunAt(spec: ScheduleSetting, lastRun: number | undefined, now: number, firstRun: 'now' | 'later'): number {
  if (lastRun === undefined) {
    if (firstRun === 'now') return now;
    return 'every' in spec ? now + parseDuration(spec.every) : cronAfter(spec.cron, now);
  }
  const due = 'every' in spec ? lastRun + parseDuration(spec.every) : cronAfter(spec.cron, lastRun);
  return Math.max(due, now);
}

function cronAfter(expr: string, from: number): number {
  const next = new Cron(expr, { paused: true }).nextRun(new Date(from));
  // An expression that never fires again (a date in the past) never runs.
  return next ? next.getTime() : Number.POSITIVE_INFINITY;
}

/**
 * Runs `job` at the times `nextRunAt` gives and records each run's scheduled
 * time with `record` once it has finished (failed runs too: they are retried
 * at the next run, not in a loop). A crash mid-run leaves the run unrecorded,
 * so it runs again after the restart instead of being skipped.
 */
export class Schedule {
  private timer: unknown;
  private stopped = false;
  nextAt: number | undefined;

  constructor(
    private readonly opts: {
      name: string;
      spec: ScheduleSetting;
      clock: Clock;
      firstRun: 'now' | 'later';
      lastRun: () => number | undefined;
      record: (at: number) => Promise<void>;
      job: () => Promise<void>;
      onError: (err: unknown) => void;
    },
  ) {}

  /** Arms the timer for the next run. */
  start(): void {
    if (this.stopped) return;
    const { clock } = this.opts;
    const now = clock.now();
    const at = nextRunAt(this.opts.spec, this.opts.lastRun(), now, this.opts.firstRun);
    this.nextAt = at;
    if (!Number.isFinite(at)) return;
    // Timers cap at about 24.8 days; re-arm in steps for longer waits.
    const wait = Math.min(at - now, 2 ** 31 - 1);
    this.timer = clock.setTimeout(() => {
      if (clock.now() < at) this.start();
      else void this.fire(at);
    }, wait);
  }

  private async fire(at: number): Promise<void> {
    try {
      await this.opts.job();
    } catch (err) {
      this.opts.onError(err);
    }
    try {
      await this.opts.record(at);
    } catch (err) {
      this.opts.onError(err);
    }
    this.start();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.opts.clock.clearTimeout(this.timer);
  }
}
