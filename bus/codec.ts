/**
 * JSON bodies on the bus, and the one shape of an error reply:
 * `{error: {code, message}}` with `code` the wire code from `ERROR_CODES`,
 * plus the NATS micro headers `Nats-Service-Error` (the message) and
 * `Nats-Service-Error-Code` (the HTTP status), so NATS tooling sees errors too.
 */
import { isUtf8 } from 'node:buffer';
import { BadRequestError, InternalError, toTablekeeperError } from '../store';
import type { Bus, Message, RequestOptions } from './bus';
import { ERROR_CODES, STATUS_WIRE, statusOfWire, type WireErrorCode } from './error-codes';
import { RemoteError } from './errors';

/** Header carrying an error reply's human-readable message (NATS micro convention). */
export const SERVICE_ERROR_HEADER = 'Nats-Service-Error';
/** Header carrying an error reply's HTTP status (NATS micro convention). */
export const SERVICE_ERROR_CODE_HEADER = 'Nats-Service-Error-Code';

/** The body of an error reply. */
export interface ErrorReply {
  error: { code: WireErrorCode; message: string };
}

const EMPTY = new Uint8Array(0);

/** JSON-encodes `value` as UTF-8; `undefined` becomes an empty body. */
export function encodeJson(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (text === undefined) return EMPTY;
  return Buffer.from(text, 'utf8');
}

/** Parses a JSON body; an empty body is `{}`. Throws `BadRequestError` for bad UTF-8 or JSON. */
export function decodeJson(data: Uint8Array): unknown {
  if (data.length === 0) return {};
  // isUtf8 + toString is several times faster than a fatal TextDecoder.
  if (!isUtf8(data)) throw new BadRequestError('body is not valid JSON');
  const text = Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new BadRequestError('body is not valid JSON', { cause });
  }
}

/** Replies with `body` as JSON. Returns what `msg.respond` returns. */
export function respondOk(msg: Message, body: unknown): boolean {
  return msg.respond(encodeJson(body));
}

/** The wire body and headers for an error; unknown thrown values become `INTERNAL`. */
export function errorReply(err: unknown): { body: ErrorReply; headers: Record<string, string> } {
  const e = toTablekeeperError(err);
  const mapping = ERROR_CODES[e.code] ?? ERROR_CODES.INTERNAL;
  return {
    body: { error: { code: mapping.wire, message: e.message } },
    headers: errorHeaders(e.message, mapping.status),
  };
}

function errorHeaders(message: string, status: number): Record<string, string> {
  return {
    // Header values may not hold line breaks; the body keeps the exact message.
    [SERVICE_ERROR_HEADER]: message.replace(/[\r\n]+/g, ' '),
    [SERVICE_ERROR_CODE_HEADER]: String(status),
  };
}

/**
 * Replies with a body built elsewhere, which may already be an error body
 * (`{error: {code, message}}` with a wire code, e.g. the outcome a
 * supervisor hands back for a deferred reply). Such a body goes with the
 * micro error headers like every other error reply, with the wire code's
 * usual status, so that `$SRV.STATS` and NATS tooling count it as an error.
 * Returns what `msg.respond` returns.
 */
export function respondJson(msg: Message, body: unknown): boolean {
  const remote = asErrorBody(body);
  if (remote === undefined) return msg.respond(encodeJson(body));
  return msg.respond(encodeJson(body), { headers: errorHeaders(remote.message, statusOfWire(remote.code)) });
}

/** Replies with a structured error for `err`. Returns what `msg.respond` returns. */
export function respondError(msg: Message, err: unknown): boolean {
  const { body, headers } = errorReply(err);
  return msg.respond(encodeJson(body), { headers });
}

/** True when a reply carries the micro error headers. */
export function isErrorReply(msg: Message): boolean {
  return msg.headers !== undefined && msg.headers[SERVICE_ERROR_CODE_HEADER] !== undefined;
}

/**
 * Sends `body` as JSON and returns the parsed reply. Throws `RemoteError`
 * when the reply is an error (`{error}` body, or micro error headers alone),
 * and the bus errors (`BusTimeoutError`, ...) as they are.
 */
export async function requestJson(
  bus: Bus,
  subject: string,
  body: unknown,
  opts?: RequestOptions,
): Promise<unknown> {
  const reply = await bus.request(subject, encodeJson(body), opts);
  const statusHeader = reply.headers?.[SERVICE_ERROR_CODE_HEADER];
  const status = statusHeader === undefined ? undefined : Number.parseInt(statusHeader, 10) || 500;
  let parsed: unknown;
  try {
    parsed = decodeJson(reply.data);
  } catch (cause) {
    if (status !== undefined) throw remoteFromHeaders(reply, status);
    throw new InternalError(`reply on '${subject}' is not valid JSON`, { cause });
  }
  const remote = asErrorBody(parsed);
  if (remote !== undefined) {
    throw new RemoteError(remote.code, remote.message, status ?? statusOfWire(remote.code));
  }
  if (status !== undefined) throw remoteFromHeaders(reply, status);
  return parsed;
}

function remoteFromHeaders(reply: Message, status: number): RemoteError {
  const message = reply.headers?.[SERVICE_ERROR_HEADER] || `remote error ${status}`;
  return new RemoteError(STATUS_WIRE[status] ?? 'internal', message, status);
}

function asErrorBody(v: unknown): { code: string; message: string } | undefined {
  if (typeof v !== 'object' || v === null || !('error' in v)) return undefined;
  const e: unknown = v.error;
  if (typeof e !== 'object' || e === null) return { code: 'internal', message: String(e) };
  const code = 'code' in e && typeof e.code === 'string' ? e.code : 'internal';
  const message = 'message' in e && typeof e.message === 'string' ? e.message : 'remote error';
  return { code, message };
}
