/**
 * Picks the bus: NATS when a URL is configured (`NATS_URL`), otherwise the
 * embedded in-process bus.
 */
import type { Logger } from 'pino';
import type { Bus } from './bus';
import { InProcessBus } from './in-process-bus';
import { NatsBus, type NatsBusOptions } from './nats-bus';

/** Options for `createBus`. */
export interface CreateBusOptions extends Omit<NatsBusOptions, 'servers'> {
  /** NATS server URL(s); when absent or empty the in-process bus is used. */
  natsUrl?: string;
  logger?: Logger;
}

/** Connects to NATS when `natsUrl` is given, else returns a new `InProcessBus`. */
export async function createBus(opts: CreateBusOptions = {}): Promise<Bus> {
  const { natsUrl, ...rest } = opts;
  if (natsUrl !== undefined && natsUrl.trim() !== '') {
    return NatsBus.connect({ ...rest, servers: natsUrl });
  }
  return new InProcessBus({ logger: opts.logger });
}
