import { ChildProcessByStdio, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { TableFile } from '../../store';
import { buildCrashChild, childEnv } from '../helpers/store-crash-build';
import { rng } from '../helpers/rng';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';

const ROUNDS = 24;

/** One operation as the child announced it, in the order the child issued them. */
interface SentOp {
  id: string;
  /** The value a put wrote; undefined for a delete. */
  value: string | undefined;
}

describe('table file crash', () => {
  let dir = '';
  let childJs = '';
  const running = new Set<ChildProcessByStdio<Writable, Readable, Readable>>();

  beforeAll(() => {
    dir = makeTempDir('tk-crash-');
    childJs = buildCrashChild(path.join(dir, 'build'));
  });

  afterAll(() => {
    // Only our own children, by pid, if a failed assertion left one behind.
    for (const child of running) if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
    removeTempDir(dir);
  });

  test('table file - every acknowledged write survives kill -9 at random moments', async () => {
    await killRounds('plain', ROUNDS);
  });

  test('table file - every acknowledged write survives kill -9 during online compactions, and no compaction file is left', async () => {
    const generation = await killRounds('compact', ROUNDS);
    // The kills landed while compactions ran: many completed, some were cut off.
    expect(generation).toBeGreaterThan(ROUNDS);
  });

  /** Runs `rounds` child processes on one table file, each killed at a random moment; checks every reopen. Returns the last generation. */
  async function killRounds(mode: 'plain' | 'compact', rounds: number): Promise<number> {
    const file = path.join(dir, `crash-${mode}.tkt`);
    let generation = 0;
    const history = new Map<string, SentOp[]>();
    const acked = new Set<string>();
    const rand = rng(12345);

    for (let round = 1; round <= rounds; round++) {
      // Kill after a random number of acknowledgements: the child keeps writing
      // while the parent reacts, so the moment it dies within a write is random.
      const killAfter = 1 + rand(round % 4 === 0 ? 5 : 200);
      const logFile = path.join(dir, `${mode}-round-${round}.log`);
      const args = [childJs, file, String(round), logFile, ...(mode === 'compact' ? ['compact'] : [])];
      const child = spawn(process.execPath, args, { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
      running.add(child);
      let stderr = '';
      let acksThisRound = 0;
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      // stdout only tells when to kill (its last lines may be lost); the log file is the record.
      child.stdout.on('data', (chunk: Buffer) => {
        for (const c of chunk.toString()) if (c === '\n' && ++acksThisRound === killAfter) process.kill(child.pid!, 'SIGKILL');
      });
      const [code, signal] = await new Promise<[number | null, string | null]>((resolve) =>
        child.on('close', (c, s) => resolve([c, s])),
      );
      running.delete(child);
      expect({ round, code, signal, stderr }).toEqual({ round, code: null, signal: 'SIGKILL', stderr: '' });
      for (const text of fs.readFileSync(logFile, 'utf8').split('\n')) {
        const [tag, id, kind, key, value] = text.split(' ');
        if (tag === 'S') {
          if (!history.has(key)) history.set(key, []);
          history.get(key)!.push({ id, value: kind === 'P' ? value : undefined });
        } else if (tag === 'A') {
          acked.add(id);
        }
      }

      const table = await TableFile.open({ table: 'crash', path: file });
      // Open deleted any compaction file the kill left behind. (A write the
      // kill cut short leaves a torn tail, whose bytes the open keeps aside
      // in a `.torn-` file: not data, and not a leftover of the compaction.)
      const beside = fs.readdirSync(dir).filter((name) => name.startsWith(path.basename(file)) && !name.includes('.torn-'));
      expect(beside).toEqual([path.basename(file)]);
      generation = table.generation;
      try {
        for (const [key, ops] of history) {
          // The last acknowledged op on the key, or any op sent after it (it may
          // have become durable without its ack reaching us). With no
          // acknowledged op, the key may also be absent.
          let last = -1;
          ops.forEach((op, i) => {
            if (acked.has(op.id)) last = i;
          });
          const allowed = new Set(ops.slice(Math.max(last, 0)).map((op) => op.value));
          if (last < 0) allowed.add(undefined);
          const actual = table.get(key)?.toString();
          if (!allowed.has(actual)) {
            throw new Error(`round ${round}, key ${key}: found ${actual}; allowed ${JSON.stringify([...allowed])}; last acked ${ops[last]?.id}`);
          }
        }
        for (const item of table.select({ limit: 1000 }).items) expect(history.has(item.key)).toBe(true);
      } finally {
        await table.close();
      }
    }
    expect(acked.size).toBeGreaterThan(rounds);
    return generation;
  }
});
