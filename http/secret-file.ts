/**
 * A secret kept in a file under the data directory: read when it exists,
 * otherwise generated once and written with mode 0600 (directory 0700).
 * Used for the admin token and the VAPID key pair.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigInvalidError } from '../store/errors';

/** The file that keeps a generated secret under a data directory. */
export function secretFilePath(dataDir: string, name: string): string {
  return path.join(dataDir, '.tablekeeper', name);
}

function readSecretFile(file: string, what: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigInvalidError(`cannot read the ${what} file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const value = text.trim();
  if (value === '') throw new ConfigInvalidError(`the ${what} file ${file} is empty; delete it to generate a new one`);
  return value;
}

/**
 * Returns the file's content (trimmed), or writes `generate()` to it and
 * returns that with `created: true`. Throws `ConfigInvalidError` when the
 * file cannot be read or written, or is empty.
 */
export function readOrCreateSecret(file: string, what: string, generate: () => string): { value: string; created: boolean } {
  const existing = readSecretFile(file, what);
  if (existing !== undefined) return { value: existing, created: false };
  const value = generate();
  try {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // `wx`: when two starts race, the second fails here and reads the first one's secret.
    writeFileSync(file, `${value}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const raced = readSecretFile(file, what);
      if (raced !== undefined) return { value: raced, created: false };
    }
    throw new ConfigInvalidError(`cannot write the ${what} file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return { value, created: true };
}
