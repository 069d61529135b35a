import type { Logger } from 'pino';
import { fromCallback } from 'xstate';
import type { MaintenanceJob, MaintenanceOutcome, MaintenanceRequest, TableOwnerState } from '../actors';
import {
  ADMIN_OPERATIONS,
  decodeJson,
  encodeJson,
  ERROR_CODES,
  publishEvent as publishCheckedEvent,
  respondError,
  respondOk,
  Subjects,
  validateRequest,
  type BackupEvent,
  type Bus,
  type Message,
} from '../bus';
import { BadRequestError, TableNotFoundError, TableUnavailableError, UnknownOperationError, toTablekeeperError, type StoreFs, type TableCorruptError } from '../store';
import type { OwnerControl } from './recovery';
import { pendingJournals, type RecoveryJournal } from './recovery-journal';
import type { RunRegistry } from './run-registry';
import type { Config } from './config';
import { HISTORY_TABLE, HistoryStore } from './history';
import { Maintenance } from './maintenance';
import { Schedule, type Clock, type ScheduleState } from './schedule';

/** Events the maintenance actor accepts from the supervisor. */
export type MaintenanceActorEvent =
  | { type: 'OWNER_STATE'; table: string; state: TableOwnerState | 'down'; restarts?: number }
  | { type: 'OWNER_COMPACT_REQUEST'; table: string; force: boolean; reply: (body: unknown) => void }
  | { type: 'OWNER_CORRUPT'; table: string; error: TableCorruptError; source: string; reply?: (body: unknown) => void };

/**
 * Events it sends back: run this job on that table's owner; stop an owner
 * for a recovery (it is not restarted until `RECOVERY_START`); start it again.
 */
export type MaintenanceActorReport =
  | { type: 'MAINTAIN'; table: string; job: MaintenanceJob }
  | { type: 'RECOVERY_STOP'; table: string }
  | { type: 'RECOVERY_START'; table: string };

/** What the maintenance actor needs. */
export interface MaintenanceActorInput {
  config: Config;
  bus: Bus;
  logger: Logger;
  clock: Clock;
  /** Recoveries a crash interrupted, found at start; their owners are not started until they finish. */
  pending: RecoveryJournal[];
  /** File access seam for the backup directory (retention), for fault-injection tests. */
  fs?: StoreFs;
  /** Work that outlives this actor if it stops or crashes (see run-registry.ts); shared with its successors. */
  runs: RunRegistry;
}

const SCHEDULES = ['backup', 'compaction', 'scrub'] as const;
/** RunRegistry keys: maintenance runs and admin requests (any table), and the history's close. */
const ANY_TABLE = '*';
const HISTORY_CLOSE = '';
const ADMIN_OPERATION_SET: ReadonlySet<string> = new Set(ADMIN_OPERATIONS);
const SETTLED_STATES: ReadonlySet<string> = new Set(['serving', 'corrupt', 'failed', 'down']);

/** The wire code for an internal error code (`internal` for one the table does not know). */
function wireCode(code: string): string {
  return ERROR_CODES[code as keyof typeof ERROR_CODES]?.wire ?? 'internal';
}

/**
 * The supervisor's maintenance side: opens the history table, runs the backup
 * and compaction schedules (next run from the persisted last run), answers
 * `admin.*` requests, and runs `tables.<t>.compact` requests forwarded by
 * owners. Jobs reach owners through the supervisor (`MAINTAIN` events).
 */
export const maintenanceActor = fromCallback<MaintenanceActorEvent, MaintenanceActorInput>(
  ({ input, receive, sendBack }) => {
    const { config, bus, logger, clock } = input;
    const restarts = new Map<string, number>();
    const { runs } = input;
    // Runs and admin requests under way: they record their outcome in the history, which is closed only after them.
    const noted = <T>(run: Promise<T>): Promise<T> => {
      runs.add(ANY_TABLE, run);
      return run;
    };
    // Callers waiting for an owner to reach a state, by table.
    type Waiter = { want: (s: TableOwnerState | 'down') => boolean; resolve: (s: TableOwnerState | 'down') => void; reject: (err: Error) => void };
    const waiters = new Map<string, Waiter[]>();
    // Once stopped (or crashed), this actor moves no owner any more: the
    // supervisor would not act on it, so a run in progress gets an error at
    // its next step instead of waiting for ever (it keeps its journal, and
    // the next actor or the next start finishes it).
    const gone = (table: string): Error => new TableUnavailableError(table, 'stopping (maintenance stopped)');
    const waitFor = (table: string, want: (s: TableOwnerState | 'down') => boolean): Promise<TableOwnerState | 'down'> => {
      if (stopped) return Promise.reject(gone(table));
      const now = states.get(table);
      if (now !== undefined && want(now)) return Promise.resolve(now);
      return new Promise((resolve, reject) => waiters.set(table, [...(waiters.get(table) ?? []), { want, resolve, reject }]));
    };
    const owners: OwnerControl = {
      async stop(table) {
        if (stopped) throw gone(table);
        sendBack({ type: 'RECOVERY_STOP', table } satisfies MaintenanceActorReport);
        await waitFor(table, (s) => s === 'down');
      },
      async start(table) {
        if (stopped) throw gone(table);
        // The supervisor reports `opening` first; wait past it for where the open settles.
        const opening = waitFor(table, (s) => s !== 'down');
        sendBack({ type: 'RECOVERY_START', table } satisfies MaintenanceActorReport);
        await opening;
        const settled = await waitFor(table, (s) => SETTLED_STATES.has(s));
        return settled === 'down' ? 'failed' : settled;
      },
    };
    const subjects = new Subjects(config.subjectPrefix);
    const tables = config.tables.map((t) => t.name);
    const states = new Map<string, TableOwnerState | 'down'>(tables.map((t) => [t, 'down']));
    const schedules = new Map<string, Schedule>();
    let stopped = false;
    let started: Maintenance | undefined;
    const publishEvent = (event: BackupEvent, body: Record<string, unknown>): void => {
      try {
        publishCheckedEvent(bus, subjects, event, { event, at: new Date(clock.now()).toISOString(), ...body });
      } catch (err) {
        logger.error({ err, event }, 'could not publish event');
      }
    };

    const submit = (table: string, request: MaintenanceRequest) =>
      new Promise<MaintenanceOutcome>((resolve, reject) => {
        if (stopped) return reject(gone(table));
        sendBack({ type: 'MAINTAIN', table, job: { request, resolve, reject } } satisfies MaintenanceActorReport);
      });

    const ready: Promise<{ maintenance: Maintenance; history: HistoryStore }> = HistoryStore.open(config.dataDir, {
      logger: logger.child({ table: HISTORY_TABLE }),
      now: () => clock.now(),
    }).then(async (history) => {
      if (history.reset) {
        // pino has no "critical" level: fatal is its most severe. Schedules start over, as on a first start.
        const { reason, quarantined, persisted } = history.reset;
        logger.fatal(
          { table: HISTORY_TABLE, op: 'open', severity: 'critical', reason, quarantined, persisted },
          persisted ? 'history table damaged: quarantined it and started an empty history' : 'history table cannot be used: keeping history in memory until the next start',
        );
        publishEvent('corruption_detected', { table: HISTORY_TABLE, source: 'open', reason, quarantined, persisted });
      }
      const maintenance = new Maintenance({ config, bus, subjects, logger, clock, history, submit, owners, fs: input.fs, runs });
      started = maintenance;
      await maintenance.loadBackupLists(tables);
      if (stopped) return { maintenance, history };
      for (const journal of input.pending) {
        void (async () => {
          // A run of the same table that a crashed predecessor left going
          // ends first (at its next owner step, see `gone`): two runs of one
          // journal would build the same files at once.
          if (runs.busy(journal.table)) {
            await runs.settled(journal.table);
            if (stopped) return;
            // It may have got as far as putting the verified file in place (journal removed).
            if (pendingJournals(config.dataDir, [journal.table]).length === 0) {
              logger.info({ table: journal.table, op: journal.mode }, 'the interrupted recovery had finished its file; starting the owner');
              await owners.start(journal.table);
              return;
            }
          }
          await maintenance.resume(journal);
        })().catch(() => undefined); // published, recorded and logged by Maintenance
      }
      for (const name of SCHEDULES) {
        const spec = name === 'backup' ? config.backup : name === 'compaction' ? config.compaction : config.scrub;
        const schedule = new Schedule({
          name,
          spec,
          clock,
          logger,
          // A table with no backup yet gets one soon after the first start.
          firstRun: name === 'backup' ? 'now' : 'later',
          targets: tables,
          state: () => history.getState<ScheduleState>(`schedule.${name}`),
          save: (state) => history.setState(`schedule.${name}`, state),
          job: async (targets) => {
            // A table that is not serving (still opening, recovering) is not tried now but once it serves.
            const up = targets.filter((t) => states.get(t) === 'serving');
            const down = targets.filter((t) => states.get(t) !== 'serving');
            if (up.length === 0) return { deferred: down };
            const run = await noted<{ deferred?: string[] }>(
              name === 'backup'
                ? maintenance.backup(up, 'scheduled', { defer: true })
                : name === 'compaction'
                  ? maintenance.compact(up, { force: false, trigger: 'scheduled', defer: true })
                  : maintenance.scrub(up, { defer: true }),
            );
            return { deferred: [...down, ...(run.deferred ?? [])] };
          },
          onError: (err) => logger.error({ err, op: name }, 'scheduled run failed'),
        });
        schedules.set(name, schedule);
        schedule.start();
      }
      return { maintenance, history };
    });
    ready.catch((err: unknown) => logger.error({ err, op: 'history' }, 'cannot open the history table; maintenance is off'));

    const health = async () => {
      const { history, maintenance } = await ready;
      const out = [];
      for (const table of tables) {
        let stats: unknown;
        try {
          const reply = await bus.request(subjects.table(table, 'stats'), encodeJson({}), { timeoutMs: 2000 });
          stats = decodeJson(reply.data);
        } catch (err) {
          stats = { error: { code: toTablekeeperError(err).code, message: (err as Error).message } };
        }
        // From memory: health is polled every few seconds and must not read files each time.
        const backups = maintenance.backups(table);
        const lastCompaction = history.last('compaction', table);
        const latest = backups[0];
        const lastRecovery = history.last('recovery', table);
        const recoveries = history.count('recovery', table);
        const degraded = maintenance.degraded(table);
        out.push({
          table,
          state: maintenance.recovering(table) ? 'recovering' : states.get(table),
          restarts: restarts.get(table) ?? 0,
          degraded: degraded ?? null,
          recoveries: {
            count: recoveries.count,
            failed: recoveries.failed,
            last: lastRecovery ?? null,
          },
          scrub: maintenance.lastScrub(table) ?? null,
          stats,
          lastBackup: latest
            ? { at: latest.createdAt, bytes: latest.length, records: latest.liveKeys, file: latest.name, verified: true }
            : null,
          backups: backups.length,
          lastCompaction: lastCompaction ?? null,
        });
      }
      const next = Object.fromEntries(
        [...schedules].map(([name, s]) => [name, s.nextAt === undefined || !Number.isFinite(s.nextAt) ? null : new Date(s.nextAt).toISOString()]),
      );
      return { status: out.every((t) => t.state === 'serving' && t.degraded === null) ? 'ok' : 'degraded', tables: out, nextRuns: next };
    };

    const tablesFor = (table: string | undefined): string[] => {
      if (table === undefined) return tables;
      if (!states.has(table)) throw new TableNotFoundError(table);
      return [table];
    };

    const adminRoot = `${subjects.prefix ? `${subjects.prefix}.` : ''}admin.`;
    const onAdmin = async (msg: Message): Promise<void> => {
      try {
        const [op, table, ...rest] = msg.subject.slice(adminRoot.length).split('.');
        if (rest.length > 0) throw new UnknownOperationError(msg.subject.slice(adminRoot.length));
        // The subject first: an unknown operation says so, whatever its body.
        if (!ADMIN_OPERATION_SET.has(op)) throw new UnknownOperationError(op ?? '');
        const body = decodeJson(msg.data);
        const { maintenance, history } = await ready;
        switch (op) {
          case 'backup': {
            validateRequest('admin.backup', body);
            respondOk(msg, await maintenance.backup(tablesFor(table), 'manual'));
            return;
          }
          case 'compact': {
            const { force } = validateRequest('admin.compact', body) as { force?: boolean };
            respondOk(msg, await maintenance.compact(tablesFor(table), { force: force === true, trigger: 'manual' }));
            return;
          }
          case 'restore': {
            if (table === undefined) throw new BadRequestError('admin.restore needs a table: admin.restore.<table>');
            validateRequest('admin.restore', body);
            respondOk(msg, await maintenance.restore(tablesFor(table)[0]));
            return;
          }
          case 'clear': {
            if (table === undefined) throw new BadRequestError('admin.clear needs a table: admin.clear.<table>');
            validateRequest('admin.clear', body);
            const name = tablesFor(table)[0];
            respondOk(msg, { table: name, cleared: await maintenance.clearDegraded(name) });
            return;
          }
          case 'health':
            if (table !== undefined) throw new UnknownOperationError(`health.${table}`);
            validateRequest('admin.health', body);
            respondOk(msg, await health());
            return;
          case 'history': {
            if (table !== undefined) throw new UnknownOperationError(`history.${table}`);
            const { limit } = validateRequest('admin.history', body) as { limit?: number };
            respondOk(msg, { entries: history.recent(limit ?? 50) });
            return;
          }
          default:
            throw new UnknownOperationError(op ?? '');
        }
      } catch (err) {
        respondError(msg, err);
      }
    };
    let sub: ReturnType<Bus['subscribe']> | undefined;
    // Idempotent. Also run when the actor crashes (xstate runs no cleanup for
    // a callback actor that throws, while it starts or in `receive`), so that
    // what has begun (history open, journals, schedules, the admin
    // subscription) goes no further and a restarted actor is the only one at
    // work; a history store opened again waits for this one's close.
    const cleanup = (): void => {
      if (stopped) return;
      stopped = true;
      sub?.unsubscribe();
      for (const s of schedules.values()) s.stop();
      // Stopped before the waiters fail, so that the runs they end know it was the stop.
      started?.stop();
      for (const [table, list] of waiters) for (const w of list) w.reject(gone(table));
      waiters.clear();
      // Every history write is durable when acknowledged; closing only
      // releases the file, once the runs still going have recorded theirs.
      runs.add(
        HISTORY_CLOSE,
        ready
          .then(async ({ maintenance, history }) => {
            maintenance.stop();
            await runs.settled(undefined, HISTORY_CLOSE);
            return history.close();
          })
          .catch(() => undefined),
      );
    };
    try {
      sub = bus.subscribe(`${adminRoot}>`, (msg) => noted(onAdmin(msg)));
    } catch (err) {
      cleanup();
      throw err;
    }

    receive((event) => {
      try {
        handle(event);
      } catch (err) {
        cleanup();
        throw err;
      }
    });

    function handle(event: MaintenanceActorEvent): void {
      if (event.type === 'OWNER_STATE') {
        states.set(event.table, event.state);
        if (event.restarts !== undefined) restarts.set(event.table, event.restarts);
        // Scheduled runs that found the table down try it again now.
        if (event.state === 'serving') for (const s of schedules.values()) s.wake();
        const list = waiters.get(event.table);
        if (list) {
          const keep = list.filter((w) => {
            if (!w.want(event.state)) return true;
            w.resolve(event.state);
            return false;
          });
          if (keep.length > 0) waiters.set(event.table, keep);
          else waiters.delete(event.table);
        }
        return;
      }
      if (event.type === 'OWNER_CORRUPT') {
        const { table, error, source, reply } = event;
        ready
          .then(
            ({ maintenance }) => {
              // Stopping: no new run. The damage is still there at the next start, which finds it again.
              if (stopped) {
                reply?.({ error: { code: 'unavailable', message: 'the service is stopping' } });
                return;
              }
              return maintenance.recover(table, { reason: error.reason, offset: error.offset, source, reply });
            },
            // Maintenance is off (logged where `ready` failed): no run will ever
            // answer, so the caller hears it now rather than waiting for a timeout.
            (err: unknown) => {
              logger.error({ table, op: 'recover', source, reason: error.reason }, 'corruption reported while maintenance is off: the table is not recovered until the next start');
              reply?.({ error: { code: wireCode(toTablekeeperError(err).code), message: `maintenance is off (${(err as Error).message}): the table is not recovered until the service restarts` } });
            },
          )
          .catch(() => undefined); // a run's failure is answered, published, recorded and logged by Maintenance
        return;
      }
      const { table, force, reply } = event;
      ready
        .then(({ maintenance }) => maintenance.compact([table], { force, trigger: 'manual' }))
        .then(
          ({ results }) => {
            const r = results[0];
            // Callers of `tables.<t>.compact` get wire codes, as in every other error reply.
            reply(r.status === 'error' && r.error ? { ...r, error: { code: wireCode(r.error.code), message: r.error.message } } : r);
          },
          (err: unknown) => reply({ status: 'error', table, error: { code: wireCode(toTablekeeperError(err).code), message: (err as Error).message } }),
        );
    }

    return cleanup;
  },
);
