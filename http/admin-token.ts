/**
 * Where the admin token comes from: `TABLEKEEPER_ADMIN_TOKEN` when set;
 * otherwise a token generated at the very first start (32 random bytes,
 * base64url) and kept in `<dataDir>/.tablekeeper/admin-token` (mode 0600),
 * which later starts read (narrowing a wider mode to 0600, with a warning).
 * The generated token is logged exactly once, at
 * warn level, when it is created; it is never logged again.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { readOrCreateSecret, secretFilePath } from './secret-file';

/** The token file's path under a data directory. */
export function adminTokenPath(dataDir: string): string {
  return secretFilePath(dataDir, 'admin-token');
}

/** How the admin token was obtained. */
export type AdminTokenSource = 'environment' | 'file' | 'generated';

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
  const { value: token, created } = readOrCreateSecret(file, 'admin token', () => randomBytes(32).toString('base64url'), opts.logger);
  if (!created) return { token, source: 'file' };
  // The one and only time the token is printed: the operator needs it once.
  opts.logger.warn(
    { op: 'admin-token', file, adminToken: token },
    'generated an HTTP admin token (shown only this once; it is kept in the file named here, or set TABLEKEEPER_ADMIN_TOKEN)',
  );
  return { token, source: 'generated' };
}
