/**
 * deploy/nats-server.conf for tests: the same file with only its JetStream
 * store moved into a temporary directory (nats-server refuses `-sd` beside a
 * `store_dir` in the file), and made-up passwords for its `$VARIABLES`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/** The repository's root. */
export const ROOT = path.resolve(__dirname, '..', '..');

/** Passwords for the three users of deploy/nats-server.conf, passed to nats-server as environment variables. */
export const DEPLOY_PASSWORDS = {
  NATS_SERVICE_PASSWORD: 'svc-secret',
  NATS_APP_PASSWORD: 'app-secret',
  NATS_OPERATOR_PASSWORD: 'op-secret',
} as const;

/** Writes the deployed config into `dir` with its store under `dir/js`; returns the file's path. */
export function deployNatsConfigIn(dir: string): string {
  const text = readFileSync(path.join(ROOT, 'deploy', 'nats-server.conf'), 'utf8');
  if (!/^\s*store_dir: \/data$/m.test(text)) throw new Error('deploy/nats-server.conf no longer has store_dir: /data');
  const file = path.join(dir, 'nats-server.conf');
  writeFileSync(file, text.replace(/^(\s*)store_dir: \/data$/m, `$1store_dir: ${JSON.stringify(path.join(dir, 'js'))}`));
  return file;
}
