/** Deterministic pseudo-random numbers in [0, n): the same sequence for the same seed (a linear congruential generator). */
export function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
}
