/**
 * The message schemas of the external contract: for each operation, its
 * subject, its request body schema and its reply schema, side by side.
 * Validators are compiled once, on first use (ajv, JSON Schema 2020-12,
 * strict, all errors). Requests reject unknown properties; replies allow
 * extra ones so that a newer server may add fields.
 */
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { BadRequestError } from '../store';
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
      properties: {
        reason: { type: 'string', minLength: 1, maxLength: 1000 },
        offset: { type: 'integer', minimum: 0 },
        source: { enum: ['operator', 'scrub', 'owner'] },
      },
      required: ['reason'],
      additionalProperties: false,
    },
    reply: { type: 'object' },
  },
  'admin.compact': {
    subject: 'admin.compact[.<t>]',
    request: { type: 'object', properties: { force: { type: 'boolean' } }, additionalProperties: false },
    reply: { type: 'object' },
  },
  'admin.backup': { subject: 'admin.backup[.<t>]', request: emptyRequest, reply: { type: 'object' } },
  'admin.restore': { subject: 'admin.restore.<t>', request: emptyRequest, reply: { type: 'object' } },
  'admin.clear': { subject: 'admin.clear.<t>', request: emptyRequest, reply: { type: 'object' } },
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
  corruption: { reason: string; offset?: number; source?: 'operator' | 'scrub' | 'owner' };
  'admin.compact': { force?: boolean };
  'admin.backup': Record<string, never>;
  'admin.restore': Record<string, never>;
  'admin.clear': Record<string, never>;
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
    // Ajv's own message ("must be equal to one of the allowed values") does not say which.
    if (e.keyword === 'enum') return `${path || 'body'}: must be one of ${(e.params.allowedValues as unknown[]).map((v) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v))).join(', ')}`;
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

/** Every error reply: `{error: {code, message}}`, `code` one of the wire codes. */
export const ERROR_REPLY_SCHEMA = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { enum: ['bad_request', 'not_found', 'unavailable', 'corrupt', 'unauthorized', 'timeout', 'internal'] },
        message: { type: 'string', minLength: 1 },
      },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;

let errorReplyValidator: ValidateFunction | undefined;

/** Returns null when `body` is a valid error reply, else the readable errors. */
export function checkErrorReply(body: unknown): string | null {
  errorReplyValidator ??= ajv.compile(ERROR_REPLY_SCHEMA);
  return errorReplyValidator(body) ? null : describeErrors(errorReplyValidator.errors);
}

// `{"key":"` and `"}`: the one body shape `parseKeyRequest` reads itself.
const KEY_BODY_HEAD = [0x7b, 0x22, 0x6b, 0x65, 0x79, 0x22, 0x3a, 0x22] as const;
const KEY_BODY_HEAD_LEN = KEY_BODY_HEAD.length;
const KEY_BODY_MIN = KEY_BODY_HEAD_LEN + 1 + 2;
const KEY_BODY_MAX = KEY_BODY_HEAD_LEN + key.maxLength + 2;
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string })
  .latin1Slice;

/**
 * The key of a `get` or `delete` request body, exactly as
 * `parseRequest(op, data).key` would return it, or undefined when the body
 * is not in the one shape read here: `{"key":"K"}` with no whitespace, where
 * K is 1 to 1024 printable ASCII characters other than `"` and `\`. Such a
 * body is valid JSON whose parse is `{key: K}`, which the schema accepts
 * (the only other rules are type string and length 1..1024, and for ASCII one
 * character is one UTF-16 unit), so nothing the schema rejects gets through.
 * Every other body, valid or not, must go through `parseRequest`.
 */
export function fastKeyOf(data: Uint8Array): string | undefined {
  const n = data.length;
  if (n < KEY_BODY_MIN || n > KEY_BODY_MAX) return undefined;
  for (let i = 0; i < KEY_BODY_HEAD_LEN; i++) if (data[i] !== KEY_BODY_HEAD[i]) return undefined;
  const end = n - 2;
  if (data[end] !== 0x22 || data[end + 1] !== 0x7d) return undefined;
  for (let i = KEY_BODY_HEAD_LEN; i < end; i++) {
    const c = data[i];
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return undefined;
  }
  return latin1Slice.call(data, KEY_BODY_HEAD_LEN, end);
}

/** The key of a `get` or `delete` request: the fast shape above, else the full decode and schema check. */
export function parseKeyRequest(op: 'get' | 'delete', data: Uint8Array): string {
  return fastKeyOf(data) ?? validateRequest(op, decodeJson(data)).key;
}
