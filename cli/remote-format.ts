/**
 * Human-readable output of the operator commands. Replies are read
 * defensively (a field of the wrong type shows as `-`), so an unexpected
 * reply never crashes the command.
 */

type Json = Record<string, unknown>;

/** The parts of an `admin.health` reply the commands read. */
export interface HealthView {
  status: string;
  tables: Json[];
  nextRuns: Json;
}

/** Reads an `admin.health` reply; undefined when it does not have that shape. */
export function asHealth(body: unknown): HealthView | undefined {
  if (!isObject(body) || typeof body.status !== 'string' || !Array.isArray(body.tables)) return undefined;
  const tables = body.tables.filter((t): t is Json => isObject(t) && typeof t.table === 'string');
  return { status: body.status, tables, nextRuns: isObject(body.nextRuns) ? body.nextRuns : {} };
}

/** The table names in a health reply, in the service's order. */
export function tableNames(health: HealthView): string[] {
  return health.tables.map((t) => String(t.table));
}

/** Lines for `tablekeeper status`. */
export function formatHealth(health: HealthView): string {
  const next = Object.entries(health.nextRuns)
    .map(([name, at]) => `next ${name} ${typeof at === 'string' ? shortTime(at) : '-'}`)
    .join(', ');
  const head = `service ${health.status}: ${health.tables.length} table${health.tables.length === 1 ? '' : 's'}${next ? ` (${next})` : ''}`;
  const rows = health.tables.map((t) => {
    const stats = isObject(t.stats) ? t.stats : {};
    const statsError = isObject(stats.error) ? String(stats.error.code ?? 'error') : undefined;
    const lastBackup = isObject(t.lastBackup) ? t.lastBackup : undefined;
    const lastCompaction = isObject(t.lastCompaction) ? t.lastCompaction : undefined;
    const degraded = isObject(t.degraded) ? ' (degraded)' : '';
    return [
      String(t.table),
      `${str(t.state)}${degraded}`,
      statsError ?? num(stats.records),
      statsError === undefined ? bytes(stats.fileBytes) : '-',
      statsError === undefined ? percent(stats.fragmentation) : '-',
      num(t.backups),
      lastBackup ? shortTime(str(lastBackup.at)) : 'never',
      lastCompaction ? `${shortTime(str(lastCompaction.at))} ${str(lastCompaction.result)}` : 'never',
    ];
  });
  const table = columns(['TABLE', 'STATE', 'RECORDS', 'SIZE', 'FRAG', 'BACKUPS', 'LAST BACKUP', 'LAST COMPACTION'], rows, [2, 3, 4, 5]);
  return `${head}\n\n${table}`;
}

/** One table's line while a compaction run goes on. */
export function formatCompactResult(result: Json, width: number): string {
  const name = String(result.table).padEnd(width);
  const status = str(result.status);
  const took = typeof result.durationMs === 'number' ? ` in ${duration(result.durationMs)}` : '';
  switch (status) {
    case 'compacted':
      return `${name}  compacted  ${bytes(result.bytesBefore)} -> ${bytes(result.bytesAfter)}, writes paused ${duration(result.pausedMs)}${took}`;
    case 'skipped': {
      // The threshold's reason names the fragmentation itself; another reason gets it added.
      const reason = str(result.reason);
      const extra = typeof result.fragmentation === 'number' && !reason.includes('fragmentation') ? ` (fragmentation ${percent(result.fragmentation)})` : '';
      return `${name}  skipped    ${reason}${extra}`;
    }
    default:
      return `${name}  ${status.padEnd(9)}  ${errorText(result.error)}`;
  }
}

/** One table's line while a backup run goes on. */
export function formatBackupResult(result: Json, width: number): string {
  const name = String(result.table).padEnd(width);
  const took = typeof result.durationMs === 'number' ? ` in ${duration(result.durationMs)}` : '';
  if (result.status === 'ok') {
    return `${name}  ok      ${bytes(result.bytes)}, ${num(result.records)} records, ${str(result.file)}${took}`;
  }
  return `${name}  ${str(result.status).padEnd(6)}  ${errorText(result.error)}`;
}

/** The closing line of a compaction or backup run. */
export function formatRunSummary(kind: 'compact' | 'backup', results: Json[], failed: number, durationMs: number): string {
  const count = (s: string) => results.filter((r) => r.status === s).length;
  const parts =
    kind === 'compact'
      ? [`${count('compacted')} compacted`, `${count('skipped')} skipped`, `${failed} failed`]
      : [`${count('ok')} backed up`, `${failed} failed`];
  return `${parts.join(', ')} (${results.length} table${results.length === 1 ? '' : 's'}, ${duration(durationMs)})`;
}

/** The outcome of `tablekeeper restore`. */
export function formatRestore(report: Json): string {
  const lines = [
    `${str(report.table)}: ${str(report.status)} from ${str(report.backupUsed)} in ${duration(report.durationMs)}`,
  ];
  if (typeof report.liveKeys === 'number') lines.push(`  live keys: ${report.liveKeys}`);
  if (typeof report.quarantined === 'string') lines.push(`  previous file kept at ${report.quarantined}`);
  if (typeof report.verified === 'boolean') lines.push(`  verified: ${report.verified ? 'yes' : 'NO'}`);
  return lines.join('\n');
}

/** Text columns; `right` lists the indexes of right-aligned (numeric) columns. */
export function columns(header: string[], rows: string[][], right: number[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.includes(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** `1.5 KiB`, `3.2 MiB`; `-` when not a number. */
export function bytes(v: unknown): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  if (v < 1024) return `${v} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let n = v / 1024;
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${n.toFixed(1)} ${units[u]}`;
}

/** `850 ms`, `2.3 s`. */
export function duration(v: unknown): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}

function percent(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '-';
}

function num(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? String(v) : '-';
}

function str(v: unknown): string {
  return typeof v === 'string' && v !== '' ? v : '-';
}

/** `2026-11-22 10:00:01Z` from an ISO time; the input when it is not one. */
function shortTime(iso: string): string {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

function errorText(e: unknown): string {
  if (isObject(e)) return `${str(e.code)}: ${str(e.message)}`;
  return typeof e === 'string' ? e : 'failed';
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
