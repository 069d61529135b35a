/**
 * What the operator commands need from a running service: the four admin
 * requests, each answered with the reply body of the bus contract
 * (`admin.health`, `admin.compact[.<t>]`, `admin.backup[.<t>]`,
 * `admin.restore.<t>`). Two implementations: over the HTTP API and over NATS.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, type Config } from '../supervisor';
import { UsageError } from './exit-codes';
import { HttpAdminClient } from './http-admin-client';
import { NatsAdminClient } from './nats-admin-client';
import type { Target } from './remote-args';

/** A connection to a running service's admin operations. Replies are unchecked JSON. */
export interface AdminClient {
  /** Where it talks, for messages: a URL. */
  readonly where: string;
  health(timeoutMs: number): Promise<unknown>;
  /** One table, or every table in one request when `table` is undefined. */
  compact(table: string | undefined, force: boolean, timeoutMs: number): Promise<unknown>;
  backup(table: string | undefined, timeoutMs: number): Promise<unknown>;
  restore(table: string, timeoutMs: number): Promise<unknown>;
  /** Releases connections. Idempotent. */
  close(): Promise<void>;
}

/** Hooks the clients report through, e.g. waiting out a rate limit. */
export interface ClientNotices {
  notice(message: string): void;
}

/**
 * Opens a client for `target`. Settings the command line does not give
 * (NATS credentials and subject prefix, the admin token file) come from the
 * service's own configuration sources: the environment and `TABLEKEEPER_CONFIG`.
 */
export async function openAdminClient(target: Target, env: NodeJS.ProcessEnv, notices: ClientNotices): Promise<AdminClient> {
  if (target.kind === 'http') {
    return new HttpAdminClient(target.url, target.token ?? tokenFromDataDir(env), notices);
  }
  let config: Config;
  try {
    config = loadConfig({ env });
  } catch (err) {
    throw new UsageError((err as Error).message, { cause: err });
  }
  return NatsAdminClient.connect(target.url, config);
}

/**
 * The token the service generated for itself when none was configured, for
 * an operator on the service's own host. Undefined when it cannot be read.
 */
function tokenFromDataDir(env: NodeJS.ProcessEnv): string | undefined {
  try {
    const { dataDir } = loadConfig({ env });
    const token = readFileSync(join(dataDir, '.tablekeeper', 'admin-token'), 'utf8').trim();
    return token === '' ? undefined : token;
  } catch {
    return undefined;
  }
}
