import { TablekeeperError, type ErrorOptions } from '../store/errors';

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
