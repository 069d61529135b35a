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

/**
 * Gives every test a fresh directory; read `.dir` inside a test. A test's
 * directory is removed before the next test starts (and the last one after
 * all of them), not in an afterEach: afterEach hooks run in the order they
 * were declared, so one declared here would remove the directory while a
 * later afterEach is still stopping the service that writes into it.
 */
export function useTempDir(prefix?: string): { dir: string } {
  const holder = { dir: '' };
  const removeLast = (): void => {
    if (holder.dir !== '') removeTempDir(holder.dir);
    holder.dir = '';
  };
  beforeEach(() => {
    removeLast();
    holder.dir = makeTempDir(prefix);
  });
  afterAll(removeLast);
  return holder;
}
