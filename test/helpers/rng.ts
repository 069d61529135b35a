/**
 * Deterministic pseudo-random numbers (a linear congruential generator) for
 * the seeded tests, campaigns and fuzzers: the same seed replays the same
 * run, so a failure names a seed that reproduces it.
 */
export class SeededRandom {
  constructor(private seed: number) {}

  /** An integer in [0, n). */
  int(n: number): number {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    return (this.seed >>> 8) % n;
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.int(1_000_000) < p * 1_000_000;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

/** Integers in [0, n), as a function: the same sequence for the same seed. */
export function rng(seed: number): (n: number) => number {
  const r = new SeededRandom(seed);
  return (n) => r.int(n);
}
