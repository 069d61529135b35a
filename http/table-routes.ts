/**
 * Data routes: each is exactly one `tables.<t>.<op>` bus request with the
 * body a NATS client would send, validated first with the contract's own
 * schemas, and the reply body returned as the bus sent it.
 *
 * The table name must be a configured table, checked before anything else,
 * so nothing taken from the URL (`..`, `%2F`, dots, `*`, `>`) ever reaches a
 * subject. Keys travel only inside the JSON body, never in a subject, so any
 * valid key (slashes, dots and wildcards included) is safe.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { encodeJson, validateRequest, type RequestBodies } from '../bus';
import { BadRequestError } from '../store';
import { callBus, callBusBytes } from './bus-call';
import { configuredTable, type HttpContext } from './context';

interface TableParams {
  table: string;
}
interface KeyParams extends TableParams {
  key: string;
}
/** A parsed query string: each value a string, or an array when a parameter was repeated. */
type Query = Record<string, unknown>;

/** Sends a bus reply's JSON bytes as they are. */
export function sendJsonBytes(reply: FastifyReply, data: Uint8Array): FastifyReply {
  return reply.type('application/json; charset=utf-8').send(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}

/**
 * A query string parameter, or undefined. The server's onRequest hook has
 * already refused parameters the route does not list and repeated ones, so
 * what is here is a single string.
 */
export function queryString(query: Record<string, unknown>, name: string): string | undefined {
  return query[name] as string | undefined;
}

/** A positive whole number from the query string, left for the schema to range-check. */
export function queryInteger(query: Record<string, unknown>, name: string): number | undefined {
  const v = queryString(query, name);
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,9}$/.test(v)) throw new BadRequestError(`${name}: must be a whole number`);
  return Number(v);
}

/** Registers the `/api/tables/...` routes. */
export function registerTableRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const call = async (table: string, op: 'get' | 'put' | 'delete' | 'select' | 'stats', body: RequestBodies[typeof op], reply: FastifyReply) =>
    sendJsonBytes(reply, await callBus(ctx.bus, ctx.subjects.table(table, op), body, ctx.requestTimeoutMs));

  app.get<{ Params: KeyParams }>('/api/tables/:table/keys/:key', { config: { access: 'admin', operation: 'get' } }, async (req, reply) => {
    const table = configuredTable(ctx, req.params.table);
    return call(table, 'get', validateRequest('get', { key: req.params.key }), reply);
  });

  app.put<{ Params: KeyParams; Body: unknown }>('/api/tables/:table/keys/:key', { config: { access: 'admin', operation: 'put' } }, async (req, reply) => {
    const table = configuredTable(ctx, req.params.table);
    if (req.body === undefined) throw new BadRequestError('the body must be the JSON value to store (Content-Type: application/json)');
    const body = validateRequest('put', { key: req.params.key, value: req.body });
    // The value goes on as the client wrote it (a parse and a stringify would
    // drop digits of large integers); it parsed, so it is one JSON value.
    const raw = req.rawJson?.trim();
    const data = raw === undefined ? encodeJson(body) : Buffer.from(`{"key":${JSON.stringify(body.key)},"value":${raw}}`);
    return sendJsonBytes(reply, await callBusBytes(ctx.bus, ctx.subjects.table(table, 'put'), data, ctx.requestTimeoutMs));
  });

  app.delete<{ Params: KeyParams }>('/api/tables/:table/keys/:key', { config: { access: 'admin', operation: 'delete' } }, async (req, reply) => {
    const table = configuredTable(ctx, req.params.table);
    return call(table, 'delete', validateRequest('delete', { key: req.params.key }), reply);
  });

  app.get<{ Params: TableParams; Querystring: Query }>(
    '/api/tables/:table/keys',
    { config: { access: 'admin', operation: 'select', query: ['prefix', 'after', 'limit'] } },
    async (req, reply) => {
      const table = configuredTable(ctx, req.params.table);
      const q = req.query;
      const body: Record<string, unknown> = {};
      const prefix = queryString(q, 'prefix');
      const after = queryString(q, 'after');
      const limit = queryInteger(q, 'limit');
      if (prefix !== undefined) body.prefix = prefix;
      if (after !== undefined) body.after = after;
      if (limit !== undefined) body.limit = limit;
      return call(table, 'select', validateRequest('select', body), reply);
    },
  );

  app.get<{ Params: TableParams }>('/api/tables/:table/stats', { config: { access: 'admin', operation: 'stats' } }, async (req, reply) => {
    const table = configuredTable(ctx, req.params.table);
    return call(table, 'stats', validateRequest('stats', {}), reply);
  });
}
