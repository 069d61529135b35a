/**
 * One bus request on behalf of an HTTP caller: the same subject and body a
 * NATS client would send. A success reply's bytes are handed back untouched,
 * so HTTP answers exactly what the bus answered; an error reply becomes a
 * `RemoteError` carrying the wire code and the status the reply sent.
 */
import {
  decodeJson,
  encodeJson,
  RemoteError,
  SERVICE_ERROR_CODE_HEADER,
  SERVICE_ERROR_HEADER,
  statusOfWire,
  type Bus,
  type Message,
} from '../bus';

// `{"error":`: a reply body of this shape is an error even without the headers.
const ERROR_HEAD = Buffer.from('{"error":');

function startsWithErrorHead(data: Uint8Array): boolean {
  if (data.length < ERROR_HEAD.length) return false;
  for (let i = 0; i < ERROR_HEAD.length; i++) if (data[i] !== ERROR_HEAD[i]) return false;
  return true;
}

/** The `RemoteError` an error reply stands for. */
export function remoteErrorOf(reply: Message): RemoteError {
  const header = reply.headers?.[SERVICE_ERROR_CODE_HEADER];
  const headerStatus = header === undefined ? undefined : Number.parseInt(header, 10) || 500;
  let code = 'internal';
  let message = reply.headers?.[SERVICE_ERROR_HEADER] || `remote error ${headerStatus ?? ''}`.trim();
  try {
    const body = decodeJson(reply.data);
    if (typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'object' && body.error !== null) {
      const e = body.error;
      if ('code' in e && typeof e.code === 'string') code = e.code;
      if ('message' in e && typeof e.message === 'string') message = e.message;
    }
  } catch {
    // The headers alone still say what failed.
  }
  // Without the header only the wire code is left, and its usual status (see WIRE_STATUS).
  return new RemoteError(code, message, headerStatus ?? statusOfWire(code));
}

/**
 * Sends `body` as JSON on `subject` and resolves with the reply's raw JSON
 * bytes. Rejects with `RemoteError` for an error reply, and with the bus's
 * own errors (`BusTimeoutError`, `BusNoRespondersError`, `BusClosedError`).
 */
export async function callBus(bus: Bus, subject: string, body: unknown, timeoutMs: number): Promise<Uint8Array> {
  return callBusBytes(bus, subject, encodeJson(body), timeoutMs);
}

/** `callBus` with a body already encoded as JSON bytes. */
export async function callBusBytes(bus: Bus, subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
  const reply = await bus.request(subject, data, { timeoutMs });
  if (reply.headers?.[SERVICE_ERROR_CODE_HEADER] !== undefined || startsWithErrorHead(reply.data)) {
    throw remoteErrorOf(reply);
  }
  return reply.data;
}

/** `callBus`, then the reply parsed (for the HTTP layer's own reads, such as readiness and metrics). */
export async function callBusJson(bus: Bus, subject: string, body: unknown, timeoutMs: number): Promise<unknown> {
  return decodeJson(await callBus(bus, subject, body, timeoutMs));
}
