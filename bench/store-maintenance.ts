/**
 * Maintenance benchmark of the table engine: online compaction and backup of
 * a large, half-dead table, against a plain file copy, with the latency of a
 * get+put loop that runs meanwhile.
 *
 * The table: `keys` keys of ~20 bytes with ~128-byte JSON-ish values, each
 * written twice (so half of the file's bytes are dead). The latency loop
 * runs one operation at a time, each a get of a random key then a put of a
 * random key awaited to its acknowledgement, and records the time from the
 * start of the get to the acknowledgement; the table uses `sync: 'none'` so
 * that the numbers show what maintenance adds (event-loop stalls, held
 * writes), not fsync latency. `baseline*` is the same loop with nothing
 * else running.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { backupTable, TableFile } from '../store';

/** What to run. */
export interface MaintenanceBenchOptions {
  /** Number of keys (each written twice). */
  keys: number;
  /** An empty directory to work in (the caller removes it). */
  dir: string;
  /** Value size in bytes; default 128. */
  valueBytes?: number;
}

/** Durations in milliseconds. */
export interface MaintenanceBenchResult {
  keys: number;
  /** Table file size before compaction, and its live part. */
  fileBytes: number;
  liveBytes: number;
  /** copyFile + fdatasync of the table file (before compaction). */
  copyMs: number;
  compactMs: number;
  /** compactMs / copyMs. */
  compactVsCopy: number;
  /** How long writes were held. */
  compactPausedMs: number;
  /** The get+put loop while compacting. */
  getPutOps: number;
  getPutP50Ms: number;
  getPutP99Ms: number;
  getPutMaxMs: number;
  /** Longest GC pause during the compaction, and GC time within its slowest op (ms). */
  compactGcMaxMs: number;
  compactGcMaxKind: string;
  compactGcInMaxMs: number;
  /** copyFile + fdatasync of the compacted file. */
  copyAfterMs: number;
  /** Backup of the compacted table (copy, fsync, read-back verification). */
  backupMs: number;
  /** backupMs / copyAfterMs. */
  backupVsCopy: number;
  backupOps: number;
  backupP99Ms: number;
  backupMaxMs: number;
  /** Longest GC pause during the backup, and GC time within its slowest op (ms). */
  backupGcMaxMs: number;
  backupGcMaxKind: string;
  backupGcInMaxMs: number;
  /** The loop with no maintenance running. */
  baselineP99Ms: number;
  baselineMaxMs: number;
  /**
   * CPU time (user + system, every thread of the process) of the same work
   * with nothing else running, on the table made half dead again: a
   * compaction and a plain copy of that file, then a backup and a plain copy
   * of the compacted file. Unlike durations, these hardly depend on what
   * else the machine is doing.
   */
  compactCpuMs: number;
  copyCpuMs: number;
  backupCpuMs: number;
  copyAfterCpuMs: number;
}

/** Builds the table, then measures a plain copy, a compaction and a backup, each with the latency loop beside it. */
export async function runMaintenanceBench(opts: MaintenanceBenchOptions): Promise<MaintenanceBenchResult> {
  const { keys, dir } = opts;
  const valueBytes = opts.valueBytes ?? 128;
  const file = path.join(dir, 'bench.tkt');
  const table = await TableFile.open({ table: 'bench', path: file, sync: 'none' });
  try {
    await fill(table, keys, valueBytes);
    await table.sync();
    const before = table.stats();

    const baseline = await measure(table, keys, valueBytes, () => pause(1000));
    // Each measured step starts with the file it reads in the page cache and
    // as much warm free memory as it writes (see warmFreeMemory).
    const warm = async (): Promise<void> => {
      await readThrough(file);
      warmFreeMemory(Math.ceil(table.stats().fileBytes * 2.5));
      // Lets the release of that memory (which V8 can finish on a background
      // thread) be over before the step starts: the compaction's p99 measured
      // 2.4 / 7.0 / 5.5 ms with this pause, 7.5 / 9.6 / 6.5 ms without.
      await pause(300);
    };
    const copyMs = await medianCopy(warm, file, path.join(dir, 'copy.tkt'));
    let compactPausedMs = 0;
    await warm();
    const compaction = await measure(table, keys, valueBytes, async () => {
      compactPausedMs = (await table.compact()).pausedMs;
    });
    await table.sync();
    const copyAfterMs = await medianCopy(warm, file, path.join(dir, 'copy.tkt'));
    await warm();
    const backup = await measure(table, keys, valueBytes, () => backupTable(table, path.join(dir, 'backups')).then(() => undefined));

    // The CPU cost of the same steps, alone: every key written once more makes the file about half dead again.
    await fill(table, keys, valueBytes, 1, 2);
    await table.sync();
    await warm();
    const copyCpuMs = await cpuOf(() => plainCopy(file, path.join(dir, 'copy.tkt')));
    await warm();
    const compactCpuMs = await cpuOf(() => table.compact());
    await table.sync();
    await warm();
    const copyAfterCpuMs = await cpuOf(() => plainCopy(file, path.join(dir, 'copy.tkt')));
    await warm();
    const backupCpuMs = await cpuOf(() => backupTable(table, path.join(dir, 'backups')));

    return {
      keys,
      fileBytes: before.fileBytes,
      liveBytes: before.liveBytes,
      copyMs,
      compactMs: compaction.ms,
      compactVsCopy: compaction.ms / copyMs,
      compactPausedMs,
      getPutOps: compaction.ops,
      getPutP50Ms: compaction.p50,
      getPutP99Ms: compaction.p99,
      getPutMaxMs: compaction.max,
      compactGcMaxMs: compaction.gcMax,
      compactGcMaxKind: compaction.gcMaxKind,
      compactGcInMaxMs: compaction.gcInMax,
      copyAfterMs,
      backupMs: backup.ms,
      backupVsCopy: backup.ms / copyAfterMs,
      backupOps: backup.ops,
      backupP99Ms: backup.p99,
      backupMaxMs: backup.max,
      backupGcMaxMs: backup.gcMax,
      backupGcMaxKind: backup.gcMaxKind,
      backupGcInMaxMs: backup.gcInMax,
      baselineP99Ms: baseline.p99,
      baselineMaxMs: baseline.max,
      compactCpuMs,
      copyCpuMs,
      backupCpuMs,
      copyAfterCpuMs,
    };
  } finally {
    await table.close();
  }
}

/** `k<10 digits>:profile`: 20 bytes. */
function benchKey(i: number): string {
  return `k${String(i).padStart(10, '0')}:profile`;
}

/** A JSON object of exactly `bytes` bytes (for bytes >= 40). */
function benchValue(i: number, round: number, bytes: number): Buffer {
  const head = `{"id":${i},"round":${round},"name":"user ${i}","note":"`;
  const tail = '"}';
  return Buffer.from(head + 'x'.repeat(Math.max(0, bytes - head.length - tail.length)) + tail);
}

/** Writes every key `rounds` times (twice by default), in batches; `first` numbers the first round (it goes into the values). */
async function fill(table: TableFile, keys: number, valueBytes: number, rounds = 2, first = 0): Promise<void> {
  for (let round = first; round < first + rounds; round++) {
    for (let start = 0; start < keys; start += 10000) {
      const puts: Promise<void>[] = [];
      for (let i = start; i < Math.min(keys, start + 10000); i++) puts.push(table.put(benchKey(i), benchValue(i, round, valueBytes)));
      await Promise.all(puts);
    }
  }
}

/**
 * Touches `bytes` of new memory and frees it, so that the kernel holds that
 * much free memory that is backed by the host. Virtual machines like this
 * one give memory that the guest left free for a few seconds back to the
 * host, and the first touch of such a page costs ~14 us: writing 165 MB to a
 * new file took ~600 ms that way against ~45 ms when the freed pages were
 * fresh. The file pages each step writes come from that free memory, so
 * without this a step's time would depend on how long the machine had been
 * idle before it (the plain copy of the same file measured 110-700 ms).
 */
function warmFreeMemory(bytes: number): void {
  let block: Buffer | undefined = Buffer.alloc(bytes);
  for (let i = 0; i < block.length; i += 4096) block[i] = 1;
  block = undefined;
  // The bench runs with --expose-gc; without it the block is freed at the next collection.
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * Reads a file through, so that its pages are in the page cache: this
 * machine's kernel can evict page-cache pages left unused (DAMON-based
 * reclaim runs on it).
 */
async function readThrough(file: string): Promise<void> {
  const handle = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let at = 0; ; at += buf.length) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, at);
      if (bytesRead < buf.length) break;
    }
  } finally {
    await handle.close();
  }
}

/** CPU time of `work` in every thread of the process (user + system), in ms. */
async function cpuOf(work: () => Promise<unknown>): Promise<number> {
  const before = process.cpuUsage();
  await work();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

/**
 * The median of three plain copies, each after `warm`: one copy of this
 * file measured 136-362 ms in back-to-back runs of the same code, and the
 * ratios to it moved with that.
 */
async function medianCopy(warm: () => Promise<void>, from: string, to: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    await warm();
    times.push(await plainCopy(from, to));
  }
  return times.sort((a, b) => a - b)[1];
}

/** copyFile + fdatasync, as a plain copy of the table file would do it. */
async function plainCopy(from: string, to: string): Promise<number> {
  const started = performance.now();
  await fs.promises.copyFile(from, to);
  const handle = await fs.promises.open(to, 'r+');
  await handle.datasync();
  await handle.close();
  const ms = performance.now() - started;
  await fs.promises.rm(to);
  return ms;
}

/** Runs `work` while the get+put loop runs; returns work's duration and the loop's latencies. */
async function measure(
  table: TableFile,
  keys: number,
  valueBytes: number,
  work: () => Promise<void>,
): Promise<LoopFigures> {
  const latencies: number[] = [];
  // The slowest op, and the garbage collections made meanwhile: is the maximum a GC pause?
  let slowest = { start: 0, end: 0 };
  const gcs: { start: number; end: number; kind: string }[] = [];
  const note = (e: PerformanceEntry): void => {
    gcs.push({ start: e.startTime, end: e.startTime + e.duration, kind: gcKind((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind) });
  };
  const observer = new PerformanceObserver((list) => list.getEntries().forEach(note));
  observer.observe({ entryTypes: ['gc'] });
  let done = false;
  let seed = 42;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const loop = (async () => {
    for (let round = 2; !done; round++) {
      const t0 = performance.now();
      table.get(benchKey(rand(keys)));
      const i = rand(keys);
      await table.put(benchKey(i), benchValue(i, round, valueBytes));
      const t1 = performance.now();
      if (t1 - t0 > slowest.end - slowest.start) slowest = { start: t0, end: t1 };
      latencies.push(t1 - t0);
    }
  })();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  done = true;
  await loop;
  observer.takeRecords().forEach(note);
  observer.disconnect();
  latencies.sort((a, b) => a - b);
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  let gcInMax = 0;
  let gcMax = 0;
  let gcMaxKind = 'none';
  for (const g of gcs) {
    if (g.end < started) continue;
    if (g.end - g.start > gcMax) {
      gcMax = g.end - g.start;
      gcMaxKind = g.kind;
    }
    gcInMax += Math.max(0, Math.min(g.end, slowest.end) - Math.max(g.start, slowest.start));
  }
  return { ms, ops: latencies.length, p50: at(0.5), p99: at(0.99), max: latencies[latencies.length - 1] ?? 0, gcMax, gcMaxKind, gcInMax };
}

/** The name of a GC entry's kind (perf_hooks.constants.NODE_PERFORMANCE_GC_*). */
function gcKind(kind: number | undefined): string {
  if (kind === constants.NODE_PERFORMANCE_GC_MINOR) return 'scavenge';
  if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) return 'mark-compact';
  if (kind === constants.NODE_PERFORMANCE_GC_INCREMENTAL) return 'incremental marking';
  if (kind === constants.NODE_PERFORMANCE_GC_WEAKCB) return 'weak callbacks';
  return 'other';
}

/** What the get+put loop saw beside one step. */
interface LoopFigures {
  ms: number;
  ops: number;
  p50: number;
  p99: number;
  max: number;
  /** Longest garbage-collection pause while the step ran (ms), and its kind. */
  gcMax: number;
  gcMaxKind: string;
  /** Time spent in garbage-collection pauses during the slowest op (ms). */
  gcInMax: number;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
