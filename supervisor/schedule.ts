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
    if (state?.lastRun !== undefined) return nextRunAt(spec, state.lastRun, now, firstRun);
    const key = JSON.stringify(spec);
    if (state?.firstDue !== undefined && state.spec === key) return Math.max(state.firstDue, now);
    const first = nextRunAt(spec, undefined, now, firstRun);
    // Saved before it is waited for: a restart in between keeps this time.
    if (Number.isFinite(first)) this.opts.save({ firstDue: first, spec: key }).catch((err: unknown) => this.opts.onError(err));
    return first;
  }

  private arm(at: number, fn: () => void): void {
    const { clock } = this.opts;
    if (!Number.isFinite(at)) return;
    // Timers cap at about 24.8 days; re-arm in steps for longer waits.
    const wait = Math.max(0, Math.min(at - clock.now(), 2 ** 31 - 1));
    this.timer = clock.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      if (clock.now() < at) this.arm(at, fn);
      else fn();
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
        // A table came up during the run: retry at once, not through a timer
        // of zero (a simulated clock fires none until it is moved).
        if (woke) void this.retry();
        else this.arm(retryAt, () => void this.retry());
        return;
      }
    }
    this.pending = undefined;
    try {
      await this.opts.save({ lastRun: at });
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
