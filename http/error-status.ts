/**
 * The one table from a failure to an HTTP answer. Internal codes take their
 * wire code and status from `ERROR_CODES` (the same status the bus sends in
 * `Nats-Service-Error-Code`); a reply from the bus keeps the status it
 * carried; the few failures that exist only over HTTP are listed here.
 * Every answer has the body `{error: {code, message}}`. The wire codes'
 * usual statuses (`WIRE_STATUS`) and the statuses' wire codes
 * (`STATUS_WIRE`) live beside `ERROR_CODES`, for the bus and the CLI too.
 */
import { ERROR_CODES, RemoteError, WIRE_STATUS, type WireErrorCode } from '../bus';
import { TablekeeperError } from '../store';

/** Re-exported for the HTTP layer's users. */
export { WIRE_STATUS };

/** Failures that exist only over HTTP (no bus request was made or could be). */
export type HttpOnlyCode =
  | 'UNAUTHORIZED'
  | 'ROUTE_NOT_FOUND'
  | 'BODY_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'RATE_LIMITED'
  | 'TOO_MANY_STREAMS'
  | 'EVENT_STREAMS_FULL';

/** How an HTTP-only failure is answered. */
export interface HttpOnlyMapping {
  wire: WireErrorCode;
  status: number;
  /** One line for the README's status table. */
  doc: string;
}

/** HTTP-only failures, beside `ERROR_CODES` for everything else. */
export const HTTP_ONLY_ERRORS: Readonly<Record<HttpOnlyCode, HttpOnlyMapping>> = {
  UNAUTHORIZED: { wire: 'unauthorized', status: 401, doc: 'No `Authorization: Bearer` token, or not one that grants this route.' },
  ROUTE_NOT_FOUND: { wire: 'not_found', status: 404, doc: 'No such route.' },
  BODY_TOO_LARGE: { wire: 'bad_request', status: 413, doc: 'The request body is over the body limit.' },
  UNSUPPORTED_MEDIA_TYPE: { wire: 'bad_request', status: 415, doc: 'A body was sent that is not `application/json`.' },
  RATE_LIMITED: { wire: 'unavailable', status: 429, doc: 'Too many admin mutations from this client; wait `Retry-After` seconds.' },
  TOO_MANY_STREAMS: { wire: 'unavailable', status: 429, doc: 'This client already holds the most `/api/events` streams allowed at once; close one first.' },
  EVENT_STREAMS_FULL: { wire: 'unavailable', status: 503, doc: 'The server already holds `http.maxEventStreams` `/api/events` streams, from all clients together; retry later.' },
};

/** Seconds a client should wait before retrying a 503. */
export const RETRY_AFTER_UNAVAILABLE_S = 1;

/** A failure that exists only over HTTP; `code` is stable, as for every other error. */
export class HttpError extends Error {
  readonly code: HttpOnlyCode;
  /** Seconds to send as `Retry-After`, when the client may retry. */
  readonly retryAfterS?: number;

  constructor(code: HttpOnlyCode, message: string, options: { cause?: unknown; retryAfterS?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryAfterS = options.retryAfterS;
  }
}

/** What to send for a failure. */
export interface HttpErrorAnswer {
  status: number;
  body: { error: { code: WireErrorCode; message: string } };
  headers: Record<string, string>;
  /** True when the failure is ours (status 500 not reported by the bus) and deserves an error log. */
  unexpected: boolean;
}

const WIRE_CODES: ReadonlySet<string> = new Set(Object.keys(WIRE_STATUS));

/** Errors fastify raises itself, by their status. */
const FRAMEWORK_STATUS: Readonly<Record<number, HttpOnlyCode | 'BAD_REQUEST'>> = {
  400: 'BAD_REQUEST',
  404: 'ROUTE_NOT_FOUND',
  413: 'BODY_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
};

function answer(status: number, wire: WireErrorCode, message: string, unexpected = false, retryAfterS?: number): HttpErrorAnswer {
  const headers: Record<string, string> = {};
  if (retryAfterS !== undefined) headers['retry-after'] = String(retryAfterS);
  else if (status === 503) headers['retry-after'] = String(RETRY_AFTER_UNAVAILABLE_S);
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="tablekeeper"';
  return { status, body: { error: { code: wire, message } }, headers, unexpected };
}

function isStatus(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 400 && n <= 599;
}

/** A framework message may quote the whole URL (up to the 16 KiB header limit): at most 300 characters of it. */
function shortened(message: string): string {
  return message.length > 300 ? `${message.slice(0, 300)}...` : message;
}

/**
 * The HTTP answer for any thrown value: `HttpError`, a `RemoteError` from a
 * bus reply (its status as sent), any `TablekeeperError` (through
 * `ERROR_CODES`), fastify's own 4xx errors, and anything else as a 500 whose
 * message does not leak internals.
 */
export function httpErrorAnswer(err: unknown): HttpErrorAnswer {
  if (err instanceof HttpError) {
    const m = HTTP_ONLY_ERRORS[err.code];
    return answer(m.status, m.wire, err.message, false, err.retryAfterS);
  }
  if (err instanceof RemoteError) {
    const wire = WIRE_CODES.has(err.wireCode) ? (err.wireCode as WireErrorCode) : 'internal';
    const status = isStatus(err.status) ? err.status : WIRE_STATUS[wire];
    return answer(status, wire, err.message);
  }
  if (err instanceof TablekeeperError) {
    const m = ERROR_CODES[err.code] ?? ERROR_CODES.INTERNAL;
    return answer(m.status, m.wire, err.message, m.status === 500);
  }
  const status = typeof err === 'object' && err !== null && 'statusCode' in err ? err.statusCode : undefined;
  const kind = isStatus(status) ? FRAMEWORK_STATUS[status] : undefined;
  if (kind !== undefined && err instanceof Error) {
    if (kind === 'BAD_REQUEST') return answer(400, 'bad_request', shortened(err.message));
    const m = HTTP_ONLY_ERRORS[kind];
    return answer(m.status, m.wire, kind === 'ROUTE_NOT_FOUND' ? 'no such route' : err.message);
  }
  if (isStatus(status) && status < 500 && err instanceof Error) return answer(400, 'bad_request', shortened(err.message));
  return answer(500, 'internal', 'internal error; the service logged it', true);
}
