/**
 * A tolerant reading of the `admin.health` reply, for readiness and metrics.
 * Only `table` and `state` are required of a table entry; every other field
 * (stats, last backup, restarts, recoveries, scrub, degraded) is read when it
 * is there in a known shape and ignored otherwise, so that the supervisor can
 * add fields without breaking this layer.
 */
import { InternalError } from '../store';

/** The file figures of a table that answered `stats`. */
export interface TableFigures {
  records: number;
  fileBytes: number;
  liveBytes: number;
  deadBytes: number;
  fragmentation: number;
  generation: number;
}

/** What this layer uses of one table's health entry. */
export interface TableHealth {
  table: string;
  state: string;
  /** Absent when the table's `stats` failed (the entry then has `{error}`). */
  stats?: TableFigures;
  /** Milliseconds since the epoch. */
  lastBackupAt?: number;
  backups?: number;
  restarts?: number;
  recoveries?: number;
  degraded?: boolean;
  scrubDamagedRanges?: number;
  lastScrubAt?: number;
  /** Bus requests to the table by operation, since its owner started (from `stats`). */
  requests?: Record<string, number>;
  /** The owner's error replies by wire code, since it started (from `stats`). */
  errors?: Record<string, number>;
  /** The table's read cache: bytes held, entries, hits and misses since its file was opened (from `stats`). */
  readCache?: Record<string, number>;
}

/** The parts of an `admin.health` reply used here. */
export interface HealthSummary {
  status?: string;
  tables: TableHealth[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function time(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v !== 'string') return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

function figures(v: unknown): TableFigures | undefined {
  if (!isObj(v)) return undefined;
  const keys = ['records', 'fileBytes', 'liveBytes', 'deadBytes', 'fragmentation', 'generation'] as const;
  const out: Partial<TableFigures> = {};
  for (const k of keys) {
    const n = num(v[k]);
    if (n === undefined) return undefined;
    out[k] = n;
  }
  // Every key of TableFigures was set by the loop above.
  return out as TableFigures;
}

/** A `{name: count}` object, keeping only the entries that are counts. */
function counts(v: unknown): Record<string, number> | undefined {
  if (!isObj(v)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(v)) if (typeof n === 'number' && Number.isInteger(n) && n >= 0) out[k] = n;
  return out;
}

function tableHealth(v: Obj): TableHealth | undefined {
  if (typeof v.table !== 'string') return undefined;
  const out: TableHealth = { table: v.table, state: typeof v.state === 'string' ? v.state : 'unknown' };
  const stats = figures(v.stats);
  if (stats !== undefined) out.stats = stats;
  if (isObj(v.stats)) {
    out.requests = counts(v.stats.requests);
    out.errors = counts(v.stats.errors);
    out.readCache = counts(v.stats.readCache);
  }
  if (isObj(v.lastBackup)) out.lastBackupAt = time(v.lastBackup.at);
  out.backups = num(v.backups);
  out.restarts = num(v.restarts);
  // `recoveries` is `{count, ...}`; a plain number is read too.
  out.recoveries = isObj(v.recoveries) ? num(v.recoveries.count) : num(v.recoveries);
  if (typeof v.degraded === 'boolean') out.degraded = v.degraded;
  // `degraded` may also be a description of the degradation, or null when there is none.
  else if (v.degraded === null) out.degraded = false;
  else if (isObj(v.degraded)) out.degraded = true;
  if (isObj(v.scrub)) {
    const ranges = v.scrub.damagedRanges;
    out.scrubDamagedRanges = Array.isArray(ranges) ? ranges.length : num(ranges);
    out.lastScrubAt = time(v.scrub.lastAt ?? v.scrub.at);
  }
  for (const k of Object.keys(out) as (keyof TableHealth)[]) if (out[k] === undefined) delete out[k];
  return out;
}

/** Reads an `admin.health` reply; throws `InternalError` when it has no `tables` list. */
export function parseHealth(reply: unknown): HealthSummary {
  if (!isObj(reply) || !Array.isArray(reply.tables)) throw new InternalError('admin.health reply has no tables list');
  const tables: TableHealth[] = [];
  for (const t of reply.tables) {
    const h = isObj(t) ? tableHealth(t) : undefined;
    if (h !== undefined) tables.push(h);
  }
  return { status: typeof reply.status === 'string' ? reply.status : undefined, tables };
}
