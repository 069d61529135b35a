/**
 * Child process of the store crash test (test/store/crash.test.ts), run as
 * plain JavaScript transpiled by test/helpers/store-crash-build.ts.
 *
 * Usage: node store-crash-child.js <table file> <seed> <log file> [compact]
 *
 * With `compact`, it also compacts the table over and over while the writers
 * run, so that a kill lands in any step of a compaction.
 *
 * Opens the table with sync 'always' and runs WRITERS concurrent writers
 * doing random puts and deletes over a small key space until it is killed
 * (or its stdin closes). For every operation it appends to the log file:
 *   `S <id> P <key> <value>` or `S <id> D <key>`  just before calling put/delete,
 *   `A <id>`                                       after the promise resolved,
 * and also prints the `A` lines on stdout, for the parent to decide when to
 * kill it. The log is written with writeSync to a regular file, so a line is
 * in the page cache (which survives kill -9) before the next statement runs:
 * an `A` line is never logged for an unacknowledged operation, and an
 * operation is never started without its `S` line. (stdout is no such
 * record: a spawned child's stdout pipe is asynchronous when the parent
 * reads slowly, and lines still queued in the child die with it.)
 */
import * as fs from 'node:fs';
import { TableFile } from '../../store';

const WRITERS = 8;
const KEYS = 40;

async function main(): Promise<void> {
  const [file, seedArg, logFile, mode] = process.argv.slice(2);
  const log = fs.openSync(logFile, 'a');
  let seed = Number(seedArg) >>> 0 || 1;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const line = (s: string): void => {
    fs.writeSync(log, `${s}\n`);
    if (s.startsWith('A ')) process.stdout.write(`${s}\n`);
  };
  // The parent going away closes our stdin: stop rather than run forever.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();

  const table = await TableFile.open({ table: 'crash', path: file, sync: 'always' });
  let next = 0;
  const compactions = async (): Promise<void> => {
    for (;;) await table.compact();
  };
  await Promise.all([
    ...(mode === 'compact' ? [compactions()] : []),
    ...Array.from({ length: WRITERS }, async () => {
      for (let i = 0; i < 1_000_000; i++) {
        const id = `${seedArg}.${next++}`;
        const key = `k${rand(KEYS)}`;
        if (rand(5) === 0) {
          line(`S ${id} D ${key}`);
          await table.delete(key);
        } else {
          const value = `${id}:${'x'.repeat(rand(300))}`;
          line(`S ${id} P ${key} ${value}`);
          await table.put(key, Buffer.from(value));
        }
        line(`A ${id}`);
      }
    }),
  ]);
}

main().catch((err: unknown) => {
  process.stderr.write(`crash child failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(2);
});
