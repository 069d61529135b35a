import { BadRequestError, TablekeeperError, type ErrorCode, type ErrorOptions } from '../store';

/** A request got no reply within its timeout. */
export class BusTimeoutError extends TablekeeperError {
  constructor(subject: string, timeoutMs: number, options: ErrorOptions = {}) {
    super('BUS_TIMEOUT', `request on '${subject}' timed out after ${timeoutMs} ms`, {
      ...options,
      details: { subject, timeoutMs, ...options.details },
    });
  }
}

/** A request was sent to a subject nobody subscribes to. */
export class BusNoRespondersError extends TablekeeperError {
  constructor(subject: string, options: ErrorOptions = {}) {
    super('BUS_NO_RESPONDERS', `no responders on '${subject}'`, {
      ...options,
      details: { subject, ...options.details },
    });
  }
}

/** The bus is closed or draining. */
export class BusClosedError extends TablekeeperError {
  constructor(options?: ErrorOptions) {
    super('BUS_CLOSED', 'the bus is closed', options);
  }
}

/**
 * The connection to the NATS server is down and being re-established: a
 * request in flight, or made now, is failed at once (whatever it sent may be
 * lost), as is a publish. Code `BUS_CLOSED` (wire `unavailable`): retry later.
 */
export class BusDisconnectedError extends TablekeeperError {
  constructor(options?: ErrorOptions) {
    super('BUS_CLOSED', 'the NATS connection is down (reconnecting); retry later', options);
  }
}

/** A subject, queue name or header is malformed. Code `BAD_REQUEST`. */
export class InvalidSubjectError extends BadRequestError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A message (usually a reply) is larger than the bus can carry: over NATS,
 * the server's `max_payload`. Code `VALUE_TOO_LARGE` (wire `bad_request`).
 */
export class PayloadTooLargeError extends TablekeeperError {
  constructor(bytes: number, maxPayload: number, what = 'message', options: ErrorOptions = {}) {
    super('VALUE_TOO_LARGE', `${what} of ${bytes} bytes exceeds the NATS server's max_payload of ${maxPayload} bytes`, {
      ...options,
      details: { bytes, maxPayload, ...options.details },
    });
  }
}

/** Internal codes presented for each wire code when a remote error is rethrown locally. */
const CODE_FOR_WIRE: Readonly<Record<string, ErrorCode>> = {
  bad_request: 'BAD_REQUEST',
  not_found: 'TABLE_NOT_FOUND',
  unavailable: 'TABLE_UNAVAILABLE',
  corrupt: 'TABLE_CORRUPT',
  timeout: 'BUS_TIMEOUT',
  internal: 'INTERNAL',
};

/**
 * The far side of a request answered with `{error: {code, message}}`.
 * `wireCode` and `status` are what it sent; `code` is the closest internal
 * code (wire codes with no internal counterpart, such as `unauthorized`,
 * become `INTERNAL`), so generic error handling still sees a TablekeeperError.
 */
export class RemoteError extends TablekeeperError {
  /** The wire code as received, e.g. `not_found`. */
  readonly wireCode: string;
  /** HTTP-style status from `Nats-Service-Error-Code`, or the wire code's usual status. */
  readonly status: number;

  constructor(wireCode: string, message: string, status: number, options: ErrorOptions = {}) {
    super(CODE_FOR_WIRE[wireCode] ?? 'INTERNAL', message, {
      ...options,
      details: { wireCode, status, ...options.details },
    });
    this.wireCode = wireCode;
    this.status = status;
  }
}
