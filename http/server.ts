/**
 * The HTTP server: a fastify instance with the admin, data, event and probe
 * routes over the bus. Auth runs first (onRequest, before any body is
 * read), every failure is answered through `httpErrorAnswer`, and request
 * logs never hold the Authorization header or the URL's query string.
 */
import { isUtf8 } from 'node:buffer';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { Subjects, type Bus } from '../bus';
import { BadRequestError, TablekeeperError } from '../store';
import type { Config } from '../supervisor';
import { registerAdminRoutes } from './admin-routes';
import { resolveAdminToken } from './admin-token';
import { bearerToken, TokenAuth, type Credential, type Grant } from './auth';
import { routeOf, type HttpContext, type ServiceLifecycle } from './context';
import { HttpError, httpErrorAnswer } from './error-status';
import { DEFAULT_MAX_STREAMS_PER_CLIENT, EventStreams, registerEventRoutes } from './event-routes';
import { EventTickets } from './event-tickets';
import { HttpMetrics } from './metrics';
import { registerProbeRoutes } from './probe-routes';
import { registerPushRoutes, type PushRoutesOptions } from './push-routes';
import { TokenBucketLimiter } from './rate-limit';
import { registerTableRoutes } from './table-routes';

/** What `createHttpServer` needs; everything past `logger` has a default. */
export interface HttpServerOptions {
  config: Config;
  bus: Bus;
  logger: Logger;
  /** The admin token; default from `config.http.adminToken` or the token file (generated on first start). */
  adminToken?: string;
  /** Where the service is in its life, for `/readyz`; default always `running`. */
  lifecycle?: () => ServiceLifecycle;
  /** Wall clock in ms for the rate limiter, tickets and ages; default `Date.now`. */
  now?: () => number;
  /** SSE heartbeat period in ms; default 15 000. */
  heartbeatMs?: number;
  /** Data and read requests; default `config.supervisor.requestTimeoutMs`. */
  requestTimeoutMs?: number;
  /** Compaction, backup and restore; default 15 minutes. */
  adminTimeoutMs?: number;
  /** Readiness and metrics scrapes; default 3000 ms. */
  probeTimeoutMs?: number;
  /** Web Push key and subscriptions for `/api/push/*`; absent, those routes answer 404. */
  push?: PushRoutesOptions;
  /** The notifier, whose delivery outcomes `/metrics` counts. */
  notifier?: { onOutcome(listener: (channel: string, outcome: string) => void): () => void };
  /** This process's NATS micro-service id, so that `/metrics` asks its own `$SRV.STATS` (see HttpMetricsOptions). */
  serviceId?: string;
}

/** Log paths that could hold credentials; pino replaces them before anything is written. */
export const REDACTED_LOG_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'request.headers.authorization',
  'headers.authorization',
  'authorization',
  'req.query.ticket',
];

// A 1024-byte key, every byte percent-encoded, is 3072 characters.
const MAX_PARAM_LENGTH = 4096;

const registered = new WeakMap<FastifyInstance, { method: string; url: string }[]>();

/** The routes a server registered (method and fastify path), for checks against the OpenAPI document. */
export function routesOf(app: FastifyInstance): readonly { method: string; url: string }[] {
  return registered.get(app) ?? [];
}

function parseJsonBody(req: FastifyRequest, body: Buffer | string, done: (err: Error | null, body?: unknown) => void): void {
  // As on the bus: bytes that are not UTF-8 would be stored as U+FFFD, not as sent.
  if (typeof body !== 'string' && !isUtf8(body)) {
    done(new BadRequestError('body is not valid JSON (not UTF-8)'));
    return;
  }
  const text = typeof body === 'string' ? body : body.toString('utf8');
  if (text.trim() === '') {
    done(null, undefined);
    return;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    // Kept so that a put can store the value as written (see table-routes.ts).
    req.rawJson = text;
    done(null, parsed);
  } catch (cause) {
    done(new BadRequestError('body is not valid JSON', { cause }));
  }
}

/**
 * Answers a request that Node's HTTP parser rejected before fastify saw it
 * (a malformed request line, header or chunk; headers over the size limit; a
 * request that timed out), in the same error shape as every other answer,
 * then closes the connection: after a parse error the rest of its bytes
 * cannot be trusted.
 */
function clientErrorHandler(this: FastifyInstance, err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let code = 'bad_request';
  let message = 'malformed HTTP request';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = 'request headers (or URL) too large';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    code = 'timeout';
    message = 'request not received in time';
  }
  this.log.debug({ op: 'http', err: { code: err.code, message: err.message } }, 'client error');
  if (socket.writable) {
    const body = JSON.stringify({ error: { code, message } });
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Builds the server (not listening yet: call `listen`, or use `inject` in
 * tests). Resolving the admin token may generate and store it, so this may
 * throw `ConfigInvalidError` when the token file cannot be written.
 */
export function createHttpServer(opts: HttpServerOptions): FastifyInstance {
  const { config, bus } = opts;
  const log = opts.logger.child({ component: 'http' }, { redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } });
  const now = opts.now ?? Date.now;
  const adminToken =
    opts.adminToken ?? resolveAdminToken({ dataDir: config.dataDir, configured: config.http.adminToken, logger: log }).token;
  const auth = new TokenAuth(adminToken, config.http.readToken);
  const subjects = new Subjects(config.subjectPrefix);
  const ctx: HttpContext = {
    bus,
    subjects,
    log,
    tables: new Set(config.tables.map((t) => t.name)),
    metrics: new HttpMetrics({
      bus,
      subjects,
      logger: log,
      scrapeTimeoutMs: opts.probeTimeoutMs,
      now,
      serviceId: opts.serviceId,
      tables: config.tables.map((t) => t.name),
    }),
    limiter: new TokenBucketLimiter({ ...config.http.rateLimit, now }),
    tickets: new EventTickets({ now }),
    lifecycle: opts.lifecycle ?? (() => 'running'),
    requestTimeoutMs: opts.requestTimeoutMs ?? config.supervisor.requestTimeoutMs,
    adminTimeoutMs: opts.adminTimeoutMs ?? 15 * 60_000,
    probeTimeoutMs: opts.probeTimeoutMs ?? 3000,
    heartbeatMs: opts.heartbeatMs ?? 15_000,
  };
  const streams = new EventStreams(DEFAULT_MAX_STREAMS_PER_CLIENT, config.http.maxEventStreams);

  const sendError = (err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const a = httpErrorAnswer(err);
    const route = routeOf(req);
    const operation = req.routeOptions.config?.operation;
    if (a.unexpected) log.error({ op: operation ?? 'http', route, err }, 'request failed unexpectedly');
    else if (a.status >= 500) log.warn({ op: operation ?? 'http', route, status: a.status, code: a.body.error.code, error: a.body.error.message }, 'request failed');
    if (operation !== undefined) ctx.metrics.countError(operation, a.body.error.code);
    return reply.code(a.status).headers(a.headers).send(a.body);
  };

  // Typed as fastify's logger so that the instance is the plain `FastifyInstance` the route modules take.
  const fastifyLog: FastifyBaseLogger = log;
  const app = Fastify({
    loggerInstance: fastifyLog,
    // One debug line per request, written below; fastify's own request lines would include the URL.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.http.bodyLimitBytes,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    exposeHeadRoutes: false,
    // Closing is answered below, in the usual error shape, instead of fastify's own 503 body.
    return503OnClosing: false,
    frameworkErrors: (err, req, reply) => void sendError(err, req, reply),
    clientErrorHandler,
  });
  const routes: { method: string; url: string }[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const method of Array.isArray(r.method) ? r.method : [r.method]) routes.push({ method, url: r.url });
  });

  app.decorateRequest('grant', 'none' as Grant);
  app.decorateRequest('rawJson', undefined);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBody);

  // Every route lists the query parameters it takes; fastify's parser gives strings, and arrays for repeats.
  const checkQuery = (req: FastifyRequest): void => {
    const allowed = req.routeOptions.config.query ?? (req.routeOptions.config.ticket === true ? ['ticket'] : []);
    for (const [name, value] of Object.entries(req.query as Record<string, unknown>)) {
      if (!allowed.includes(name)) throw new BadRequestError(`${name}: is not a query parameter of this route`);
      if (typeof value !== 'string') throw new BadRequestError(`${name}: give it at most once`);
    }
  };

  let closing = false;
  app.addHook('onRequest', async (req) => {
    if (closing) throw new TablekeeperError('BUS_CLOSED', 'the service is stopping; retry later');
    if (req.routeOptions.url === undefined) return; // unknown route: 404 follows
    const access = req.routeOptions.config.access ?? 'admin';
    if (access === 'public') {
      checkQuery(req);
      return;
    }
    const given = bearerToken(req.headers.authorization);
    let grant = auth.grantOf(given);
    let presented: Credential = given === undefined ? 'none' : 'token';
    if (given === undefined && req.routeOptions.config.ticket === true) {
      // Hooks see the query untyped; fastify's parser always gives an object of strings and string arrays.
      const ticket = (req.query as Record<string, unknown>).ticket;
      if (Array.isArray(ticket)) throw new BadRequestError('ticket: give it at most once');
      if (typeof ticket === 'string') {
        presented = 'ticket';
        grant = ctx.tickets.redeem(ticket);
      }
    }
    req.grant = grant;
    try {
      TokenAuth.require(grant, access, presented);
    } catch (err) {
      // Never the token: only that one was missing or not accepted.
      log.warn({ op: 'auth', method: req.method, route: routeOf(req), ip: req.ip, presented, grant }, 'unauthorized request');
      throw err;
    }
    checkQuery(req);
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = routeOf(req);
    const operation = req.routeOptions.config?.operation;
    // An event stream that opened was counted when it opened (its reply is
    // hijacked, and this hook may still run when it ends); a refused one is counted here.
    const streamed = route === '/api/events' && reply.statusCode === 200;
    if (operation !== undefined && !streamed) ctx.metrics.countOperation(operation);
    // An event stream's duration is how long the client watched, not latency.
    if (route !== '/api/events') ctx.metrics.observeRequest(req.method, route, reply.statusCode, reply.elapsedTime / 1000);
    log.debug({ op: operation ?? 'http', method: req.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'http request');
  });

  app.setErrorHandler((err, req, reply) => sendError(err, req, reply));
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0];
    const shown = path.length > 200 ? `${path.slice(0, 200)}...` : path;
    void sendError(new HttpError('ROUTE_NOT_FOUND', `no route ${req.method} ${shown}`), req, reply);
  });

  registerProbeRoutes(app, ctx);
  registerAdminRoutes(app, ctx);
  registerTableRoutes(app, ctx);
  registerEventRoutes(app, ctx, streams);
  registerPushRoutes(app, opts.push);

  ctx.metrics.start();
  const stopCounting = opts.notifier?.onOutcome((channel, outcome) => ctx.metrics.countNotification(channel, outcome));
  // Event streams never end by themselves; end them so that close() does not wait on them.
  app.addHook('preClose', async () => {
    closing = true;
    streams.endAll();
  });
  app.addHook('onClose', async () => {
    stopCounting?.();
    ctx.metrics.stop();
  });
  return app;
}

/** Starts listening on `config.http.host:port` (port 0 picks a free one) and returns the base URL. */
export async function listenHttp(app: FastifyInstance, http: Config['http']): Promise<string> {
  const address = await app.listen({ host: http.host, port: http.port });
  return address;
}
