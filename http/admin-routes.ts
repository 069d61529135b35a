/**
 * Admin routes: each is one `admin.*` bus request with the body a NATS
 * client would send, validated with the contract's schemas first. The
 * mutations (compact, backup, restore, clear) also pass a per-client token bucket,
 * checked after validation and just before the request goes out.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { validateRequest } from '../bus/schemas';
import type { AdminOperation } from '../bus/subjects';
import { BadRequestError } from '../store/errors';
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
    if (Object.keys(req.query).length > 0) throw new BadRequestError('this route takes no query parameters');
    const data = await callBus(ctx.bus, ctx.subjects.admin('health'), validateRequest('admin.health', {}), ctx.requestTimeoutMs);
    return sendJsonBytes(reply, data);
  });

  app.get<{ Querystring: Query }>('/api/admin/history', { config: { access: 'read', operation: 'admin.history' } }, async (req, reply) => {
    const q = req.query;
    for (const name of Object.keys(q)) if (name !== 'limit') throw new BadRequestError(`${name}: is not a query parameter of this route`);
    const n = queryInteger(q, 'limit');
    const body = validateRequest('admin.history', n === undefined ? {} : { limit: n });
    return sendJsonBytes(reply, await callBus(ctx.bus, ctx.subjects.admin('history'), body, ctx.requestTimeoutMs));
  });

  const mutation = (op: Extract<AdminOperation, 'compact' | 'backup' | 'restore' | 'clear'>, perTable: boolean) => {
    const operation = `admin.${op}`;
    const url = perTable ? `/api/admin/${op}/:table` : `/api/admin/${op}`;
    app.post<{ Params: TableParams }>(url, { config: { access: 'admin', operation } }, async (req, reply) => {
      const table = perTable ? configuredTable(ctx, req.params.table) : undefined;
      const body = validateRequest(`admin.${op}`, optionalBody(req));
      limit(req, operation);
      ctx.log.info({ op: operation, table, ip: req.ip }, 'admin request over HTTP');
      return sendJsonBytes(reply, await callBus(ctx.bus, ctx.subjects.admin(op, table), body, ctx.adminTimeoutMs));
    });
  };
  mutation('compact', false);
  mutation('compact', true);
  mutation('backup', false);
  mutation('backup', true);
  mutation('restore', true);
  mutation('clear', true);
}
