/**
 * Probes and documents: `/healthz` (liveness), `/readyz` (readiness),
 * `/metrics`, `/api/openapi.json` and the dashboard at `/`.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { toTablekeeperError } from '../store';
import { callBusJson } from './bus-call';
import type { HttpContext } from './context';
import { DASHBOARD_HEADERS, DASHBOARD_HTML } from './dashboard';
import { RETRY_AFTER_UNAVAILABLE_S } from './error-status';
import { parseHealth, type HealthSummary } from './health-reply';
import { OPENAPI_DOCUMENT } from './openapi';

function notReady(reply: FastifyReply, reason: string, tables: { table: string; state: string }[]): FastifyReply {
  return reply
    .code(503)
    .header('retry-after', String(RETRY_AFTER_UNAVAILABLE_S))
    .send({ ready: false, reason, tables, error: { code: 'unavailable', message: reason } });
}

/** Registers the probe and document routes. */
export function registerProbeRoutes(app: FastifyInstance, ctx: HttpContext): void {
  // The probes also answer HEAD (some load balancers and checkers send it): the same status, no body.
  app.get('/healthz', { config: { access: 'public' }, exposeHeadRoute: true }, async () => ({ status: 'ok', service: ctx.lifecycle() }));

  // Ready means: the service has started, is not stopping, and every table
  // serves. Any other table state (opening, recovering, corrupt, down, ...)
  // makes it not ready, and the answer lists those tables.
  app.get('/readyz', { config: { access: 'public' }, exposeHeadRoute: true }, async (_req, reply) => {
    const lifecycle = ctx.lifecycle();
    if (lifecycle !== 'running') return notReady(reply, `the service is ${lifecycle}`, []);
    let health: HealthSummary;
    try {
      health = parseHealth(await callBusJson(ctx.bus, ctx.subjects.admin('health'), {}, ctx.probeTimeoutMs));
    } catch (err) {
      return notReady(reply, `admin.health did not answer: ${toTablekeeperError(err).message}`, []);
    }
    const waiting = health.tables.filter((t) => t.state !== 'serving').map((t) => ({ table: t.table, state: t.state }));
    if (waiting.length > 0) {
      return notReady(reply, `not serving: ${waiting.map((t) => `${t.table} (${t.state})`).join(', ')}`, waiting);
    }
    return { ready: true, tables: health.tables.length };
  });

  app.get('/metrics', { config: { access: 'read', operation: 'metrics' } }, async (_req, reply) => {
    const text = await ctx.metrics.render();
    return reply.type(ctx.metrics.contentType).send(text);
  });

  app.get('/api/openapi.json', { config: { access: 'public' } }, async () => OPENAPI_DOCUMENT);

  app.get('/', { config: { access: 'public' } }, async (_req, reply) => reply.headers(DASHBOARD_HEADERS).send(DASHBOARD_HTML));
}
