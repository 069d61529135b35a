/**
 * Admin routes: each is one `admin.*` bus request with the body a NATS
 * client would send, validated with the contract's schemas first. The
 * mutations (compact, backup, restore, clear) also pass a per-client token bucket,
 * checked after validation and just before the request goes out.
 *
 * The supervisor queues maintenance per table, so a second compaction or
 * backup of a table waits for the first and then runs again. Over HTTP that
 * is rarely meant (a double click, a client retrying after its own timeout),
 * so a compaction or backup of the same target (one table, or all) that this
 * server still has in flight is refused with 409 `MAINTENANCE_CONFLICT`
 * instead of being queued behind it.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { validateRequest, type AdminOperation } from '../bus';
import { BadRequestError, TablekeeperError } from '../store';
import { callBus } from './bus-call';
import { configuredTable, type HttpContext } from './context';
import { HttpError } from './error-status';
import { queryInteger, sendJsonBytes } from './table-routes';

interface TableParams {
  table: string;
}
/** A parsed query string: each value a string, or an array when a parameter was repeated. */
type Query = Record<string, unknown>;

/** A POST body that may be left out: no body at all counts as `{}`. */
function optionalBody(req: FastifyRequest): unknown {
  return req.body === undefined ? {} : req.body;
}

/** Registers the `/api/admin/...` routes. */
export function registerAdminRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const limit = (req: FastifyRequest, op: string): void => {
    const decision = ctx.limiter.take(req.ip);
    if (!decision.allowed) {
      ctx.log.warn({ op, ip: req.ip, retryAfterS: decision.retryAfterS }, 'admin mutation rate limited');
      throw new HttpError('RATE_LIMITED', `too many admin requests; retry in ${decision.retryAfterS} s`, {
        retryAfterS: decision.retryAfterS,
      });
    }
  };

  app.get<{ Querystring: Query }>('/api/admin/health', { config: { access: 'read', operation: 'admin.health' } }, async (req, reply) => {
    const data = await callBus(ctx.bus, ctx.subjects.admin('health'), validateRequest('admin.health', {}), ctx.requestTimeoutMs);
    return sendJsonBytes(reply, data);
  });

  app.get<{ Querystring: Query }>('/api/admin/history', { config: { access: 'read', operation: 'admin.history', query: ['limit'] } }, async (req, reply) => {
    const n = queryInteger(req.query, 'limit');
    const body = validateRequest('admin.history', n === undefined ? {} : { limit: n });
    return sendJsonBytes(reply, await callBus(ctx.bus, ctx.subjects.admin('history'), body, ctx.requestTimeoutMs));
  });

  // `compact:orders`, `backup:*`, ...: the compactions and backups this server has asked for and not yet had answered.
  const inFlight = new Set<string>();

  const mutation = (op: Extract<AdminOperation, 'compact' | 'backup' | 'restore' | 'clear'>, perTable: boolean) => {
    const operation = `admin.${op}`;
    const url = perTable ? `/api/admin/${op}/:table` : `/api/admin/${op}`;
    // A restore waits in the supervisor for the run under way (restores asked for meanwhile share one), and clearing is instant: neither is refused.
    const exclusive = op === 'compact' || op === 'backup';
    app.post<{ Params: TableParams }>(url, { config: { access: 'admin', operation } }, async (req, reply) => {
      const table = perTable ? configuredTable(ctx, req.params.table) : undefined;
      const body = validateRequest(`admin.${op}`, optionalBody(req));
      const key = `${op}:${table ?? '*'}`;
      if (exclusive && inFlight.has(key)) {
        const what = `${op === 'compact' ? 'a compaction' : 'a backup'} of ${table === undefined ? 'every table' : `'${table}'`}`;
        throw new TablekeeperError('MAINTENANCE_CONFLICT', `${what} asked for over HTTP is still queued or running; retry once it has answered`);
      }
      limit(req, operation);
      ctx.log.info({ op: operation, table, ip: req.ip }, 'admin request over HTTP');
      if (exclusive) inFlight.add(key);
      try {
        return sendJsonBytes(reply, await callBus(ctx.bus, ctx.subjects.admin(op, table), body, ctx.adminTimeoutMs));
      } finally {
        if (exclusive) inFlight.delete(key);
      }
    });
  };
  mutation('compact', false);
  mutation('compact', true);
  mutation('backup', false);
  mutation('backup', true);
  mutation('restore', true);
  mutation('clear', true);
}
