/**
 * What every route module shares: the bus and subjects, the configured
 * tables, limits, auth, metrics, and the per-route settings fastify carries
 * in `routeOptions.config`.
 */
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Bus, Subjects } from '../bus';
import { TableNotFoundError } from '../store';
import type { Access, Grant } from './auth';
import type { EventTickets } from './event-tickets';
import type { HttpMetrics } from './metrics';
import type { TokenBucketLimiter } from './rate-limit';

/** Where the surrounding service is in its life, for readiness. */
export type ServiceLifecycle = 'starting' | 'running' | 'stopping';

/** Shared by the route modules of one server. */
export interface HttpContext {
  bus: Bus;
  subjects: Subjects;
  log: Logger;
  /** The configured table names: the only ones that may reach a subject. */
  tables: ReadonlySet<string>;
  metrics: HttpMetrics;
  limiter: TokenBucketLimiter;
  tickets: EventTickets;
  lifecycle: () => ServiceLifecycle;
  /** Milliseconds for data requests and reads. */
  requestTimeoutMs: number;
  /** Milliseconds for compaction, backup and restore, which can take long. */
  adminTimeoutMs: number;
  /** Milliseconds for readiness and metrics `admin.health` requests. */
  probeTimeoutMs: number;
  /** SSE heartbeat period. */
  heartbeatMs: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** What the request's token (or event ticket) grants; set before the handler runs. */
    grant: Grant;
    /** The JSON body's text as it came, beside its parse (set by the JSON body parser). */
    rawJson?: string;
  }
  interface FastifyContextConfig {
    /** Who may call the route: anyone, any valid token, or the admin token. */
    access?: Access | 'public';
    /** The operation counted in metrics (`get`, `admin.backup`, ...). */
    operation?: string;
    /** The route also accepts a one-time `?ticket=` from `POST /api/events/ticket` (EventSource cannot send headers). */
    ticket?: boolean;
    /** The query parameters the route takes (each at most once); any other is 400. Default: none. */
    query?: readonly string[];
  }
}

/** Returns `name` when it is a configured table; `TableNotFoundError` otherwise, before any bus request. */
export function configuredTable(ctx: HttpContext, name: string): string {
  if (!ctx.tables.has(name)) throw new TableNotFoundError(name);
  return name;
}

/** The route pattern of a request (`/api/tables/:table/keys/:key`), never the raw URL; `unmatched` for 404s. */
export function routeOf(request: FastifyRequest): string {
  return request.routeOptions.url ?? 'unmatched';
}
