/**
 * Prometheus metrics on their own prom-client `Registry` (never the global
 * one, so two servers in one process do not collide). Three sources:
 * - table gauges, gathered at scrape time from one `admin.health` request
 *   (and per-table bus request counts from one `$SRV.STATS` request);
 * - counters and histograms fed by `backups.*` events (compaction, backup,
 *   corruption, recovery);
 * - the HTTP layer's own requests, operations and errors.
 * When a scrape cannot reach `admin.health`, `tablekeeper_up` is 0, the
 * table gauges are left out, and everything else is still exposed.
 */
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BACKUP_EVENTS, decodeJson, type Bus, type Subjects, type Subscription } from '../bus';
import { HISTORY_TABLE } from '../supervisor';
import { callBusJson } from './bus-call';
import { parseHealth, type TableHealth } from './health-reply';

/** Owner states a table can report; each gets a 0/1 series so queries need no `absent()`. */
export const KNOWN_TABLE_STATES = ['opening', 'serving', 'compacting', 'corrupt', 'recovering', 'stopping', 'stopped', 'failed', 'down'] as const;

/**
 * Label values the event-fed metrics take. Every label value is a series kept
 * for the life of the process, and the events come from the bus, where
 * anyone allowed to publish `backups.>` picks the subject and the body: one
 * series per made-up event name or table name grew the registry (and every
 * scrape) without bound. Anything else is counted as `other` (event names)
 * or not by table.
 */
const KNOWN_EVENTS: ReadonlySet<string> = new Set(BACKUP_EVENTS);
const COMPACTION_STATUSES: ReadonlySet<string> = new Set(['compacted', 'skipped', 'error']);

const DURATION_BUCKETS_S = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800];
const HTTP_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What `HttpMetrics` needs. */
export interface HttpMetricsOptions {
  bus: Bus;
  subjects: Subjects;
  logger: Logger;
  /** Milliseconds for the scrape-time bus requests; default 3000. */
  scrapeTimeoutMs?: number;
  /** Wall clock in ms, for backup and scrub ages; default `Date.now`. */
  now?: () => number;
  /**
   * This process's NATS micro-service id: the bus gauges come from its own
   * `$SRV.STATS.tablekeeper.<id>`. Without it, from `$SRV.STATS.tablekeeper`,
   * which any service named tablekeeper on the same NATS server may answer first.
   */
  serviceId?: string;
  /**
   * The configured tables: the only `table` labels events may add (and the
   * history table). Without it, any table an event names is counted.
   */
  tables?: readonly string[];
}

type EventBody = Record<string, unknown>;

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function records(v: unknown): EventBody[] {
  return Array.isArray(v) ? v.filter((x): x is EventBody => typeof x === 'object' && x !== null) : [];
}

/** The metrics registry of one HTTP server and everything that feeds it. */
export class HttpMetrics {
  /** The registry `/metrics` renders. */
  readonly registry = new Registry();
  private readonly opts: HttpMetricsOptions;
  private readonly now: () => number;
  private events: Subscription | undefined;
  private readonly knownTables: ReadonlySet<string> | undefined;

  private readonly up: Gauge;
  private readonly tableGauges: Gauge[];
  private readonly records: Gauge;
  private readonly fileBytes: Gauge;
  private readonly liveBytes: Gauge;
  private readonly deadBytes: Gauge;
  private readonly fragmentation: Gauge;
  private readonly generation: Gauge;
  private readonly state: Gauge;
  private readonly degraded: Gauge;
  private readonly restarts: Gauge;
  private readonly backupAge: Gauge;
  private readonly backupsKept: Gauge;
  private readonly recoveriesRecorded: Gauge;
  private readonly scrubDamaged: Gauge;
  private readonly scrubAge: Gauge;
  private readonly opRequests: Gauge;
  private readonly cacheBytes: Gauge;
  private readonly cacheReads: Gauge;
  private readonly opErrors: Gauge;
  private readonly busRequests: Gauge;
  private readonly busErrors: Gauge;

  private readonly eventsSeen: Counter;
  private readonly compactions: Counter;
  private readonly compactionSeconds: Histogram;
  private readonly backups: Counter;
  private readonly backupSeconds: Histogram;
  private readonly corruptions: Counter;
  private readonly recoveries: Counter;
  private readonly recoverySeconds: Histogram;

  private readonly httpSeconds: Histogram;
  private readonly operations: Counter;
  private readonly errors: Counter;
  private readonly streams: Gauge;
  private readonly notifications: Counter;

  constructor(opts: HttpMetricsOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.knownTables = opts.tables === undefined ? undefined : new Set([...opts.tables, HISTORY_TABLE]);
    const registers = [this.registry];
    const gauge = (name: string, help: string, labelNames: string[] = ['table']) => new Gauge({ name, help, labelNames, registers });
    const counter = (name: string, help: string, labelNames: string[]) => new Counter({ name, help, labelNames, registers });
    const histogram = (name: string, help: string, labelNames: string[], buckets: number[]) =>
      new Histogram({ name, help, labelNames, buckets, registers });

    this.up = gauge('tablekeeper_up', '1 when the last scrape got an admin.health answer, else 0 (table gauges are then absent)', []);
    this.records = gauge('tablekeeper_table_records', 'Live keys in the table');
    this.fileBytes = gauge('tablekeeper_table_file_bytes', 'Size of the table file');
    this.liveBytes = gauge('tablekeeper_table_live_bytes', 'Bytes of the records the index points at');
    this.deadBytes = gauge('tablekeeper_table_dead_bytes', 'Bytes of superseded and deleted records');
    this.fragmentation = gauge('tablekeeper_table_fragmentation_ratio', 'dead bytes / file bytes');
    this.generation = gauge('tablekeeper_table_generation', 'Table file generation (grows with each compaction)');
    this.state = gauge('tablekeeper_table_state', '1 for the state the table is in, 0 for the others', ['table', 'state']);
    this.degraded = gauge('tablekeeper_table_degraded', '1 when the table was started degraded after a recovery');
    this.restarts = gauge('tablekeeper_table_owner_restarts', 'Restarts of the table owner since the service started');
    this.backupAge = gauge('tablekeeper_table_last_backup_age_seconds', 'Seconds since the newest verified backup');
    this.backupsKept = gauge('tablekeeper_table_backups', 'Verified backups kept for the table');
    this.recoveriesRecorded = gauge('tablekeeper_table_recoveries', 'Recoveries of the table in the persisted history');
    this.scrubDamaged = gauge('tablekeeper_table_scrub_damaged_ranges', 'Damaged ranges the last scrub found');
    this.scrubAge = gauge('tablekeeper_table_last_scrub_age_seconds', 'Seconds since the last scrub of the table');
    this.busRequests = gauge('tablekeeper_bus_table_requests', 'Bus requests the table owner answered since it (re)started ($SRV.STATS)');
    this.busErrors = gauge('tablekeeper_bus_table_errors', 'Bus requests the table owner answered with an error since it (re)started');
    this.opRequests = gauge('tablekeeper_table_operation_requests', 'Bus requests to the table, by operation, since its owner (re)started', ['table', 'operation']);
    this.opErrors = gauge('tablekeeper_table_operation_errors', 'Error replies of the table owner, by wire error code, since it (re)started', ['table', 'code']);
    this.cacheBytes = gauge('tablekeeper_table_read_cache_bytes', 'Bytes held by the table\'s read cache (values plus a fixed cost per entry)');
    this.cacheReads = gauge('tablekeeper_table_read_cache_reads', 'Reads of stored values since the table file was opened, by result (hit: from the cache, miss: from the file)', ['table', 'result']);
    this.tableGauges = [
      this.records, this.fileBytes, this.liveBytes, this.deadBytes, this.fragmentation, this.generation, this.state,
      this.degraded, this.restarts, this.backupAge, this.backupsKept, this.recoveriesRecorded, this.scrubDamaged, this.scrubAge,
      this.opRequests, this.opErrors, this.cacheBytes, this.cacheReads,
    ];

    this.eventsSeen = counter('tablekeeper_events_total', 'backups.* events seen', ['event']);
    this.compactions = counter('tablekeeper_compactions_total', 'Compaction results by table and status (compacted, skipped, error)', ['table', 'status']);
    this.compactionSeconds = histogram('tablekeeper_compaction_duration_seconds', 'Duration of compactions that compacted', ['table'], DURATION_BUCKETS_S);
    this.backups = counter('tablekeeper_backups_total', 'Backups by table and result (ok, failed)', ['table', 'result']);
    this.backupSeconds = histogram('tablekeeper_backup_duration_seconds', 'Duration of verified backups', ['table'], DURATION_BUCKETS_S);
    this.corruptions = counter('tablekeeper_corruptions_detected_total', 'Corruption reports by table', ['table']);
    this.recoveries = counter('tablekeeper_recoveries_total', 'Recoveries by table and result (complete, failed)', ['table', 'result']);
    this.recoverySeconds = histogram('tablekeeper_recovery_duration_seconds', 'Duration of recoveries', ['table', 'result'], DURATION_BUCKETS_S);

    this.httpSeconds = histogram('tablekeeper_http_request_duration_seconds', 'HTTP request latency by route and status', ['method', 'route', 'status'], HTTP_BUCKETS_S);
    this.operations = counter('tablekeeper_http_operations_total', 'Table and admin operations requested over HTTP', ['operation']);
    this.errors = counter('tablekeeper_http_errors_total', 'HTTP operations that failed, by operation and wire error code', ['operation', 'code']);
    this.streams = gauge('tablekeeper_http_event_streams', 'Open /api/events streams', []);
    this.notifications = counter('tablekeeper_notifications_total', 'Notifications settled, by channel (webhook, webpush) and result (sent, failed, dropped, gone)', ['channel', 'result']);

    collectDefaultMetrics({ register: this.registry, prefix: 'tablekeeper_' });
  }

  /** Starts counting `backups.*` events. */
  start(): void {
    this.events ??= this.opts.bus.subscribe(this.opts.subjects.allBackupEvents(), (msg) => {
      const root = this.opts.subjects.allBackupEvents().slice(0, -1);
      const name = msg.subject.startsWith(root) ? msg.subject.slice(root.length) : msg.subject;
      try {
        const body = decodeJson(msg.data);
        this.onEvent(name, typeof body === 'object' && body !== null ? (body as EventBody) : {});
      } catch (err) {
        this.opts.logger.warn({ op: 'metrics', event: name, err }, 'unreadable event');
      }
    });
  }

  /** Stops counting events. */
  stop(): void {
    this.events?.unsubscribe();
    this.events = undefined;
  }

  /** Counts one `backups.<name>` event. */
  onEvent(name: string, body: EventBody): void {
    this.eventsSeen.inc({ event: KNOWN_EVENTS.has(name) ? name : 'other' });
    switch (name) {
      case 'compaction_complete':
        for (const r of records(body.results)) {
          const table = this.table(r.table);
          const status = str(r.status);
          if (table === undefined || status === undefined || !COMPACTION_STATUSES.has(status)) continue;
          this.compactions.inc({ table, status });
          const ms = num(r.durationMs);
          if (status === 'compacted' && ms !== undefined) this.compactionSeconds.observe({ table }, ms / 1000);
        }
        return;
      case 'backup_complete':
        for (const t of records(body.tables)) {
          const table = this.table(t.table);
          if (table === undefined) continue;
          this.backups.inc({ table, result: 'ok' });
          const ms = num(t.durationMs);
          if (ms !== undefined) this.backupSeconds.observe({ table }, ms / 1000);
        }
        return;
      case 'backup_failed': {
        const table = this.table(body.table);
        if (table !== undefined) this.backups.inc({ table, result: 'failed' });
        return;
      }
      case 'corruption_detected': {
        const table = this.table(body.table);
        if (table !== undefined) this.corruptions.inc({ table });
        return;
      }
      case 'recovery_complete':
      case 'recovery_failed': {
        const table = this.table(body.table);
        if (table === undefined) return;
        const result = name === 'recovery_complete' ? 'complete' : 'failed';
        this.recoveries.inc({ table, result });
        const ms = num(body.durationMs);
        if (ms !== undefined) this.recoverySeconds.observe({ table, result }, ms / 1000);
        return;
      }
      default:
        return;
    }
  }

  /** The `table` label for a table an event names: undefined for none, or for one not configured. */
  private table(v: unknown): string | undefined {
    const table = str(v);
    if (table === undefined || (this.knownTables !== undefined && !this.knownTables.has(table))) return undefined;
    return table;
  }

  /** Records one finished HTTP request; `route` is the route pattern, never the raw URL. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.httpSeconds.observe({ method, route, status: String(status) }, seconds);
  }

  /** Counts an operation requested over HTTP. */
  countOperation(operation: string): void {
    this.operations.inc({ operation });
  }

  /** Counts a failed HTTP operation by its wire code. */
  countError(operation: string, code: string): void {
    this.errors.inc({ operation, code });
  }

  /** Counts one settled notification delivery. */
  countNotification(channel: string, result: string): void {
    this.notifications.inc({ channel, result });
  }

  /** Counts an event stream in. */
  streamOpened(): void {
    this.streams.inc();
  }

  /** Counts an event stream out. */
  streamClosed(): void {
    this.streams.dec();
  }

  /** Gathers the scrape-time values, then renders the registry as Prometheus text. */
  async render(): Promise<string> {
    await Promise.all([this.refreshTables(), this.refreshBusStats()]);
    return this.registry.metrics();
  }

  /** The content type of `render()`'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  // Each refresh first awaits its bus request and only then replaces its
  // gauges, in one synchronous step: a concurrent scrape never renders them
  // reset-but-not-yet-set, whichever of two overlapping scrapes answers first.
  private async refreshTables(): Promise<void> {
    let tables: TableHealth[];
    try {
      const reply = await callBusJson(this.opts.bus, this.opts.subjects.admin('health'), {}, this.opts.scrapeTimeoutMs ?? 3000);
      tables = parseHealth(reply).tables;
    } catch (err) {
      for (const g of this.tableGauges) g.reset();
      this.up.set(0);
      this.opts.logger.warn({ op: 'metrics', err }, 'admin.health failed during a scrape');
      return;
    }
    for (const g of this.tableGauges) g.reset();
    this.up.set(1);
    const now = this.now();
    for (const t of tables) {
      const table = t.table;
      const s = t.stats;
      if (s !== undefined) {
        this.records.set({ table }, s.records);
        this.fileBytes.set({ table }, s.fileBytes);
        this.liveBytes.set({ table }, s.liveBytes);
        this.deadBytes.set({ table }, s.deadBytes);
        this.fragmentation.set({ table }, s.fragmentation);
        this.generation.set({ table }, s.generation);
      }
      for (const [operation, n] of Object.entries(t.requests ?? {})) this.opRequests.set({ table, operation }, n);
      for (const [code, n] of Object.entries(t.errors ?? {})) this.opErrors.set({ table, code }, n);
      const cache = t.readCache;
      if (cache?.bytes !== undefined) this.cacheBytes.set({ table }, cache.bytes);
      if (cache?.hits !== undefined) this.cacheReads.set({ table, result: 'hit' }, cache.hits);
      if (cache?.misses !== undefined) this.cacheReads.set({ table, result: 'miss' }, cache.misses);
      const states = new Set<string>([...KNOWN_TABLE_STATES, t.state]);
      for (const state of states) this.state.set({ table, state }, state === t.state ? 1 : 0);
      if (t.degraded !== undefined) this.degraded.set({ table }, t.degraded ? 1 : 0);
      if (t.restarts !== undefined) this.restarts.set({ table }, t.restarts);
      if (t.lastBackupAt !== undefined) this.backupAge.set({ table }, Math.max(0, (now - t.lastBackupAt) / 1000));
      if (t.backups !== undefined) this.backupsKept.set({ table }, t.backups);
      if (t.recoveries !== undefined) this.recoveriesRecorded.set({ table }, t.recoveries);
      if (t.scrubDamagedRanges !== undefined) this.scrubDamaged.set({ table }, t.scrubDamagedRanges);
      if (t.lastScrubAt !== undefined) this.scrubAge.set({ table }, Math.max(0, (now - t.lastScrubAt) / 1000));
    }
  }

  private async refreshBusStats(): Promise<void> {
    let reply: unknown;
    try {
      const subject = this.opts.serviceId === undefined ? '$SRV.STATS.tablekeeper' : `$SRV.STATS.tablekeeper.${this.opts.serviceId}`;
      reply = await callBusJson(this.opts.bus, subject, undefined, this.opts.scrapeTimeoutMs ?? 3000);
    } catch {
      // Optional: without it the bus counts are absent.
      this.busRequests.reset();
      this.busErrors.reset();
      return;
    }
    this.busRequests.reset();
    this.busErrors.reset();
    const endpoints = typeof reply === 'object' && reply !== null && 'endpoints' in reply ? records(reply.endpoints) : [];
    const prefix = this.opts.subjects.tableWildcard('x').slice(0, -'x.>'.length);
    for (const e of endpoints) {
      const subject = str(e.subject);
      const name = str(e.name);
      // Only table owners' endpoints (`[prefix.]tables.<t>.>`).
      if (subject === undefined || name === undefined || subject !== `${prefix}${name}.>`) continue;
      this.busRequests.set({ table: name }, num(e.num_requests) ?? 0);
      this.busErrors.set({ table: name }, num(e.num_errors) ?? 0);
    }
  }
}
