/**
 * Subject names of the external contract (see ARCHITECTURE.md, "External
 * contract"), with an optional prefix before each: prefix `acme` turns
 * `tables.t.get` into `acme.tables.t.get`. Request and reply schemas for each
 * operation live beside these names in `schemas.ts`.
 */
import { BadRequestError } from '../store';
import { checkSubject } from './rules';

/** Operations a table answers on `tables.<t>.<op>`. */
export const TABLE_OPERATIONS = ['get', 'put', 'delete', 'select', 'stats', 'compact', 'corruption'] as const;
/** One of `TABLE_OPERATIONS`. */
export type TableOperation = (typeof TABLE_OPERATIONS)[number];

/**
 * Admin operations on `admin.<op>`: `compact` and `backup` for all tables or
 * one (`admin.backup.<t>`); `restore` and `clear` only per table.
 */
export const ADMIN_OPERATIONS = ['compact', 'backup', 'restore', 'clear', 'health', 'history'] as const;
/** One of `ADMIN_OPERATIONS`. */
export type AdminOperation = (typeof ADMIN_OPERATIONS)[number];

/** Events published on `backups.<event>`. */
export const BACKUP_EVENTS = [
  'backup_complete',
  'backup_failed',
  'compaction_complete',
  'compaction_failed',
  'corruption_detected',
  'recovery_complete',
  'recovery_failed',
] as const;
/** One of `BACKUP_EVENTS`. */
export type BackupEvent = (typeof BACKUP_EVENTS)[number];

const TABLE_OPERATION_SET: ReadonlySet<string> = new Set(TABLE_OPERATIONS);

/** Where a `tables.<t>.<op...>` subject points. `operation` is whatever follows the table (it may be unknown). */
export interface TableSubject {
  table: string;
  operation: string;
  /** True when `operation` is one of `TABLE_OPERATIONS`. */
  known: boolean;
}

/** Throws unless `token` can stand as one subject token (no dots, wildcards or whitespace). */
export function checkToken(token: string, what: string): void {
  if (typeof token !== 'string' || token.length === 0 || token.includes('.')) {
    throw new BadRequestError(`${what} '${String(token)}' must be one non-empty subject token (no '.')`);
  }
  try {
    checkSubject(token);
  } catch (cause) {
    throw new BadRequestError(`${what} '${token}' is not a valid subject token`, { cause });
  }
}

/** Builds and parses the contract's subjects under one optional prefix. */
export class Subjects {
  /** The prefix plus a dot, or '' without a prefix. */
  private readonly root: string;

  /** `prefix` may span several tokens (`acme.prod`); '' or undefined means none. */
  constructor(readonly prefix: string = '') {
    if (prefix !== '') checkSubject(prefix);
    this.root = prefix === '' ? '' : `${prefix}.`;
  }

  /** `tables.<table>.<op>` */
  table(table: string, op: TableOperation): string {
    checkToken(table, 'table name');
    return `${this.root}tables.${table}.${op}`;
  }

  /** `tables.<table>.>`: every operation of one table, for its owner's endpoint. */
  tableWildcard(table: string): string {
    checkToken(table, 'table name');
    return `${this.root}tables.${table}.>`;
  }

  /** `tables.*.>`: every operation of every table. */
  allTables(): string {
    return `${this.root}tables.*.>`;
  }

  /** `admin.<op>`, or `admin.<op>.<table>` for per-table backup / restore. */
  admin(op: AdminOperation, table?: string): string {
    if (table === undefined) return `${this.root}admin.${op}`;
    checkToken(table, 'table name');
    return `${this.root}admin.${op}.${table}`;
  }

  /** `admin.>` */
  allAdmin(): string {
    return `${this.root}admin.>`;
  }

  /** `backups.<event>` */
  backupEvent(event: BackupEvent): string {
    return `${this.root}backups.${event}`;
  }

  /** `backups.>`: every event. */
  allBackupEvents(): string {
    return `${this.root}backups.>`;
  }

  /** Splits `[prefix.]tables.<t>.<op...>`; undefined for any other subject. */
  parseTable(subject: string): TableSubject | undefined {
    if (!subject.startsWith(this.root)) return undefined;
    const rest = subject.slice(this.root.length);
    if (!rest.startsWith('tables.')) return undefined;
    const dot = rest.indexOf('.', 7);
    if (dot <= 7 || dot === rest.length - 1) return undefined;
    const table = rest.slice(7, dot);
    const operation = rest.slice(dot + 1);
    return { table, operation, known: TABLE_OPERATION_SET.has(operation) };
  }
}
