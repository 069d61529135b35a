import type { ErrorCode } from '../store';

/** Error codes that cross the bus in `{error: {code, message}}` replies. */
export type WireErrorCode =
  | 'bad_request'
  | 'not_found'
  | 'unavailable'
  | 'corrupt'
  | 'unauthorized'
  | 'timeout'
  | 'internal';

/** How one internal error code is presented on the bus and over HTTP. */
export interface ErrorCodeMapping {
  wire: WireErrorCode;
  /** HTTP status; also sent as `Nats-Service-Error-Code`. */
  status: number;
  /** One line for the README's error table. */
  doc: string;
}

/**
 * The one table that maps every internal code to its wire code and status.
 * A test checks that every `ErrorCode` is here and documented in the README.
 */
export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeMapping>> = {
  BAD_REQUEST: { wire: 'bad_request', status: 400, doc: 'The body is not JSON or does not match the schema.' },
  KEY_INVALID: { wire: 'bad_request', status: 400, doc: 'The key is empty, not a string, or longer than 1 KiB (UTF-8).' },
  VALUE_TOO_LARGE: { wire: 'bad_request', status: 413, doc: "The encoded value exceeds the table limit (default 1 MiB), or over NATS a reply carrying it would exceed the server's `max_payload`." },
  UNKNOWN_OPERATION: { wire: 'bad_request', status: 400, doc: 'The subject names an operation the table does not have.' },
  TABLE_NOT_FOUND: { wire: 'not_found', status: 404, doc: 'No table with that name is configured.' },
  TABLE_UNAVAILABLE: { wire: 'unavailable', status: 503, doc: 'The table is opening, recovering or restarting; retry later.' },
  TABLE_CLOSED: { wire: 'unavailable', status: 503, doc: 'The table is closed (the service is stopping); retry later.' },
  TABLE_CORRUPT: { wire: 'corrupt', status: 503, doc: 'Stored bytes failed their checksum; the table is being recovered.' },
  IO_ERROR: { wire: 'internal', status: 500, doc: 'The file system failed; the operation did not take effect, unless the message says it could not be undone on disk (see [Durability](#durability)).' },
  MAINTENANCE_CONFLICT: { wire: 'unavailable', status: 409, doc: 'A compaction or backup of the table is already running; retry later.' },
  BACKUP_FAILED: { wire: 'internal', status: 500, doc: 'The backup could not be written or did not verify; no backup was kept.' },
  NO_BACKUP: { wire: 'not_found', status: 404, doc: 'A restore was asked for but the table has no backup that verifies.' },
  RECOVERY_FAILED: { wire: 'internal', status: 500, doc: 'A recovery or restore could not bring the table back; the damaged file is kept in quarantine.' },
  CONFIG_INVALID: { wire: 'bad_request', status: 400, doc: 'The configuration is invalid.' },
  BUS_TIMEOUT: { wire: 'timeout', status: 504, doc: 'No reply arrived within the request timeout.' },
  BUS_NO_RESPONDERS: { wire: 'unavailable', status: 503, doc: 'Nobody serves that subject (service down or starting).' },
  BUS_CLOSED: { wire: 'unavailable', status: 503, doc: 'The bus connection is closed or draining.' },
  INTERNAL: { wire: 'internal', status: 500, doc: 'An unexpected failure; the service logged it.' },
};

/**
 * The usual status of each wire code: what a reply's `{error: {code}}` means
 * when it carries no `Nats-Service-Error-Code` header. Several internal codes
 * share a wire code with another status (a maintenance conflict is
 * `unavailable` with 409, an oversized value `bad_request` with 413), so only
 * the header keeps those: every Tablekeeper error reply carries it.
 */
export const WIRE_STATUS: Readonly<Record<WireErrorCode, number>> = {
  bad_request: 400,
  not_found: 404,
  unavailable: 503,
  corrupt: 503,
  unauthorized: 401,
  timeout: 504,
  internal: 500,
};

/**
 * The wire code of an answer known only by its status (no readable error
 * body): every status in `ERROR_CODES` and in the HTTP layer's own failures,
 * plus 403 and 502, which proxies and NATS permissions answer.
 */
export const STATUS_WIRE: Readonly<Record<number, WireErrorCode>> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'unauthorized',
  404: 'not_found',
  409: 'unavailable',
  413: 'bad_request',
  415: 'bad_request',
  429: 'unavailable',
  500: 'internal',
  502: 'unavailable',
  503: 'unavailable',
  504: 'timeout',
};

/** The usual status of a wire code that came off the wire (any string); 500 for an unknown one. */
export function statusOfWire(code: string): number {
  return Object.hasOwn(WIRE_STATUS, code) ? WIRE_STATUS[code as WireErrorCode] : 500;
}
