/**
 * Cooperative time slicing for long synchronous loops (compaction, backup
 * verification) that run beside a serving table: work in slices of about
 * SLICE_MS and yield to the event loop between them, so that no get or put
 * waits behind the loop for longer than about one slice.
 *
 * ```ts
 * const slicer = new TimeSlicer();
 * for (const item of work) {
 *   process(item);
 *   if (slicer.due()) await slicer.yield();
 * }
 * ```
 */

/** Default slice of synchronous work between yields. */
export const SLICE_MS = 0.5;
// Calls of due() between clock reads (a clock read costs ~50 ns).
const CLOCK_EVERY = 64;

/** Tells a loop when its time slice is used up, and yields. */
export class TimeSlicer {
  private started = performance.now();
  private calls = 0;

  constructor(private readonly sliceMs: number = SLICE_MS) {}

  /** True when the slice is used up (reads the clock only every 64 calls). */
  due(): boolean {
    if (++this.calls % CLOCK_EVERY !== 0) return false;
    return performance.now() - this.started > this.sliceMs;
  }

  /** True when the slice is used up, reading the clock now (for loops whose steps are large). */
  dueNow(): boolean {
    return performance.now() - this.started > this.sliceMs;
  }

  /** Lets the event loop run (I/O callbacks, timers, other requests), then starts a new slice. */
  async yield(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.restart();
  }

  /** Starts a new slice (after an await that already let the event loop run). */
  restart(): void {
    this.started = performance.now();
  }
}
