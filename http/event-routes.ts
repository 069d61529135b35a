/**
 * The live event stream: `GET /api/events` is a Server-Sent Events stream of
 * every `backups.*` event on the bus (`event: <name>`, `data: <json>`), with
 * a comment line as heartbeat. Each client has its own bus subscription,
 * dropped when the client goes away or the server closes. `POST
 * /api/events/ticket` hands out the one-time tickets EventSource needs.
 */
import Ajv from 'ajv';
import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import { decodeJson, describeErrors, type Subscription } from '../bus';
import { BadRequestError } from '../store';
import { DEFAULT_MAX_EVENT_STREAMS } from '../supervisor';
import type { HttpContext } from './context';
import { HttpError } from './error-status';

/** A stream's buffered bytes past which the client is too slow and is dropped. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/** Open streams one client address may hold at once, by default. */
export const DEFAULT_MAX_STREAMS_PER_CLIENT = 8;

/**
 * Open event streams of one server, so that closing the server can end
 * them, and how many each client address holds, so that one client cannot
 * hold an unbounded number of subscriptions and sockets. `maxTotal` bounds
 * them all together: the per-client limit does not, since a client can
 * come from as many addresses as it has.
 */
export class EventStreams {
  private readonly open = new Map<() => void, string>();
  private readonly perClient = new Map<string, number>();

  constructor(
    readonly maxPerClient = DEFAULT_MAX_STREAMS_PER_CLIENT,
    readonly maxTotal = DEFAULT_MAX_EVENT_STREAMS,
  ) {}

  /** True when the server holds as many streams as it allows. */
  get full(): boolean {
    return this.open.size >= this.maxTotal;
  }

  get size(): number {
    return this.open.size;
  }

  /** Streams `client` holds now. */
  heldBy(client: string): number {
    return this.perClient.get(client) ?? 0;
  }

  /** Ends every open stream. */
  endAll(): void {
    for (const end of [...this.open.keys()]) end();
  }

  /** @internal */
  add(end: () => void, client: string): void {
    this.open.set(end, client);
    this.perClient.set(client, this.heldBy(client) + 1);
  }

  /** @internal */
  delete(end: () => void): void {
    const client = this.open.get(end);
    if (client === undefined) return;
    this.open.delete(end);
    const left = this.heldBy(client) - 1;
    if (left > 0) this.perClient.set(client, left);
    else this.perClient.delete(client);
  }
}

function write(res: ServerResponse, text: string): boolean {
  if (res.destroyed || res.writableEnded) return false;
  res.write(text);
  return res.writableLength <= MAX_BUFFERED_BYTES;
}

/** The ticket request takes no fields: no body, or `{}`; as on every POST route, an unknown field is a bad request. */
const validTicketRequest = new Ajv({ allErrors: true, strict: false }).compile({ type: 'object', additionalProperties: false });

/** Registers `/api/events` and `/api/events/ticket`. */
export function registerEventRoutes(app: FastifyInstance, ctx: HttpContext, streams: EventStreams): void {
  app.post('/api/events/ticket', { config: { access: 'read', operation: 'events.ticket' } }, async (req) => {
    if (req.body !== undefined && !validTicketRequest(req.body)) throw new BadRequestError(describeErrors(validTicketRequest.errors));
    // Auth ran in onRequest and left what the token grants.
    const ticket = ctx.tickets.issue(req.grant);
    return { ticket, expiresInMs: ctx.tickets.ttlMs };
  });

  app.get('/api/events', { config: { access: 'read', operation: 'events', ticket: true } }, (req, reply) => {
    if (streams.full) {
      ctx.log.warn({ op: 'events', ip: req.ip, open: streams.size, max: streams.maxTotal }, 'event stream refused: the server holds the most it allows');
      throw new HttpError('EVENT_STREAMS_FULL', `the server already holds ${streams.maxTotal} event streams, its limit; retry later`);
    }
    if (streams.heldBy(req.ip) >= streams.maxPerClient) {
      ctx.log.warn({ op: 'events', ip: req.ip, open: streams.heldBy(req.ip) }, 'event stream refused: too many from this client');
      throw new HttpError('TOO_MANY_STREAMS', `this client already has ${streams.maxPerClient} event streams open; close one first`);
    }
    const res = reply.raw;
    const pattern = ctx.subjects.allBackupEvents();
    const root = pattern.slice(0, -1); // `[prefix.]backups.`
    let ended = false;
    let heartbeat: NodeJS.Timeout | undefined;
    let sub: Subscription | undefined;
    // `slow`: the client stopped reading. Its socket is destroyed, not ended:
    // an end would wait behind the unread data and keep the socket open
    // after its stream stopped counting against the client's limit.
    const end = (slow = false): void => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      sub?.unsubscribe();
      streams.delete(end);
      ctx.metrics.streamClosed();
      ctx.log.debug({ op: 'events', ip: req.ip }, 'event stream closed');
      if (slow) res.destroy();
      else if (!res.writableEnded) res.end();
    };
    const send = (text: string): void => {
      if (!write(res, text)) end(!res.destroyed && !res.writableEnded);
    };
    // Subscribing first: if the bus is closed this throws, and the client gets a plain 503.
    sub = ctx.bus.subscribe(pattern, (msg) => {
      const name = msg.subject.startsWith(root) ? msg.subject.slice(root.length) : msg.subject;
      let data: string;
      try {
        // Re-encoded so that the data is one line whatever the publisher sent.
        data = JSON.stringify(decodeJson(msg.data));
      } catch (err) {
        ctx.log.warn({ op: 'events', event: name, err }, 'skipped an event that is not JSON');
        return;
      }
      send(`event: ${name}\ndata: ${data}\n\n`);
    });
    reply.hijack();
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    heartbeat = setInterval(() => send(': heartbeat\n\n'), ctx.heartbeatMs);
    heartbeat.unref();
    streams.add(end, req.ip);
    ctx.metrics.streamOpened();
    // Counted now: the onResponse hook that counts the other operations skips a stream that opened.
    ctx.metrics.countOperation('events');
    res.on('close', end);
    res.on('error', end);
    // The subscription is live before this first line, so a client that has read it misses no later event.
    write(res, 'retry: 3000\n: connected\n\n');
    ctx.log.debug({ op: 'events', ip: req.ip }, 'event stream opened');
  });
}
