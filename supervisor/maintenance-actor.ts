import type { Logger } from 'pino';
import { fromCallback } from 'xstate';
import type { MaintenanceJob, MaintenanceOutcome, MaintenanceRequest } from '../actors/maintenance-job';
import type { TableOwnerState } from '../actors/table-owner';
import type { Bus, Message } from '../bus/bus';
import { decodeJson, encodeJson, respondError, respondOk } from '../bus/codec';
import { validateRequest } from '../bus/schemas';
import { Subjects } from '../bus/subjects';
import { TableNotFoundError, UnknownOperationError, listBackups, toTablekeeperError } from '../store';
import type { Config } from './config';
import { HistoryStore } from './history';
import { Maintenance } from './maintenance';
import { Schedule, type Clock } from './schedule';

/** Events the maintenance actor accepts from the supervisor. */
export type MaintenanceActorEvent =
  | { type: 'OWNER_STATE'; table: string; state: TableOwnerState | 'down' }
  | { type: 'OWNER_COMPACT_REQUEST'; table: string; force: boolean; reply: (body: unknown) => void };

/** Events it sends back: run this job on that table's owner. */
export type MaintenanceActorReport = { type: 'MAINTAIN'; table: string; job: MaintenanceJob };

/** What the maintenance actor needs. */
export interface MaintenanceActorInput {
  config: Config;
  bus: Bus;
  logger: Logger;
  clock: Clock;
}

const SCHEDULES = ['backup', 'compaction'] as const;

/**
 * The supervisor's maintenance side: opens the history table, runs the backup
 * and compaction schedules (next run from the persisted last run), answers
 * `admin.*` requests, and runs `tables.<t>.compact` requests forwarded by
 * owners. Jobs reach owners through the supervisor (`MAINTAIN` events).
 */
export const maintenanceActor = fromCallback<MaintenanceActorEvent, MaintenanceActorInput>(
  ({ input, receive, sendBack }) => {
    const { config, bus, logger, clock } = input;
    const subjects = new Subjects(config.subjectPrefix);
    const tables = config.tables.map((t) => t.name);
    const states = new Map<string, TableOwnerState | 'down'>(tables.map((t) => [t, 'down']));
    const schedules = new Map<string, Schedule>();
    let stopped = false;

    const submit = (table: string, request: MaintenanceRequest) =>
      new Promise<MaintenanceOutcome>((resolve, reject) => {
        sendBack({ type: 'MAINTAIN', table, job: { request, resolve, reject } } satisfies MaintenanceActorReport);
      });

    const ready: Promise<{ maintenance: Maintenance; history: HistoryStore }> = HistoryStore.open(config.dataDir, {
      logger: logger.child({ table: '_history' }),
    }).then((history) => {
      const maintenance = new Maintenance({ config, bus, subjects, logger, clock, history, submit });
      if (stopped) return { maintenance, history };
      for (const name of SCHEDULES) {
        const spec = name === 'backup' ? config.backup : config.compaction;
        const schedule = new Schedule({
          name,
          spec,
          clock,
          // A table with no backup yet gets one soon after the first start.
          firstRun: name === 'backup' ? 'now' : 'later',
          lastRun: () => history.getState<{ lastRun: number }>(`schedule.${name}`)?.lastRun,
          record: (at) => history.setState(`schedule.${name}`, { lastRun: at }),
          job: async () => {
            if (name === 'backup') await maintenance.backup(tables, 'scheduled');
            else await maintenance.compact(tables, { force: false, trigger: 'scheduled' });
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
      const { history } = await ready;
      const out = [];
      for (const table of tables) {
        let stats: unknown;
        try {
          const reply = await bus.request(subjects.table(table, 'stats'), encodeJson({}), { timeoutMs: 2000 });
          stats = decodeJson(reply.data);
        } catch (err) {
          stats = { error: { code: toTablekeeperError(err).code, message: (err as Error).message } };
        }
        const backups = await listBackups(config.backupDir, table);
        const lastCompaction = history.recent(1, (e) => e.kind === 'compaction' && e.table === table)[0];
        const latest = backups[0];
        out.push({
          table,
          state: states.get(table),
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
      return { status: out.every((t) => t.state === 'serving') ? 'ok' : 'degraded', tables: out, nextRuns: next };
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
    const sub = bus.subscribe(`${adminRoot}>`, onAdmin);

    receive((event) => {
      if (event.type === 'OWNER_STATE') {
        states.set(event.table, event.state);
        return;
      }
      const { table, force, reply } = event;
      ready
        .then(({ maintenance }) => maintenance.compact([table], { force, trigger: 'manual' }))
        .then(
          ({ results }) => {
            const r = results[0];
            reply(r.status === 'error' ? { ...r, status: 'error' } : r);
          },
          (err: unknown) => reply({ status: 'error', table, error: { code: toTablekeeperError(err).code, message: (err as Error).message } }),
        );
    });

    return () => {
      stopped = true;
      sub.unsubscribe();
      for (const s of schedules.values()) s.stop();
      // Every history write is durable when acknowledged; closing only releases the file.
      void ready.then(({ history }) => history.close()).catch(() => undefined);
    };
  },
);
