/**
 * Where the admin token comes from: `TABLEKEEPER_ADMIN_TOKEN` when set;
 * otherwise a token generated at the very first start (32 random bytes,
 * base64url) and kept in `<dataDir>/.tablekeeper/admin-token` (mode 0600),
 * which later starts read (narrowing a wider mode to 0600, with a warning).
 * The generated token is logged exactly once, at warn level, when it is
 * created; it is never logged again.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { ConfigInvalidError } from '../store/errors';

/** The token file's path under a data directory. */
export function adminTokenPath(dataDir: string): string {
  return path.join(dataDir, '.tablekeeper', 'admin-token');
}

/** How the admin token was obtained. */
export type AdminTokenSource = 'environment' | 'file' | 'generated';

/**
 * A token file others can read (or write) is narrowed to 0600, with a
 * warning: the token may already have been read, so the operator should
 * know, but refusing to start would only break a working service.
 */
function narrowMode(file: string, logger: Logger): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return; // gone since it was read; the read already decided
  }
  if ((mode & 0o077) === 0) return;
  try {
    chmodSync(file, 0o600);
    logger.warn({ op: 'admin-token', file, mode: mode.toString(8), now: '600' }, 'the admin token file was readable by others; its mode is now 0600 (consider a new token)');
  } catch (err) {
    logger.warn({ op: 'admin-token', file, mode: mode.toString(8), err }, 'the admin token file is readable by others and its mode could not be changed to 0600');
  }
}

function readTokenFile(file: string, logger: Logger): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigInvalidError(`cannot read the admin token file ${file}: ${(err as Error).message}`, { cause: err });
  }
  narrowMode(file, logger);
  const token = text.trim();
  if (token === '') throw new ConfigInvalidError(`the admin token file ${file} is empty; delete it to generate a new token`);
  return token;
}

/**
 * Returns the admin token, generating and storing it when neither the
 * configuration nor the token file has one. Throws `ConfigInvalidError`
 * when the file cannot be read or written.
 */
export function resolveAdminToken(opts: { dataDir: string; configured?: string; logger: Logger }): {
  token: string;
  source: AdminTokenSource;
} {
  if (opts.configured !== undefined && opts.configured !== '') return { token: opts.configured, source: 'environment' };
  const file = adminTokenPath(opts.dataDir);
  const existing = readTokenFile(file, opts.logger);
  if (existing !== undefined) return { token: existing, source: 'file' };

  const token = randomBytes(32).toString('base64url');
  try {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // `wx`: when two starts race, the second fails here and reads the first one's token.
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const raced = readTokenFile(file, opts.logger);
      if (raced !== undefined) return { token: raced, source: 'file' };
    }
    throw new ConfigInvalidError(`cannot write the admin token file ${file}: ${(err as Error).message}`, { cause: err });
  }
  // The one and only time the token is printed: the operator needs it once.
  opts.logger.warn(
    { op: 'admin-token', file, adminToken: token },
    'generated an HTTP admin token (shown only this once; it is kept in the file named here, or set TABLEKEEPER_ADMIN_TOKEN)',
  );
  return { token, source: 'generated' };
}
