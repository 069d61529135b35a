/**
 * Exit codes of the operator commands (`status`, `compact`, `backup`,
 * `restore`), and how a failure maps to one. Scripts rely on these numbers:
 * they are documented in the README ("Operator CLI") and never change.
 */
import { BusClosedError, BusNoRespondersError, BusTimeoutError, RemoteError } from '../bus';

/** The exit codes of the operator commands. */
export const EXIT = {
  /** Everything asked for succeeded (compaction skipped under the threshold counts as success). */
  OK: 0,
  /** The service answered, but the operation failed for at least one table, or the service refused it. */
  FAILED: 1,
  /** The command line is wrong: unknown option, missing or extra argument, or a table the service does not have. */
  USAGE: 2,
  /** The service cannot be reached or did not answer in time. */
  UNREACHABLE: 3,
  /** The service (or the NATS server) refused the credentials or the permission. */
  AUTH: 4,
} as const;

/** One of `EXIT`'s values. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A command-line mistake, found before or after asking the service. Exit code 2. */
export class UsageError extends Error {
  override readonly name: string = 'UsageError';
}

/** A table name the service does not have (found by asking it). Exit code 2. */
export class UnknownTableError extends UsageError {
  override readonly name = 'UnknownTableError';

  constructor(table: string, known: readonly string[]) {
    super(`no table named '${table}' (tables: ${known.join(', ')})`);
  }
}

/** The service could not be reached at all (connection refused, reset, bad host). Exit code 3. */
export class UnreachableError extends Error {
  override readonly name = 'UnreachableError';
}

/** Credentials or permissions were refused (HTTP 401/403, NATS authorization). Exit code 4. */
export class AuthError extends Error {
  override readonly name = 'AuthError';
}

/** How a failure is reported: the exit code and the `code` of the `--json` error document. */
export interface FailureReport {
  exit: ExitCode;
  /** A wire code (`not_found`, `timeout`, ...) or `usage` / `unreachable` / `unauthorized`. */
  code: string;
  message: string;
}

/** Maps anything a command can throw to its exit code and a one-line message. */
export function reportFailure(err: unknown): FailureReport {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof UsageError) return { exit: EXIT.USAGE, code: 'usage', message };
  if (err instanceof AuthError) return { exit: EXIT.AUTH, code: 'unauthorized', message };
  if (err instanceof UnreachableError) return { exit: EXIT.UNREACHABLE, code: 'unreachable', message };
  if (err instanceof RemoteError) {
    if (err.wireCode === 'unauthorized' || err.status === 401 || err.status === 403) {
      return { exit: EXIT.AUTH, code: 'unauthorized', message };
    }
    if (err.wireCode === 'timeout' || err.status === 504) return { exit: EXIT.UNREACHABLE, code: 'timeout', message };
    return { exit: EXIT.FAILED, code: err.wireCode, message };
  }
  if (err instanceof BusTimeoutError) return { exit: EXIT.UNREACHABLE, code: 'timeout', message };
  if (err instanceof BusNoRespondersError || err instanceof BusClosedError) {
    return { exit: EXIT.UNREACHABLE, code: 'unreachable', message };
  }
  return { exit: EXIT.FAILED, code: 'internal', message };
}
