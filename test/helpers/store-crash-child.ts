/**
 * Child process of the store crash test (test/store/crash.test.ts), run as
 * plain JavaScript transpiled by test/helpers/store-crash-build.ts.
 *
 * Usage: node store-crash-child.js <table file> <seed>
 *
 * Opens the table with sync 'always' and runs WRITERS concurrent writers
 * doing random puts and deletes over a small key space until it is killed
 * (or its stdin closes). For every operation it prints, on stdout:
 *   `S <id> P <key> <value>` or `S <id> D <key>`  just before calling put/delete,
 *   `A <id>`                                       after the promise resolved.
 * stdout on a pipe is synchronous on Linux, so a line is in the pipe before
 * the next statement runs: an `A` line is never printed for an unacknowledged
 * operation, and an operation is never started without its `S` line.
 */
import { TableFile } from '../../store';

const WRITERS = 8;
const KEYS = 40;

async function main(): Promise<void> {
  const [file, seedArg] = process.argv.slice(2);
  let seed = Number(seedArg) >>> 0 || 1;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const line = (s: string): void => {
    process.stdout.write(`${s}\n`);
  };
  // The parent going away closes our stdin: stop rather than run forever.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();

  const table = await TableFile.open({ table: 'crash', path: file, sync: 'always' });
  let next = 0;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
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
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`crash child failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(2);
});
