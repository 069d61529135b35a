/**
 * Errors shared by every layer. Each failure has one class with a stable
 * uppercase `code`; messages may change, codes do not. `bus/error-codes.ts`
 * maps every code to a wire code and an HTTP status.
 */

/** Every stable error code Tablekeeper raises. */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'KEY_INVALID'
  | 'VALUE_TOO_LARGE'
  | 'UNKNOWN_OPERATION'
  | 'TABLE_NOT_FOUND'
  | 'TABLE_UNAVAILABLE'
  | 'TABLE_CLOSED'
  | 'TABLE_CORRUPT'
  | 'IO_ERROR'
  | 'MAINTENANCE_CONFLICT'
  | 'BACKUP_FAILED'
  | 'NO_BACKUP'
  | 'RECOVERY_FAILED'
  | 'CONFIG_INVALID'
  | 'BUS_TIMEOUT'
  | 'BUS_NO_RESPONDERS'
  | 'BUS_CLOSED'
  | 'INTERNAL';

/** Options accepted by every Tablekeeper error. */
export interface ErrorOptions {
  cause?: unknown;
  /** Structured, JSON-safe facts about the failure (table, offset, ...). */
  details?: Record<string, unknown>;
}

/** Base class: a stable `code`, `cause` chained, `name` equal to the class name. */
export class TablekeeperError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }
}

/** A request body or argument is malformed. */
export class BadRequestError extends TablekeeperError {
  constructor(message: string, options?: ErrorOptions) {
    super('BAD_REQUEST', message, options);
  }
}

/** A key breaks the key rules (non-empty string of at most 1 KiB in UTF-8). */
export class KeyInvalidError extends TablekeeperError {
  constructor(message: string, options?: ErrorOptions) {
    super('KEY_INVALID', message, options);
  }
}

/** A value is larger than the table's configured maximum. */
export class ValueTooLargeError extends TablekeeperError {
  constructor(bytes: number, max: number, options: ErrorOptions = {}) {
    super('VALUE_TOO_LARGE', `value is ${bytes} bytes; the limit is ${max}`, {
      ...options,
      details: { bytes, max, ...options.details },
    });
  }
}

/** A request named an operation the table does not have. */
export class UnknownOperationError extends TablekeeperError {
  constructor(operation: string, options: ErrorOptions = {}) {
    super('UNKNOWN_OPERATION', `unknown operation '${operation}'`, {
      ...options,
      details: { operation, ...options.details },
    });
  }
}

/** A request named a table that is not configured. */
export class TableNotFoundError extends TablekeeperError {
  constructor(table: string, options: ErrorOptions = {}) {
    super('TABLE_NOT_FOUND', `no table named '${table}'`, {
      ...options,
      details: { table, ...options.details },
    });
  }
}

/** The table exists but cannot serve right now (opening, recovering, restarting): retry later. */
export class TableUnavailableError extends TablekeeperError {
  constructor(table: string, state: string, options: ErrorOptions = {}) {
    super('TABLE_UNAVAILABLE', `table '${table}' is ${state}; retry later`, {
      ...options,
      details: { table, state, ...options.details },
    });
  }
}

/** An operation was attempted on a closed table file. */
export class TableClosedError extends TablekeeperError {
  constructor(table: string, options: ErrorOptions = {}) {
    super('TABLE_CLOSED', `table '${table}' is closed`, {
      ...options,
      details: { table, ...options.details },
    });
  }
}

/** Stored bytes failed their checksum or framing check. */
export class TableCorruptError extends TablekeeperError {
  readonly table: string;
  readonly offset: number;
  readonly reason: string;

  constructor(table: string, offset: number, reason: string, options: ErrorOptions = {}) {
    super('TABLE_CORRUPT', `table '${table}' is corrupt at offset ${offset}: ${reason}`, {
      ...options,
      details: { table, offset, reason, ...options.details },
    });
    this.table = table;
    this.offset = offset;
    this.reason = reason;
  }
}

/**
 * The file layer failed (write, fsync, rename, ...); the operation did not
 * take effect. Except with `details.undone === false`: a rejected write that
 * could not be cut off the file (see cut-marker.ts), which may be there once
 * the table is reopened; the message says so.
 */
export class StoreIoError extends TablekeeperError {
  constructor(table: string, operation: string, options: ErrorOptions = {}) {
    const cause = options.cause instanceof Error ? `: ${options.cause.message}` : '';
    const uncertain = options.details?.undone === false ? '; the write could not be undone on disk and may be there once the table reopens' : '';
    super('IO_ERROR', `table '${table}': ${operation} failed${cause}${uncertain}`, {
      ...options,
      details: { table, operation, ...options.details },
    });
  }
}

/** Runs one file operation of `table`, turning a failure into StoreIoError naming `operation`. */
export async function storeIo<T>(table: string, operation: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StoreIoError(table, operation, { cause: err });
  }
}

/** A compaction or backup was asked for while another one runs on the same table. */
export class MaintenanceConflictError extends TablekeeperError {
  constructor(table: string, requested: string, running: string, options: ErrorOptions = {}) {
    super('MAINTENANCE_CONFLICT', `table '${table}': cannot start ${requested} while ${running} runs`, {
      ...options,
      details: { table, requested, running, ...options.details },
    });
  }
}

/** A backup could not be made or did not verify; nothing of it was kept. */
export class BackupFailedError extends TablekeeperError {
  constructor(table: string, reason: string, options: ErrorOptions = {}) {
    const cause = options.cause instanceof Error ? `: ${options.cause.message}` : '';
    super('BACKUP_FAILED', `table '${table}': backup failed (${reason})${cause}`, {
      ...options,
      details: { table, reason, ...options.details },
    });
  }
}

/** A restore was asked for but the table has no backup that verifies. */
export class NoBackupError extends TablekeeperError {
  constructor(table: string, options: ErrorOptions = {}) {
    super('NO_BACKUP', `table '${table}' has no verified backup`, {
      ...options,
      details: { table, ...options.details },
    });
  }
}

/** A recovery or restore could not bring the table back; the damaged file stays in quarantine. */
export class RecoveryFailedError extends TablekeeperError {
  constructor(table: string, reason: string, options: ErrorOptions = {}) {
    const cause = options.cause instanceof Error ? `: ${options.cause.message}` : '';
    super('RECOVERY_FAILED', `table '${table}': recovery failed (${reason})${cause}`, {
      ...options,
      details: { table, reason, ...options.details },
    });
  }
}

/** The configuration is invalid; the message names every problem. */
export class ConfigInvalidError extends TablekeeperError {
  constructor(message: string, options?: ErrorOptions) {
    super('CONFIG_INVALID', message, options);
  }
}

/** The TableCorruptError in `err` or its causes, if any. */
export function corruptionIn(err: unknown): TableCorruptError | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof TableCorruptError) return e;
  }
  return null;
}

/** Something that should not happen happened. */
export class InternalError extends TablekeeperError {
  constructor(message: string, options?: ErrorOptions) {
    super('INTERNAL', message, options);
  }
}

/** Wraps any thrown value as a TablekeeperError (unknown errors become INTERNAL). */
export function toTablekeeperError(err: unknown): TablekeeperError {
  if (err instanceof TablekeeperError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(message, { cause: err });
}
