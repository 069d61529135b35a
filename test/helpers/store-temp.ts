/**
 * Temporary directories for store tests: each test gets its own under the OS
 * temp dir, removed afterwards.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Creates a fresh temporary directory whose name starts with `prefix`. */
export function makeTempDir(prefix = 'tk-store-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Removes a directory made by makeTempDir (and everything in it). */
export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Registers beforeEach/afterEach that give every test a fresh directory; read `.dir` inside a test. */
export function useTempDir(prefix?: string): { dir: string } {
  const holder = { dir: '' };
  beforeEach(() => {
    holder.dir = makeTempDir(prefix);
  });
  afterEach(() => {
    removeTempDir(holder.dir);
  });
  return holder;
}
