import type { Logger } from 'pino';
import { assign, enqueueActions, fromPromise, setup, type ActorRefFrom } from 'xstate';
import type { Bus, MicroService } from '../bus';
import { existsSync } from 'node:fs';
import { tableFilePath, tableOwnerMachine, type TableOwnerOutput, type TableOwnerReport, type TableOwnerState } from '../actors';
import { TableCorruptError, TableUnavailableError, type StoreFs } from '../store';
import type { Config } from './config';
import { maintenanceActor, type MaintenanceActorReport } from './maintenance-actor';
import { RunRegistry } from './run-registry';
import { systemClock, type Clock } from './schedule';
import { TableDispatch, tablesGateway, type GatewayEvent } from './tables-gateway';
import { pendingJournals, type RecoveryJournal } from './recovery-journal';

/** What the supervisor needs; everything is injected. */
export interface SupervisorInput {
  config: Config;
  bus: Bus;
  logger: Logger;
  service?: MicroService;
  fs?: StoreFs;
  /** Wall clock for the restart window (tests pass a fake one). */
  now?: () => number;
  /** Clock for the maintenance schedules (tests pass a simulated one). */
  clock?: Clock;
  /**
   * Maintenance work that may outlive a maintenance actor (see
   * run-registry.ts). The supervisor waits for it before it reaches
   * `stopped`; a caller that passes its own can wait for it too.
   */
  runs?: RunRegistry;
}

/** The supervisor's view of one table's owner. */
export interface OwnerRecord {
  alive: boolean;
  /** The owner's last reported state ('down' while no owner runs). */
  state: TableOwnerState | 'down';
  /** Times of recent restarts, newest last, within the restart window. */
  restarts: number[];
  lastError?: string;
  /** Set while the restart limit is exceeded and the owner is cooling down. */
  gaveUpAt?: number;
  /** Restarts since the service started (for health and metrics). */
  restartCount: number;
  /** True while a recovery holds the owner down: it is not restarted until the recovery starts it. */
  recovering: boolean;
  /**
   * Set when the restart limit for open failures sent the table file to the
   * recovery cycle; cleared once the owner serves. A second time the limit is
   * reached before that, the supervisor only waits a window (no loop of recoveries).
   */
  openRecoveryTried?: boolean;
}

/** The supervisor's helper actors (besides the owners), restarted like owners when they crash. */
export type HelperId = 'gateway' | 'maintenance';

/** The supervisor's view of one helper actor. */
export interface HelperRecord {
  /** Times of recent restarts, newest last, within the restart window. */
  restarts: number[];
  /** Restarts since the service started. */
  restartCount: number;
  lastError?: string;
  /** Set while the restart limit is exceeded and the helper is cooling down. */
  gaveUpAt?: number;
  /** True from its crash until it is started again. */
  down?: boolean;
}

/** A table owner's corruption report, as the supervisor receives it. */
type OwnerCorruptEvent = Extract<TableOwnerReport, { type: 'OWNER_CORRUPT' }>;

/** Events the supervisor accepts. */
export type SupervisorEvent =
  | { type: 'STOP' }
  | { type: 'RESTART'; table: string }
  | { type: 'RESTART_HELPER'; helper: HelperId }
  | TableOwnerReport
  | MaintenanceActorReport
  | { type: `xstate.done.actor.${string}`; output: TableOwnerOutput }
  | { type: `xstate.error.actor.${string}`; error: unknown };

const OWNER_PREFIX = 'owner:';
const BASE_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;

function ownerId(table: string): string {
  return `${OWNER_PREFIX}${table}`;
}

const HELPERS: readonly HelperId[] = ['gateway', 'maintenance'];

/** The helper an `xstate.*.actor.<id>` event is about, if any. */
function helperOf(eventType: string): HelperId | undefined {
  return HELPERS.find((h) => eventType.endsWith(`.actor.${h}`));
}

function tableOf(eventType: string): string {
  const at = eventType.indexOf(OWNER_PREFIX);
  return at === -1 ? '' : eventType.slice(at + OWNER_PREFIX.length);
}

const STOPPING = { code: 'unavailable', message: 'the service is stopping' } as const;
/** What the supervisor answers, once stopping, to what would start new work. */
const refusedWhileStopping = {
  MAINTAIN: {
    actions: ({ event }: { event: SupervisorEvent }) => {
      if (event.type === 'MAINTAIN') event.job.reject(new TableUnavailableError(event.table, 'stopping'));
    },
  },
  OWNER_CORRUPT: {
    actions: ({ event }: { event: SupervisorEvent }) => {
      if (event.type === 'OWNER_CORRUPT') event.reply?.({ error: STOPPING });
    },
  },
  OWNER_COMPACT_REQUEST: {
    actions: ({ event }: { event: SupervisorEvent }) => {
      if (event.type === 'OWNER_COMPACT_REQUEST') event.reply({ status: 'error', table: event.table, error: STOPPING });
    },
  },
};

/**
 * The supervisor: spawns one owner per configured table and restarts an owner
 * that ends in failure, with exponential backoff and a restart limit per
 * window (as OTP's max restarts in a period). Past the limit it stops
 * restarting that table for one window, logs at error level, then tries again;
 * the other tables are never affected. An owner whose existing table file
 * fails to open past the limit is not restarted: its file goes through the
 * recovery cycle (once, until it serves again). `STOP` stops every owner (each flushes,
 * fsyncs and closes its file) and then the supervisor reaches `stopped`.
 */
export const supervisorMachine = setup({
  types: {
    input: {} as SupervisorInput,
    context: {} as {
      input: SupervisorInput;
      owners: Record<string, OwnerRecord>;
      pending: RecoveryJournal[];
      /** Owners register their request handler here; the gateway dispatches to it. */
      dispatch: TableDispatch;
      helpers: Record<HelperId, HelperRecord>;
      /** Corruption reports that came while the maintenance actor was down, for the restarted one. */
      heldReports: OwnerCorruptEvent[];
      runs: RunRegistry;
    },
    events: {} as SupervisorEvent,
  },
  actors: {
    tableOwner: tableOwnerMachine,
    tablesGateway,
    maintenanceActor,
    maintenanceDrained: fromPromise<void, RunRegistry>(({ input }) => input.settled()),
  },
  actions: {
    recordState: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'OWNER_STATE') return;
      const record = context.owners[event.table];
      const openRecoveryTried = event.state === 'serving' ? undefined : record.openRecoveryTried;
      enqueue.assign({ owners: { ...context.owners, [event.table]: { ...record, state: event.state, openRecoveryTried } } });
      // A maintenance actor that is down (restarting, or stopped by a stop) learns every state when it is started again.
      if (context.helpers.maintenance.down !== true) {
        enqueue.sendTo('maintenance', { type: 'OWNER_STATE', table: event.table, state: event.state, restarts: record.restartCount });
      }
    }),
    dispatchJob: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'MAINTAIN') return;
      const owner = context.owners[event.table];
      if (owner?.alive) enqueue.sendTo(ownerId(event.table), { type: 'MAINTAIN', job: event.job });
      else event.job.reject(new TableUnavailableError(event.table, owner ? owner.state : 'unknown'));
    }),
    spawnOwner: enqueueActions(({ context, enqueue }, params: { table: string }) => {
      const { input } = context;
      const table = input.config.tables.find((t) => t.name === params.table);
      if (!table) return;
      enqueue.spawnChild('tableOwner', {
        id: ownerId(table.name),
        input: {
          table,
          dataDir: input.config.dataDir,
          backupDir: input.config.backupDir,
          bus: input.bus,
          subjectPrefix: input.config.subjectPrefix ? `${input.config.subjectPrefix}.` : '',
          logger: input.logger.child({ table: table.name }),
          service: input.service,
          dispatch: context.dispatch,
          fs: input.fs,
        },
      });
      enqueue.assign({
        owners: ({ context: c }) => ({
          ...c.owners,
          [table.name]: { ...c.owners[table.name], alive: true, state: 'opening', gaveUpAt: undefined },
        }),
      });
      enqueue.sendTo('gateway', { type: 'OWNER_ALIVE', table: table.name, alive: true } satisfies GatewayEvent);
    }),
    spawnGateway: enqueueActions(({ context, enqueue }) => {
      const { input } = context;
      enqueue.spawnChild('tablesGateway', {
        id: 'gateway',
        input: {
          bus: input.bus,
          subjectPrefix: input.config.subjectPrefix ? `${input.config.subjectPrefix}.` : '',
          tables: input.config.tables.map((t) => t.name),
          dispatch: context.dispatch,
          // A restarted gateway must still tell a recovery from a restart.
          recovering: Object.entries(context.owners)
            .filter(([, o]) => !o.alive && o.recovering)
            .map(([t]) => t),
        },
      });
    }),
    spawnMaintenance: enqueueActions(({ context, enqueue }, params: { restarted: boolean }) => {
      const { input } = context;
      let pending = context.pending;
      if (params.restarted) {
        // The recoveries the crashed actor had under way are taken up again
        // from their journals; a table it held down without a journal yet
        // had not been touched, so its owner simply starts again.
        const held = Object.entries(context.owners)
          .filter(([, o]) => o.recovering)
          .map(([t]) => t);
        pending = pendingJournals(input.config.dataDir, held);
        const resumed = new Set(pending.map((j) => j.table));
        for (const table of held) {
          if (resumed.has(table)) continue;
          enqueue.assign({ owners: ({ context: c }) => ({ ...c.owners, [table]: { ...c.owners[table], recovering: false } }) });
          if (!context.owners[table].alive) enqueue.raise({ type: 'RESTART', table });
        }
      }
      enqueue.spawnChild('maintenanceActor', {
        id: 'maintenance',
        input: { config: input.config, bus: input.bus, logger: input.logger, clock: input.clock ?? systemClock, pending, fs: input.fs, runs: context.runs },
      });
      enqueue.assign({ helpers: ({ context: c }) => ({ ...c.helpers, maintenance: { ...c.helpers.maintenance, down: false } }) });
      if (!params.restarted) return;
      // It starts knowing nothing of the owners: tell it where each one is.
      for (const [table, o] of Object.entries(context.owners)) {
        enqueue.sendTo('maintenance', { type: 'OWNER_STATE', table, state: o.alive ? o.state : 'down', restarts: o.restartCount });
      }
      // Then the damage reported while it was down.
      for (const report of context.heldReports) enqueue.sendTo('maintenance', report);
      enqueue.assign({ heldReports: [] });
    }),
    /** Hands a corruption report to the maintenance actor, or holds it while that actor is down. */
    reportCorruption: enqueueActions(({ context, enqueue, event }) => {
      if (event.type !== 'OWNER_CORRUPT') return;
      if (context.helpers.maintenance.down === true) enqueue.assign({ heldReports: [...context.heldReports, event] });
      else enqueue.sendTo('maintenance', event);
    }),
    /** Hands a compact request to the maintenance actor, or answers it `unavailable` while that actor is down. */
    requestCompaction: enqueueActions(({ context, enqueue, event }) => {
      if (event.type !== 'OWNER_COMPACT_REQUEST') return;
      if (context.helpers.maintenance.down !== true) {
        enqueue.sendTo('maintenance', event);
        return;
      }
      event.reply({ status: 'error', table: event.table, error: { code: 'unavailable', message: 'maintenance is restarting; try again shortly' } });
    }),
    helperEnded: enqueueActions(({ context, enqueue, event }) => {
      const helper = helperOf(event.type);
      if (helper === undefined) return;
      const record = context.helpers[helper];
      const reason = 'error' in event ? String((event.error as Error)?.message ?? event.error) : 'ended';
      enqueue.assign({ helpers: ({ context: c }) => ({ ...c.helpers, [helper]: { ...c.helpers[helper], down: true } }) });
      const { maxRestarts, restartWindowMs } = context.input.config.supervisor;
      const now = (context.input.now ?? Date.now)();
      const recent = record.restarts.filter((t) => now - t < restartWindowMs);
      const log = context.input.logger;
      if (recent.length >= maxRestarts) {
        log.error({ helper, restarts: recent.length, windowMs: restartWindowMs, reason }, 'restart limit reached; retrying after one window');
        enqueue.assign({ helpers: ({ context: c }) => ({ ...c.helpers, [helper]: { ...c.helpers[helper], restarts: [], gaveUpAt: now, lastError: reason } }) });
        enqueue.raise({ type: 'RESTART_HELPER', helper }, { delay: restartWindowMs });
        return;
      }
      const delay = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** recent.length);
      log.error({ helper, attempt: recent.length + 1, delayMs: delay, reason }, 'supervisor helper failed; restarting');
      enqueue.assign({
        helpers: ({ context: c }) => ({
          ...c.helpers,
          [helper]: { ...c.helpers[helper], restarts: [...recent, now], restartCount: c.helpers[helper].restartCount + 1, lastError: reason },
        }),
      });
      enqueue.raise({ type: 'RESTART_HELPER', helper }, { delay });
    }),
    ownerDown: assign({
      owners: ({ context, event }) => {
        const table = tableOf(event.type);
        return { ...context.owners, [table]: { ...context.owners[table], alive: false, state: 'down' as const } };
      },
    }),
    ownerEnded: enqueueActions(({ context, enqueue, event }) => {
      const type = event.type;
      const table = tableOf(type);
      const record = context.owners[table];
      if (!record) return;
      const output = 'output' in event ? (event.output as TableOwnerOutput) : undefined;
      const failed = !output || output.reason === 'failed';
      const reason = output?.error?.message ?? ('error' in event ? String((event.error as Error)?.message ?? event.error) : undefined);
      enqueue.sendTo('gateway', { type: 'OWNER_ALIVE', table, alive: false, recovering: record.recovering } satisfies GatewayEvent);
      if (context.helpers.maintenance.down !== true) enqueue.sendTo('maintenance', { type: 'OWNER_STATE', table, state: 'down' });
      enqueue.assign({
        owners: ({ context: c }) => ({
          ...c.owners,
          [table]: { ...c.owners[table], alive: false, state: 'down', lastError: failed ? reason : c.owners[table].lastError },
        }),
      });
      // A recovery that stopped the owner starts it again itself.
      if (!failed || record.recovering) return;
      const { maxRestarts, restartWindowMs } = context.input.config.supervisor;
      const now = (context.input.now ?? Date.now)();
      const recent = record.restarts.filter((t) => now - t < restartWindowMs);
      const log = context.input.logger;
      // The owner reports `opening` and nothing after it when its open fails.
      const openFailed = record.state === 'opening';
      if (
        recent.length >= maxRestarts &&
        openFailed &&
        !record.openRecoveryTried &&
        !environmentFault(output?.error) &&
        existsSync(tableFilePath(context.input.config.dataDir, table))
      ) {
        // A table file that keeps failing to open (EIO, ...) is damage: the
        // recovery cycle quarantines it and rebuilds from the latest backup
        // plus whatever can still be read, and starts the owner itself.
        log.error({ table, restarts: recent.length, windowMs: restartWindowMs, reason }, 'the table file keeps failing to open; recovering it');
        enqueue.assign({ owners: ({ context: c }) => ({ ...c.owners, [table]: { ...c.owners[table], restarts: [], openRecoveryTried: true } }) });
        const error = new TableCorruptError(table, 0, `the table file failed to open ${recent.length + 1} times: ${reason ?? 'unknown error'}`);
        enqueue.raise({ type: 'OWNER_CORRUPT', table, error, source: 'open' });
        return;
      }
      if (recent.length >= maxRestarts) {
        log.error({ table, restarts: recent.length, windowMs: restartWindowMs, reason }, 'restart limit reached; retrying after one window');
        enqueue.assign({ owners: ({ context: c }) => ({ ...c.owners, [table]: { ...c.owners[table], restarts: [], gaveUpAt: now } }) });
        enqueue.raise({ type: 'RESTART', table }, { delay: restartWindowMs });
        return;
      }
      const delay = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** recent.length);
      log.warn({ table, attempt: recent.length + 1, delayMs: delay, reason }, 'table owner failed; restarting');
      enqueue.assign({
        owners: ({ context: c }) => ({ ...c.owners, [table]: { ...c.owners[table], restarts: [...recent, now], restartCount: c.owners[table].restartCount + 1 } }),
      });
      enqueue.raise({ type: 'RESTART', table }, { delay });
    }),
  },
  guards: {
    helperEnded: ({ event }) => helperOf(event.type) !== undefined,
    // A helper that ends while stopping is not an owner (nor restarted).
    endedOwner: ({ context, event }) => context.owners[tableOf(event.type)] !== undefined,
    knownOwner: ({ context, event }) => 'table' in event && context.owners[event.table as string] !== undefined,
    noOwnerAlive: ({ context }) => Object.values(context.owners).every((o) => !o.alive),
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => {
    // Read synchronously, before any owner opens a file it must not touch yet.
    const pending = pendingJournals(input.config.dataDir, input.config.tables.map((t) => t.name));
    return {
      input,
      pending,
      dispatch: new TableDispatch(),
      helpers: { gateway: { restarts: [], restartCount: 0 }, maintenance: { restarts: [], restartCount: 0 } },
      heldReports: [],
      runs: input.runs ?? new RunRegistry(),
      owners: Object.fromEntries(
        input.config.tables.map((t) => [
          t.name,
          { alive: false, state: 'down', restarts: [], restartCount: 0, recovering: pending.some((j) => j.table === t.name) } as OwnerRecord,
        ]),
      ),
    };
  },
  initial: 'running',
  states: {
    running: {
      entry: enqueueActions(({ context, enqueue }) => {
        // Spawned, not invoked, so that a crashed helper can be started again;
        // they live until the supervisor stops, through `stopping`.
        enqueue('spawnGateway');
        enqueue({ type: 'spawnMaintenance', params: { restarted: false } });
        // A table whose recovery a crash interrupted stays down until the recovery finishes.
        for (const t of context.input.config.tables) {
          if (!context.owners[t.name].recovering) enqueue({ type: 'spawnOwner', params: { table: t.name } });
          else enqueue.sendTo('gateway', { type: 'OWNER_ALIVE', table: t.name, alive: false, recovering: true } satisfies GatewayEvent);
        }
      }),
      on: {
        'xstate.done.actor.*': [{ guard: 'helperEnded', actions: 'helperEnded' }, { actions: 'ownerEnded' }],
        'xstate.error.actor.*': [{ guard: 'helperEnded', actions: 'helperEnded' }, { actions: 'ownerEnded' }],
        RESTART: {
          guard: ({ context, event }) => context.owners[event.table]?.alive === false && !context.owners[event.table].recovering,
          actions: { type: 'spawnOwner', params: ({ event }) => ({ table: event.table }) },
        },
        RESTART_HELPER: {
          actions: enqueueActions(({ context, event, enqueue }) => {
            enqueue.assign({ helpers: { ...context.helpers, [event.helper]: { ...context.helpers[event.helper], gaveUpAt: undefined } } });
            if (event.helper === 'gateway') enqueue('spawnGateway');
            else enqueue({ type: 'spawnMaintenance', params: { restarted: true } });
          }),
        },
        OWNER_STATE: { guard: 'knownOwner', actions: 'recordState' },
        MAINTAIN: { actions: 'dispatchJob' },
        OWNER_COMPACT_REQUEST: { actions: 'requestCompaction' },
        OWNER_CORRUPT: { guard: 'knownOwner', actions: 'reportCorruption' },
        RECOVERY_STOP: {
          guard: 'knownOwner',
          actions: enqueueActions(({ context, event, enqueue }) => {
            const record = context.owners[event.table];
            enqueue.assign({ owners: { ...context.owners, [event.table]: { ...record, recovering: true } } });
            if (record.alive) enqueue.sendTo(ownerId(event.table), { type: 'STOP' });
            else enqueue.sendTo('gateway', { type: 'OWNER_ALIVE', table: event.table, alive: false, recovering: true } satisfies GatewayEvent);
          }),
        },
        RECOVERY_START: {
          guard: 'knownOwner',
          actions: enqueueActions(({ context, event, enqueue }) => {
            const record = context.owners[event.table];
            enqueue.assign({ owners: { ...context.owners, [event.table]: { ...record, recovering: false, restarts: [] } } });
            if (!record.alive) enqueue({ type: 'spawnOwner', params: { table: event.table } });
          }),
        },
        STOP: 'stopping',
      },
    },
    stopping: {
      entry: enqueueActions(({ context, enqueue }) => {
        context.input.logger.info({ op: 'stop' }, 'stopping all tables');
        // First, so that it starts nothing more and a recovery under way
        // stops at its next owner step (its journal says where it got to).
        enqueue.stopChild('maintenance');
        enqueue.assign({ helpers: ({ context: c }) => ({ ...c.helpers, maintenance: { ...c.helpers.maintenance, down: true } }) });
        for (const report of context.heldReports) report.reply?.({ error: STOPPING });
        enqueue.assign({ heldReports: [] });
        for (const [table, o] of Object.entries(context.owners)) {
          if (o.alive) enqueue.sendTo(ownerId(table), { type: 'STOP' });
        }
      }),
      always: { guard: 'noOwnerAlive', target: 'draining' },
      on: {
        OWNER_STATE: { guard: 'knownOwner', actions: 'recordState' },
        ...refusedWhileStopping,
        'xstate.done.actor.*': { guard: 'endedOwner', actions: 'ownerDown' },
        'xstate.error.actor.*': { guard: 'endedOwner', actions: 'ownerDown' },
      },
    },
    draining: {
      // A recovery's file work and the history's close end before the supervisor does (and the service lets go of its data directory).
      invoke: { src: 'maintenanceDrained', input: ({ context }) => context.runs, onDone: 'stopped', onError: 'stopped' },
      on: refusedWhileStopping,
    },
    stopped: { type: 'final' },
  },
});

/** A running supervisor. */
export type SupervisorRef = ActorRefFrom<typeof supervisorMachine>;

/** True once no table is still opening: each one serves, is corrupt, or has failed. */
export function allTablesSettled(snapshot: ReturnType<SupervisorRef['getSnapshot']>): boolean {
  return Object.values(snapshot.context.owners).every((o) => o.state !== 'opening' && (o.alive || o.state === 'down'));
}

// Failures that say nothing about the file's bytes: a rebuild cannot help
// (and, for a full disk, needs more of what is missing), so these only wait.
const ENVIRONMENT_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EMFILE', 'ENFILE', 'ENOMEM']);

/** True when `err` (or a cause of it) is an errno of the environment rather than of damage. */
function environmentFault(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && ENVIRONMENT_ERRNOS.has(code)) return true;
  }
  return false;
}
