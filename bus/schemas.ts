/**
 * The message schemas of the external contract: for each operation, its
 * subject, its request body schema and its reply schema, side by side.
 * Validators are compiled once, on first use (ajv, JSON Schema 2020-12,
 * strict, all errors). Requests reject unknown properties; replies allow
 * extra ones so that a newer server may add fields.
 */
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { BadRequestError } from '../store/errors';
import { decodeJson } from './codec';

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

const key = { type: 'string', minLength: 1, maxLength: 1024 } as const;
const emptyRequest = { type: 'object', additionalProperties: false } as const;

/** Each operation's subject, request schema and reply schema. */
export const OPERATIONS = {
  get: {
    subject: 'tables.<t>.get',
    request: { type: 'object', properties: { key }, required: ['key'], additionalProperties: false },
    reply: { type: 'object', properties: { found: { type: 'boolean' }, value: {} }, required: ['found'] },
  },
  put: {
    subject: 'tables.<t>.put',
    // `value` may be any JSON, null included, but must be present.
    request: { type: 'object', properties: { key, value: {} }, required: ['key', 'value'], additionalProperties: false },
    reply: { type: 'object', properties: { ok: { const: true } }, required: ['ok'] },
  },
  delete: {
    subject: 'tables.<t>.delete',
    request: { type: 'object', properties: { key }, required: ['key'], additionalProperties: false },
    reply: { type: 'object', properties: { deleted: { type: 'boolean' } }, required: ['deleted'] },
  },
  select: {
    subject: 'tables.<t>.select',
    request: {
      type: 'object',
      properties: {
        prefix: { type: 'string' },
        after: { type: 'string' },
        limit: { type: 'integer', minimum: 1, maximum: 1000 },
      },
      additionalProperties: false,
    },
    reply: {
      type: 'object',
      properties: {
        items: {
          type: 'array',
          items: { type: 'object', properties: { key, value: {} }, required: ['key', 'value'] },
        },
        next: { type: 'string' },
      },
      required: ['items'],
    },
  },
  stats: {
    subject: 'tables.<t>.stats',
    request: emptyRequest,
    reply: {
      type: 'object',
      properties: {
        records: { type: 'integer', minimum: 0 },
        fileBytes: { type: 'integer', minimum: 0 },
        liveBytes: { type: 'integer', minimum: 0 },
        deadBytes: { type: 'integer', minimum: 0 },
        fragmentation: { type: 'number', minimum: 0, maximum: 1 },
        generation: { type: 'integer', minimum: 0 },
      },
      required: ['records', 'fileBytes', 'liveBytes', 'deadBytes', 'fragmentation', 'generation'],
    },
  },
  compact: {
    subject: 'tables.<t>.compact',
    request: { type: 'object', properties: { force: { type: 'boolean' } }, additionalProperties: false },
    reply: {
      type: 'object',
      properties: { status: { enum: ['compacted', 'skipped', 'error'] } },
      required: ['status'],
    },
  },
  corruption: {
    subject: 'tables.<t>.corruption',
    request: {
      type: 'object',
      properties: { reason: { type: 'string', minLength: 1 }, offset: { type: 'integer', minimum: 0 } },
      required: ['reason'],
      additionalProperties: false,
    },
    reply: { type: 'object' },
  },
  'admin.compact': { subject: 'admin.compact', request: emptyRequest, reply: { type: 'object' } },
  'admin.backup': { subject: 'admin.backup[.<t>]', request: emptyRequest, reply: { type: 'object' } },
  'admin.restore': { subject: 'admin.restore.<t>', request: emptyRequest, reply: { type: 'object' } },
  'admin.health': { subject: 'admin.health', request: emptyRequest, reply: { type: 'object' } },
  'admin.history': {
    subject: 'admin.history',
    request: {
      type: 'object',
      properties: { limit: { type: 'integer', minimum: 1, maximum: 1000 } },
      additionalProperties: false,
    },
    reply: { type: 'object' },
  },
} as const;

/** Every operation with a schema. */
export type Operation = keyof typeof OPERATIONS;

/** The request body of each operation, once validated. */
export interface RequestBodies {
  get: { key: string };
  put: { key: string; value: JsonValue };
  delete: { key: string };
  select: { prefix?: string; after?: string; limit?: number };
  stats: Record<string, never>;
  compact: { force?: boolean };
  corruption: { reason: string; offset?: number };
  'admin.compact': Record<string, never>;
  'admin.backup': Record<string, never>;
  'admin.restore': Record<string, never>;
  'admin.health': Record<string, never>;
  'admin.history': { limit?: number };
}

/** The success reply body of each table operation. */
export interface ReplyBodies {
  get: { found: boolean; value?: JsonValue };
  put: { ok: true };
  delete: { deleted: boolean };
  select: { items: { key: string; value: JsonValue }[]; next?: string };
  stats: {
    records: number;
    fileBytes: number;
    liveBytes: number;
    deadBytes: number;
    fragmentation: number;
    generation: number;
  };
  compact: { status: 'compacted' | 'skipped' | 'error'; [extra: string]: unknown };
}

const ajv = new Ajv2020({ allErrors: true, strict: true });
const requestValidators = new Map<Operation, ValidateFunction>();
const replyValidators = new Map<Operation, ValidateFunction>();

function validator(cache: Map<Operation, ValidateFunction>, op: Operation, kind: 'request' | 'reply'): ValidateFunction {
  let v = cache.get(op);
  if (v === undefined) {
    const def = OPERATIONS[op];
    if (def === undefined) throw new BadRequestError(`unknown operation '${String(op)}'`);
    v = ajv.compile(def[kind]);
    cache.set(op, v);
  }
  return v;
}

/** One readable line per schema error: "key: must be string", "value: is required". */
export function describeErrors(errors: readonly ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'body is invalid';
  const lines = errors.map((e) => {
    const path = e.instancePath
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
      .join('.');
    const at = (name: string): string => (path ? `${path}.${name}` : name);
    if (e.keyword === 'required') return `${at(String(e.params.missingProperty))}: is required`;
    if (e.keyword === 'additionalProperties') return `${at(String(e.params.additionalProperty))}: is not allowed`;
    return `${path || 'body'}: ${e.message ?? 'is invalid'}`;
  });
  return [...new Set(lines)].join('; ');
}

/**
 * Returns `body` typed as an `op` request, or throws `BadRequestError`
 * naming each failing field ("key: must be string; extra: is not allowed").
 */
export function validateRequest<K extends keyof RequestBodies>(op: K, body: unknown): RequestBodies[K] {
  const v = validator(requestValidators, op, 'request');
  if (!v(body)) throw new BadRequestError(describeErrors(v.errors), { details: { operation: op } });
  // The schema above is the runtime proof of this type.
  return body as RequestBodies[K];
}

/** Decodes a JSON body and validates it as an `op` request; `BadRequestError` otherwise. */
export function parseRequest<K extends keyof RequestBodies>(op: K, data: Uint8Array): RequestBodies[K] {
  return validateRequest(op, decodeJson(data));
}

/** Returns null when `body` is a valid `op` success reply, else the readable errors. */
export function checkReply(op: Operation, body: unknown): string | null {
  const v = validator(replyValidators, op, 'reply');
  return v(body) ? null : describeErrors(v.errors);
}
