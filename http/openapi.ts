/**
 * The OpenAPI 3.1 description of the HTTP API, written by hand and served at
 * `GET /api/openapi.json`. Request bodies reuse the contract's own JSON
 * schemas (`bus/schemas.ts`), which are JSON Schema 2020-12 as OpenAPI 3.1
 * expects. A test checks that it lists exactly the routes the server has.
 */
import { BACKUP_EVENTS, OPERATIONS, VERSION } from '../bus';
import { PUSH_SUBSCRIPTION_SCHEMA, PUSH_UNSUBSCRIBE_SCHEMA } from './push-routes';

type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Schema) => ({ 'application/json': { schema } });
const ok = (description: string, schema: Schema) => ({ description, content: json(schema) });
const err = (description: string) => ({ description, content: json(ref('Error')) });

const tableParam = {
  name: 'table',
  in: 'path',
  required: true,
  description: 'A configured table; any other name is 404 before any bus request.',
  schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' },
};
const keyParam = {
  name: 'key',
  in: 'path',
  required: true,
  description: 'The key, percent-encoded (1 to 1024 bytes of UTF-8; `/` as `%2F`).',
  schema: { type: 'string', minLength: 1, maxLength: 1024 },
};

/** Error answers every authenticated route can give. */
const authErrors = { '401': err('Missing or wrong bearer token (`WWW-Authenticate: Bearer`).') };
const busErrors = {
  '503': err('Unavailable or corrupt (table opening, recovering, down); retry after `Retry-After` seconds.'),
  '504': err('No reply within the request timeout.'),
  '500': err('Internal error.'),
};
const mutationErrors = {
  '400': err('Bad body.'),
  ...authErrors,
  '409': err('A compaction or backup of the same target asked for over HTTP is still in flight.'),
  '413': err('Body too large.'),
  '415': err('A body that is not application/json.'),
  '429': err('Too many admin mutations from this client; retry after `Retry-After` seconds.'),
  ...busErrors,
};
const dataErrors = { '400': err('Bad key or query.'), ...authErrors, '404': err('Unknown table.'), ...busErrors };

function mutation(summary: string, op: 'admin.compact' | 'admin.backup' | 'admin.restore' | 'admin.clear', perTable: boolean) {
  return {
    post: {
      summary,
      tags: ['admin'],
      parameters: perTable ? [tableParam] : [],
      requestBody: { required: false, content: json(OPERATIONS[op].request as Schema) },
      responses: {
        '200': ok('The bus reply, as it was sent.', ref('AdminRunReply')),
        ...(perTable ? { '404': err('Unknown table (or, for restore, no verified backup).') } : {}),
        ...mutationErrors,
      },
    },
  };
}

/** The OpenAPI document. */
export const OPENAPI_DOCUMENT = {
  openapi: '3.1.0',
  info: {
    title: 'Tablekeeper HTTP API',
    version: VERSION,
    description:
      'Admin and data API over the same bus requests a NATS client sends (same bodies, same replies). ' +
      'Errors are `{"error": {"code", "message"}}`. Admin and data routes need `Authorization: Bearer <token>`.',
  },
  servers: [{ url: '/' }],
  components: {
    securitySchemes: {
      admin: { type: 'http', scheme: 'bearer', description: 'The admin token: every route.' },
      read: { type: 'http', scheme: 'bearer', description: 'The read-only token: admin health and history, events, metrics.' },
    },
    schemas: {
      Error: { type: 'object', required: ['error'], properties: { error: ref('ErrorBody') } },
      ErrorBody: {
        type: 'object',
        required: ['code', 'message'],
        properties: {
          code: { enum: ['bad_request', 'not_found', 'unavailable', 'corrupt', 'unauthorized', 'timeout', 'internal'] },
          message: { type: 'string' },
        },
      },
      GetReply: OPERATIONS.get.reply,
      PutReply: OPERATIONS.put.reply,
      DeleteReply: OPERATIONS.delete.reply,
      SelectReply: OPERATIONS.select.reply,
      StatsReply: OPERATIONS.stats.reply,
      AdminRunReply: {
        type: 'object',
        properties: { results: { type: 'array', items: { type: 'object' } }, durationMs: { type: 'number' } },
      },
      HealthReply: {
        type: 'object',
        required: ['status', 'tables'],
        properties: {
          status: { enum: ['ok', 'degraded'] },
          tables: {
            type: 'array',
            items: {
              type: 'object',
              required: ['table', 'state'],
              properties: {
                table: { type: 'string' },
                state: { type: 'string' },
                stats: { type: 'object' },
                lastBackup: { type: ['object', 'null'] },
                backups: { type: 'integer' },
                lastCompaction: { type: ['object', 'null'] },
                restarts: { type: 'integer' },
                recoveries: { type: 'object' },
                scrub: { type: ['object', 'null'] },
                degraded: {},
              },
            },
          },
          nextRuns: { type: 'object' },
        },
      },
      HistoryReply: { type: 'object', required: ['entries'], properties: { entries: { type: 'array', items: { type: 'object' } } } },
      Readiness: {
        type: 'object',
        required: ['ready'],
        properties: {
          ready: { type: 'boolean' },
          tables: { oneOf: [{ type: 'integer' }, { type: 'array', items: { type: 'object', properties: { table: { type: 'string' }, state: { type: 'string' } } } }] },
          reason: { type: 'string' },
          error: ref('ErrorBody'),
        },
      },
    },
  },
  security: [{ admin: [] }],
  paths: {
    '/': {
      get: {
        summary: 'Dashboard (HTML; asks for a token, kept in sessionStorage)',
        tags: ['probes'],
        security: [],
        responses: { '200': { description: 'The page.', content: { 'text/html': { schema: { type: 'string' } } } } },
      },
    },
    '/push-worker.js': {
      get: {
        summary: "The dashboard's service worker, which shows Web Push notifications",
        tags: ['push'],
        security: [],
        responses: { '200': { description: 'JavaScript.', content: { 'text/javascript': { schema: { type: 'string' } } } } },
      },
    },
    '/healthz': {
      get: {
        summary: 'Liveness: the process answers',
        tags: ['probes'],
        security: [],
        responses: { '200': ok('Alive.', { type: 'object', properties: { status: { const: 'ok' }, service: { type: 'string' } } }) },
      },
      head: { summary: 'Liveness, status only', tags: ['probes'], security: [], responses: { '200': { description: 'Alive.' } } },
    },
    '/readyz': {
      get: {
        summary: 'Readiness: every table is serving',
        tags: ['probes'],
        security: [],
        responses: {
          '200': ok('Every table serves.', ref('Readiness')),
          '503': ok('Starting, stopping, or some table is not serving (listed), with `Retry-After`.', ref('Readiness')),
        },
      },
      head: {
        summary: 'Readiness, status only',
        tags: ['probes'],
        security: [],
        responses: { '200': { description: 'Every table serves.' }, '503': { description: 'Not ready, with `Retry-After`.' } },
      },
    },
    '/metrics': {
      get: {
        summary: 'Prometheus metrics (admin or read token)',
        tags: ['probes'],
        security: [{ read: [] }, { admin: [] }],
        responses: {
          '200': { description: 'Prometheus text format 0.0.4.', content: { 'text/plain': { schema: { type: 'string' } } } },
          ...authErrors,
        },
      },
    },
    '/api/openapi.json': {
      get: {
        summary: 'This document',
        tags: ['probes'],
        security: [],
        responses: { '200': ok('OpenAPI 3.1.', { type: 'object' }) },
      },
    },
    '/api/admin/health': {
      get: {
        summary: 'Per-table state, stats, last backup and compaction (admin.health)',
        tags: ['admin'],
        security: [{ read: [] }, { admin: [] }],
        responses: { '200': ok('The bus reply.', ref('HealthReply')), ...authErrors, ...busErrors },
      },
    },
    '/api/admin/history': {
      get: {
        summary: 'Recent backups, compactions and recoveries, newest first (admin.history)',
        tags: ['admin'],
        security: [{ read: [] }, { admin: [] }],
        parameters: [{ name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 1000, default: 50 } }],
        responses: { '200': ok('The bus reply.', ref('HistoryReply')), '400': err('Bad limit.'), ...authErrors, ...busErrors },
      },
    },
    '/api/admin/compact': mutation('Compact every table, one after another (admin.compact)', 'admin.compact', false),
    '/api/admin/compact/{table}': mutation('Compact one table (admin.compact.<t>)', 'admin.compact', true),
    '/api/admin/backup': mutation('Back up every table (admin.backup)', 'admin.backup', false),
    '/api/admin/backup/{table}': mutation('Back up one table (admin.backup.<t>)', 'admin.backup', true),
    '/api/admin/restore/{table}': mutation('Roll one table back to its latest verified backup (admin.restore.<t>)', 'admin.restore', true),
    '/api/admin/clear/{table}': mutation('Acknowledge a degraded table, clearing its mark (admin.clear.<t>)', 'admin.clear', true),
    '/api/tables/{table}/keys/{key}': {
      parameters: [tableParam, keyParam],
      get: {
        summary: 'Read a key (tables.<t>.get)',
        tags: ['data'],
        responses: { '200': ok('`{"found": true, "value": V}` or `{"found": false}`.', ref('GetReply')), ...dataErrors },
      },
      put: {
        summary: 'Write a key (tables.<t>.put); the body is the JSON value itself',
        tags: ['data'],
        requestBody: { required: true, content: json({ description: 'Any JSON value, null included.' }) },
        responses: {
          '200': ok('Durable per the table policy.', ref('PutReply')),
          ...dataErrors,
          '413': err('Value (or body) too large.'),
          '415': err('Not application/json.'),
        },
      },
      delete: {
        summary: 'Delete a key (tables.<t>.delete)',
        tags: ['data'],
        responses: { '200': ok('`deleted` says whether the key existed.', ref('DeleteReply')), ...dataErrors },
      },
    },
    '/api/tables/{table}/keys': {
      get: {
        summary: 'List keys in order, one page at a time (tables.<t>.select)',
        tags: ['data'],
        parameters: [
          tableParam,
          { name: 'prefix', in: 'query', required: false, schema: { type: 'string' } },
          { name: 'after', in: 'query', required: false, description: 'Exclusive; pass the previous page\'s `next`.', schema: { type: 'string' } },
          { name: 'limit', in: 'query', required: false, description: 'Items at most; a page also stops at about 4 MiB of keys and values (always one item at least).', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        ],
        responses: { '200': ok('A page of items; `next` when more match.', ref('SelectReply')), ...dataErrors },
      },
    },
    '/api/tables/{table}/stats': {
      get: {
        summary: 'Table file figures (tables.<t>.stats)',
        tags: ['data'],
        parameters: [tableParam],
        responses: { '200': ok('Records, file, live and dead bytes, fragmentation, generation.', ref('StatsReply')), ...dataErrors },
      },
    },
    '/api/events': {
      get: {
        summary: 'Live backups.* events as Server-Sent Events (`event: <name>`, `data: <json>`, heartbeat comments)',
        description: `Events: ${BACKUP_EVENTS.join(', ')}. Authenticate with the header, or with \`?ticket=\` from POST /api/events/ticket (for EventSource).`,
        tags: ['events'],
        security: [{ read: [] }, { admin: [] }],
        parameters: [{ name: 'ticket', in: 'query', required: false, schema: { type: 'string' } }],
        responses: {
          '200': { description: 'The stream.', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...authErrors,
          '429': err('This client already holds the most event streams allowed at once (8).'),
          '503': err('The server already holds `http.maxEventStreams` event streams from all clients; retry after `Retry-After` seconds.'),
        },
      },
    },
    '/api/push/key': {
      get: {
        summary: 'The VAPID public key to pass to pushManager.subscribe (applicationServerKey)',
        tags: ['push'],
        security: [{ read: [] }, { admin: [] }],
        responses: {
          '200': ok('URL-safe base64.', { type: 'object', required: ['publicKey'], properties: { publicKey: { type: 'string' } } }),
          ...authErrors,
          '404': err('Web Push is disabled.'),
        },
      },
    },
    '/api/push/subscribe': {
      post: {
        summary: 'Save a browser push subscription (PushSubscription.toJSON()); durable once answered',
        tags: ['push'],
        requestBody: { required: true, content: json(PUSH_SUBSCRIPTION_SCHEMA) },
        responses: {
          '200': ok('Saved; `created` is false when the endpoint was already subscribed.', { type: 'object', required: ['subscribed', 'created'], properties: { subscribed: { const: true }, created: { type: 'boolean' } } }),
          '400': err('Bad body, or too many subscriptions.'),
          ...authErrors,
          '404': err('Web Push is disabled.'),
          '500': err('The subscription could not be saved.'),
        },
      },
    },
    '/api/push/unsubscribe': {
      post: {
        summary: 'Remove a push subscription by endpoint',
        tags: ['push'],
        requestBody: { required: true, content: json(PUSH_UNSUBSCRIBE_SCHEMA) },
        responses: {
          '200': ok('`removed` says whether it was subscribed.', { type: 'object', required: ['removed'], properties: { removed: { type: 'boolean' } } }),
          '400': err('Bad body.'),
          ...authErrors,
          '404': err('Web Push is disabled.'),
          '500': err('The change could not be saved.'),
        },
      },
    },
    '/api/events/ticket': {
      post: {
        summary: 'A one-time ticket (30 s) to open /api/events from a browser',
        tags: ['events'],
        security: [{ read: [] }, { admin: [] }],
        responses: {
          '200': ok('The ticket.', { type: 'object', required: ['ticket', 'expiresInMs'], properties: { ticket: { type: 'string' }, expiresInMs: { type: 'integer' } } }),
          ...authErrors,
        },
      },
    },
  },
} as const;
