/**
 * The bodies of the `backups.<event>` events (see `BACKUP_EVENTS` in
 * subjects.ts), one schema per event, and the one way to publish them:
 * `publishEvent` validates the body first, so no event leaves unchecked.
 * Like replies, events allow extra properties so that a newer service may
 * add fields; what the schemas require, subscribers may rely on.
 */
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';
import { InternalError } from '../store';
import type { Bus } from './bus';
import { encodeJson } from './codec';
import { describeErrors } from './schemas';
import type { BackupEvent, Subjects } from './subjects';

const text = { type: 'string', minLength: 1 } as const;
const count = { type: 'integer', minimum: 0 } as const;
const ms = { type: 'number', minimum: 0 } as const;
const trigger = { enum: ['scheduled', 'manual', 'auto'] } as const;
// A message may be empty (an error thrown with none); the code never is.
const errorBody = { type: 'object', properties: { code: text, message: { type: 'string' } }, required: ['code', 'message'] } as const;

/** The fields every event carries: its name and when it happened (ISO 8601). */
function eventSchema(event: BackupEvent, properties: Record<string, unknown>, required: string[]) {
  return {
    type: 'object',
    properties: { event: { const: event }, at: text, ...properties },
    required: ['event', 'at', ...required],
  };
}

const compactionResult = {
  type: 'object',
  properties: { table: text, status: { enum: ['compacted', 'skipped', 'error'] }, durationMs: ms, error: errorBody },
  required: ['table', 'status'],
} as const;

const recovery = {
  table: text,
  mode: { enum: ['recover', 'restore'] },
  trigger,
  status: { enum: ['recovered', 'restored', 'degraded'] },
  reason: { type: 'string' },
  durationMs: ms,
  backupUsed: { type: ['string', 'null'] },
  recordsFromBackup: count,
  recordsFromDamaged: count,
  recordsLost: count,
  lostKeys: { type: 'array', items: { type: 'string' } },
  quarantined: { type: ['string', 'null'] },
} as const;

/** Each event's body schema. */
export const EVENT_SCHEMAS: Readonly<Record<BackupEvent, object>> = {
  backup_complete: eventSchema(
    'backup_complete',
    {
      trigger,
      durationMs: ms,
      bytes: count,
      tables: {
        type: 'array',
        items: { type: 'object', properties: { table: text, bytes: count, durationMs: ms, records: count, file: text }, required: ['table'] },
      },
      failed: { type: 'array', items: text },
    },
    ['trigger', 'durationMs', 'tables'],
  ),
  backup_failed: eventSchema('backup_failed', { table: text, trigger, error: errorBody }, ['table', 'error']),
  compaction_complete: eventSchema(
    'compaction_complete',
    { trigger, durationMs: ms, results: { type: 'array', items: compactionResult } },
    ['trigger', 'results'],
  ),
  compaction_failed: eventSchema(
    'compaction_failed',
    { trigger, results: { type: 'array', minItems: 1, items: compactionResult } },
    ['results'],
  ),
  corruption_detected: eventSchema(
    'corruption_detected',
    { table: text, source: text, reason: text, offset: count },
    ['table', 'source', 'reason'],
  ),
  recovery_complete: eventSchema('recovery_complete', recovery, ['table', 'mode', 'trigger', 'status', 'recordsLost']),
  recovery_failed: eventSchema(
    'recovery_failed',
    { ...recovery, error: errorBody, degraded: { type: 'boolean' } },
    ['table', 'error', 'degraded'],
  ),
};

const ajv = new Ajv2020({ allErrors: true, strict: true });
const validators = new Map<BackupEvent, ValidateFunction>();

/** Returns null when `body` is a valid `event` body, else the readable errors. */
export function checkEvent(event: BackupEvent, body: unknown): string | null {
  let v = validators.get(event);
  if (v === undefined) {
    v = ajv.compile(EVENT_SCHEMAS[event]);
    validators.set(event, v);
  }
  return v(body) ? null : describeErrors(v.errors);
}

/**
 * Validates `body` against `event`'s schema and publishes it on
 * `backups.<event>` (under the subjects' prefix). Throws `InternalError`
 * naming the failing fields when the body does not match: a service bug,
 * never sent to subscribers.
 */
export function publishEvent(bus: Bus, subjects: Subjects, event: BackupEvent, body: Record<string, unknown>): void {
  const problems = checkEvent(event, body);
  if (problems !== null) throw new InternalError(`event '${event}' does not match its schema: ${problems}`, { details: { event } });
  bus.publish(subjects.backupEvent(event), encodeJson(body));
}
