/**
 * Maintenance work that must be over before the data directory is let go:
 * recoveries (which rebuild and rename table files) and the history
 * table's close. One registry serves every maintenance actor a supervisor
 * runs, so that a restarted actor can wait for what the crashed one left
 * running before it takes up the same journals, and a stop can wait for
 * all of it before the service releases its lock.
 */
export class RunRegistry {
  private readonly runs = new Map<string, Set<Promise<unknown>>>();

  /** Notes `run` under `key` (a table name, or a name of the caller's for work of no one table) until it settles. */
  add(key: string, run: Promise<unknown>): void {
    let set = this.runs.get(key);
    if (set === undefined) this.runs.set(key, (set = new Set()));
    set.add(run);
    const done = (): void => {
      set.delete(run);
      if (set.size === 0 && this.runs.get(key) === set) this.runs.delete(key);
    };
    run.then(done, done);
  }

  /** True while some run of `key` has not settled. */
  busy(key: string): boolean {
    return this.runs.has(key);
  }

  /** Resolves once the runs of `key` noted so far have settled (not those added later). Never rejects. */
  async current(key: string): Promise<void> {
    await Promise.allSettled([...(this.runs.get(key) ?? [])]);
  }

  /**
   * Resolves once every run of `key` (or every run but those of `except`),
   * including any added meanwhile, has settled. Never rejects.
   */
  async settled(key?: string, except?: string): Promise<void> {
    for (;;) {
      const pending =
        key === undefined ? [...this.runs].filter(([k]) => k !== except).flatMap(([, s]) => [...s]) : [...(this.runs.get(key) ?? [])];
      if (pending.length === 0) return;
      await Promise.allSettled(pending);
    }
  }
}
