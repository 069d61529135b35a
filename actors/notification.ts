/**
 * Which `backups.*` events become notifications, and what a notification
 * says. Routine successes (backup_complete, compaction_complete) and
 * operator-started recoveries (recovery_complete with trigger `manual`: the
 * operator is watching) are never notified; every other selected event is.
 */
import type { NotifyEvent } from '../supervisor';

/** A short, human-readable notification built from one event. */
export interface Notification {
  event: NotifyEvent;
  /** The bus subject the event came on. */
  subject: string;
  title: string;
  body: string;
  /** The table concerned; several joined by `, ` for a compaction run. */
  table?: string;
  /** When the event happened (ISO 8601), from the event, else when it was received. */
  at: string;
  /** The event body as published. */
  data: Record<string, unknown>;
}

/** `n` without its event body: what a queued delivery keeps once its payload is built (or a push, which sends only the title and text). */
export function withoutData(n: Notification): Notification {
  return { ...n, data: {} };
}

type Body = Record<string, unknown>;

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function errorMessage(v: unknown): string | undefined {
  return typeof v === 'object' && v !== null ? str((v as Body).message) : undefined;
}

function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

/** True for the notifiable event names. */
function isNotifyEvent(name: string, enabled: ReadonlySet<NotifyEvent>): name is NotifyEvent {
  return enabled.has(name as NotifyEvent);
}

/**
 * The notification for event `name` with body `data`, or undefined when it
 * is not one to notify (not enabled, a routine success, or a manual
 * recovery). `receivedAt` fills `at` when the event has none.
 */
export function toNotification(
  name: string,
  subject: string,
  data: Body,
  enabled: ReadonlySet<NotifyEvent>,
  receivedAt: string,
): Notification | undefined {
  if (!isNotifyEvent(name, enabled)) return undefined;
  if (name === 'recovery_complete' && data.trigger !== 'auto') return undefined;
  const at = str(data.at) ?? receivedAt;
  const table = str(data.table);
  const base = { event: name, subject, at, data, table };
  switch (name) {
    case 'backup_failed':
      return { ...base, title: `Backup of ${table ?? 'a table'} failed`, body: errorMessage(data.error) ?? 'the backup failed' };
    case 'compaction_failed': {
      const results = Array.isArray(data.results) ? data.results.filter((r): r is Body => typeof r === 'object' && r !== null) : [];
      const tables = results.map((r) => str(r.table)).filter((t): t is string => t !== undefined);
      const messages = results.map((r) => `${str(r.table) ?? '?'}: ${errorMessage(r.error) ?? 'failed'}`);
      return {
        ...base,
        table: tables.length > 0 ? tables.join(', ') : undefined,
        title: `Compaction of ${tables.length > 0 ? tables.join(', ') : 'a table'} failed`,
        body: messages.length > 0 ? messages.join('; ') : 'the compaction failed',
      };
    }
    case 'corruption_detected':
      return { ...base, title: `Corruption detected in ${table ?? 'a table'}`, body: `${str(data.reason) ?? 'damaged data'}; recovery starts now` };
    case 'recovery_complete': {
      const lost = count(data.recordsLost);
      return {
        ...base,
        title: `${table ?? 'A table'} was recovered automatically`,
        body:
          `${count(data.recordsFromBackup)} record(s) from ${str(data.backupUsed) ?? 'no backup'}, ` +
          `${count(data.recordsFromDamaged)} from the damaged file, ${lost} lost` +
          (str(data.quarantined) ? `; damaged file kept at ${String(data.quarantined)}` : ''),
      };
    }
    case 'recovery_failed':
      return {
        ...base,
        title: data.degraded === true ? `${table ?? 'A table'} was started empty (degraded)` : `Recovery of ${table ?? 'a table'} failed`,
        body: errorMessage(data.error) ?? 'the recovery failed',
      };
  }
}
