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

/** A key like `key-00000042`, the same shape in every benchmark. */
export function benchKey(i: number): string {
  return `key-${String(i).padStart(8, '0')}`;
}

/** A JSON value whose encoding is exactly `bytes` long. */
export function jsonValue(bytes: number): { v: string } {
  // {"v":"..."} has 8 bytes of framing around the string.
  return { v: 'x'.repeat(bytes - 8) };
}
