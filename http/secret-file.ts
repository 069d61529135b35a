/**
 * A secret kept in a file under the data directory: read when it exists
 * (narrowing a mode wider than 0600, with a warning), otherwise generated
 * once and written with mode 0600 (directory 0700). Used for the admin token
 * and the VAPID key pair.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { ConfigInvalidError } from '../store';

/** The file that keeps a generated secret under a data directory. */
export function secretFilePath(dataDir: string, name: string): string {
  return path.join(dataDir, '.tablekeeper', name);
}

/**
 * A secret file others can read (or write) is narrowed to 0600, with a
 * warning: the secret may already have been read, so the operator should
 * know, but refusing to start would only break a working service.
 */
function narrowMode(file: string, what: string, logger: Logger | undefined): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return; // gone since it was read; the read already decided
  }
  if ((mode & 0o077) === 0) return;
  try {
    chmodSync(file, 0o600);
    logger?.warn({ op: 'secret-file', what, file, mode: mode.toString(8), now: '600' }, `the ${what} file was readable by others; its mode is now 0600 (consider a new one)`);
  } catch (err) {
    logger?.warn({ op: 'secret-file', what, file, mode: mode.toString(8), err }, `the ${what} file is readable by others and its mode could not be changed to 0600`);
  }
}

function readSecretFile(file: string, what: string, logger: Logger | undefined): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigInvalidError(`cannot read the ${what} file ${file}: ${(err as Error).message}`, { cause: err });
  }
  narrowMode(file, what, logger);
  const value = text.trim();
  if (value === '') throw new ConfigInvalidError(`the ${what} file ${file} is empty; delete it to generate a new one`);
  return value;
}

/**
 * Returns the file's content (trimmed), or writes `generate()` to it and
 * returns that with `created: true`. Throws `ConfigInvalidError` when the
 * file cannot be read or written, or is empty.
 */
export function readOrCreateSecret(file: string, what: string, generate: () => string, logger?: Logger): { value: string; created: boolean } {
  const existing = readSecretFile(file, what, logger);
  if (existing !== undefined) return { value: existing, created: false };
  const value = generate();
  try {
    const dir = path.dirname(file);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Whole or not at all: written and fsynced under a name of its own, then
    // linked into place (a link, unlike a rename, fails when the name exists:
    // when two starts race, the second fails here and reads the first one's
    // secret), then the directory fsynced. A crash never leaves a partial file.
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, `${value}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, file);
    } finally {
      unlinkSync(tmp);
    }
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const raced = readSecretFile(file, what, logger);
      if (raced !== undefined) return { value: raced, created: false };
    }
    throw new ConfigInvalidError(`cannot write the ${what} file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return { value, created: true };
}
