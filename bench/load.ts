/**
 * Closed-loop load: `concurrency` workers each issue one operation at a time
 * until `total` operations have completed. Returns operations per second.
 */
export async function closedLoop(
  total: number,
  concurrency: number,
  op: (i: number) => Promise<unknown>,
): Promise<{ opsPerSec: number; seconds: number }> {
  let next = 0;
  const started = process.hrtime.bigint();
  const worker = async () => {
    for (let i = next++; i < total; i = next++) await op(i);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { opsPerSec: total / seconds, seconds };
}

/** Runs `fn` once to warm up, then `runs` times, and returns the median result. */
export async function medianOf<T extends { opsPerSec: number }>(runs: number, fn: () => Promise<T>): Promise<T> {
  await fn();
  const results: T[] = [];
  for (let i = 0; i < runs; i++) results.push(await fn());
  results.sort((a, b) => a.opsPerSec - b.opsPerSec);
  return results[Math.floor(results.length / 2)];
}

/**
 * Runs every measure once to warm up, then `runs` rounds of all of them in
 * turn, and returns each one's median ops/s: measures compared with each
 * other then ran in the same stretch of time.
 */
export async function interleavedMedians<K extends string>(
  runs: number,
  measures: Record<K, () => Promise<{ opsPerSec: number }>>,
): Promise<Record<K, number>> {
  const names = Object.keys(measures) as K[];
  const results = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<K, number[]>;
  for (const n of names) await measures[n]();
  for (let round = 0; round < runs; round++) {
    for (const n of names) results[n].push((await measures[n]()).opsPerSec);
  }
  const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return Object.fromEntries(names.map((n) => [n, median(results[n])])) as Record<K, number>;
}

/** A key like `key-00000042`, the same shape in every benchmark. */
export function benchKey(i: number): string {
  return `key-${String(i).padStart(8, '0')}`;
}

/** A JSON value whose encoding is exactly `bytes` long. */
export function jsonValue(bytes: number): { v: string } {
  // {"v":"..."} has 8 bytes of framing around the string.
  return { v: 'x'.repeat(bytes - 8) };
}
