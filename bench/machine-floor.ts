/**
 * What the machine itself allows a busy thread, with none of our code
 * running: the longest time a thread that never blocks goes without running,
 * (a) alone, (b) while a second process keeps the other core busy, and
 * (c) while, besides that, a third process writes a file and fdatasyncs it
 * every 8 MiB, as a backup or a compaction does.
 *
 * The probe is a loop that reads the clock and does nothing else, so any
 * gap between two of its readings is time the thread did not run: preempted
 * by the kernel (the scheduler shares a core in slices of a few ms among the
 * threads that want it), or the virtual CPU itself not running. A latency of
 * our own below the longest stall in (c) cannot be had on this machine while
 * maintenance runs, whatever the service does.
 *
 * Each process is a plain `node -e` script (nothing of Tablekeeper's), run
 * for a fixed time; the helpers start first and stop after the probe.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Longest gap and the number of gaps over 8 ms, in one condition. */
export interface StallFigures {
  maxMs: number;
  over8: number;
}

export interface MachineFloor {
  alone: StallFigures;
  otherCoreBusy: StallFigures;
  otherCoreBusyAndWriting: StallFigures;
  probeMs: number;
}

const PROBE = `
const ms = Number(process.argv[1]);
const t0 = performance.now();
let last = t0, max = 0, over8 = 0;
for (;;) {
  const now = performance.now();
  const gap = now - last;
  if (gap > max) max = gap;
  if (gap > 8) over8++;
  last = now;
  if (now - t0 > ms) break;
}
process.stdout.write(JSON.stringify({ maxMs: max, over8 }));
`;

const BURN = `
const end = performance.now() + Number(process.argv[1]);
while (performance.now() < end);
`;

// 8 MiB in 256 KiB writes, then an fdatasync; over a 256 MiB region of a new file, round and round.
const WRITE = `
const fs = require('node:fs');
const [ms, file] = [Number(process.argv[1]), process.argv[2]];
const buf = Buffer.alloc(256 * 1024, 7);
const fd = fs.openSync(file, 'w');
const end = performance.now() + ms;
let pos = 0;
while (performance.now() < end) {
  for (let i = 0; i < 32; i++, pos += buf.length) fs.writeSync(fd, buf, 0, buf.length, pos % (256 * 1024 * 1024));
  fs.fdatasyncSync(fd);
}
fs.closeSync(fd);
fs.unlinkSync(file);
`;

function run(script: string, args: string[]): { child: ChildProcess; done: Promise<string> } {
  const child = spawn(process.execPath, ['-e', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  const done = new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`machine floor helper exited with ${code}`))));
  });
  return { child, done };
}

async function probeWith(helpers: ((ms: number) => { child: ChildProcess; done: Promise<string> })[], probeMs: number): Promise<StallFigures> {
  // The helpers run 300 ms before and after the probe, so it sees them at full load throughout.
  const started = helpers.map((h) => h(probeMs + 600));
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const probe = run(PROBE, [String(probeMs)]);
    return JSON.parse(await probe.done) as StallFigures;
  } finally {
    await Promise.allSettled(started.map((s) => s.done));
  }
}

/** Runs the three conditions one after the other, `probeMs` each. */
export async function measureMachineFloor(probeMs = 2000): Promise<MachineFloor> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tk-bench-floor-'));
  try {
    const burn = (ms: number) => run(BURN, [String(ms)]);
    const write = (ms: number) => run(WRITE, [String(ms), path.join(dir, 'write.bin')]);
    const alone = await probeWith([], probeMs);
    const otherCoreBusy = await probeWith([burn], probeMs);
    const otherCoreBusyAndWriting = await probeWith([burn, write], probeMs);
    return { alone, otherCoreBusy, otherCoreBusyAndWriting, probeMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
