import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { assign, fromCallback, fromPromise, sendParent, sendTo, setup, type ActorRefFrom } from 'xstate';
import type { Bus, Message, MicroService } from '../bus';
import {
  corruptionIn,
  listBackups,
  MaintenanceConflictError,
  TableCorruptError,
  TableFile,
  TableUnavailableError,
  tableLogger,
  toTablekeeperError,
  type StoreFs,
  type TablekeeperError,
} from '../store';
import type { TableConfig, TableDispatch } from '../supervisor';
import { runMaintenance, type MaintenanceJob } from './maintenance-job';
import { markTableCreated, tableWasCreated } from './table-registry';
import { TableRequests, type CorruptionSource, type RequestHandlerReport, type ServingMode } from './table-requests';

/** What a table owner needs; everything comes in here, nothing from module state. */
export interface TableOwnerInput {
  table: TableConfig;
  dataDir: string;
  /** Where the table's backups live: a missing table file with backups is damage, not a new table. */
  backupDir: string;
  bus: Bus;
  /** Subject prefix including its trailing dot, or '' (e.g. 'acme.'). */
  subjectPrefix: string;
  logger: Logger;
  /** Registers the table's subjects as a NATS micro-service endpoint. */
  service?: MicroService;
  /**
   * Where the supervisor's gateway dispatches this table's requests from its
   * one `tables.>` subscription. Without it the owner subscribes to
   * `tables.<table>.>` itself (a standalone owner).
   */
  dispatch?: TableDispatch;
  /** File access seam, for fault-injection tests. */
  fs?: StoreFs;
}

/** Why an owner ended; the supervisor decides what to do about it. */
export interface TableOwnerOutput {
  table: string;
  reason: 'stopped' | 'failed';
  error?: TablekeeperError;
}

/** Events a table owner accepts. */
export type TableOwnerEvent =
  | { type: 'STOP' }
  | { type: 'MAINTAIN'; job: MaintenanceJob }
  | { type: 'COMPACT_REQUESTED'; force: boolean; reply: (body: unknown) => void }
  | { type: 'CORRUPTION_DETECTED'; error: TableCorruptError; source: CorruptionSource; reply?: (body: unknown) => void }
  | { type: 'FILE_FAILED'; error: TablekeeperError };

/** The owner's lifecycle states, as reported to the supervisor. */
export type TableOwnerState = 'opening' | 'serving' | 'corrupt' | 'stopping' | 'stopped' | 'failed';

/** Events the owner sends to its parent (the supervisor). */
export type TableOwnerReport =
  | { type: 'OWNER_STATE'; table: string; state: TableOwnerState }
  | { type: 'OWNER_COMPACT_REQUEST'; table: string; force: boolean; reply: (body: unknown) => void }
  | {
      type: 'OWNER_CORRUPT';
      table: string;
      error: TableCorruptError;
      source: CorruptionSource;
      /** Answers a `tables.<t>.corruption` request once the recovery is over. */
      reply?: (body: unknown) => void;
    };

/** The file a table lives in, inside the data directory. */
export function tableFilePath(dataDir: string, table: string): string {
  return path.join(dataDir, `${table}.tkt`);
}

type RouterEvent = { type: 'MODE'; mode: ServingMode };

/**
 * Owns the request subscription for the owner's whole life: even while the
 * table opens, recovers or stops, every request gets an answer.
 */
const requestRouter = fromCallback<RouterEvent, TableOwnerInput>(({ input, sendBack, receive }) => {
  const table = input.table.name;
  const log = input.logger;
  const bus = input.bus;
  const requests = new TableRequests(table, log, (r: RequestHandlerReport) => sendBack(r), () => bus.maxPayload);
  receive((event) => requests.setMode(event.mode));
  const subject = `${input.subjectPrefix}tables.${table}.>`;
  const opStart = subject.length - 1;
  // The returned promise (for writes) lets a draining bus wait for the reply.
  const handler = (msg: Message) => requests.handle(msg.subject.slice(opStart), msg);
  const dispatch = input.dispatch;
  if (dispatch) {
    // The gateway's subscription already covers `tables.>`: a subscription
    // here too would deliver every request to the process twice.
    if (input.service) {
      const endpoint = input.service.addEndpoint({ name: table, subject, handler, subscribe: false });
      const unregister = dispatch.register(table, endpoint.handle);
      return () => {
        unregister();
        endpoint.stop();
      };
    }
    return dispatch.register(table, handler);
  }
  if (input.service) {
    const endpoint = input.service.addEndpoint({ name: table, subject, handler });
    return () => endpoint.stop();
  }
  const sub = input.bus.subscribe(subject, handler);
  return () => sub.unsubscribe();
});

const openTable = fromPromise<TableFile, TableOwnerInput>(async ({ input }) => {
  const table = input.table.name;
  const file = tableFilePath(input.dataDir, table);
  // A table that once had a file (recorded in the registry, or it has
  // backups) and has none now lost it: damage to recover from, not an
  // invitation to start empty.
  if (!existsSync(file)) {
    if (tableWasCreated(input.dataDir, table)) throw new TableCorruptError(table, 0, 'the table file is missing (it existed before)');
    if ((await listBackups(input.backupDir, table, { fs: input.fs })).length > 0) {
      throw new TableCorruptError(table, 0, 'the table file is missing but backups of it exist');
    }
    // A new table: its directory may not exist yet (the service makes it at
    // start, but an owner must not depend on who else runs first).
    await mkdir(input.dataDir, { recursive: true });
  }
  const opened = await TableFile.open({
    table,
    path: file,
    sync: input.table.sync,
    maxValueBytes: input.table.maxValueBytes,
    readCacheBytes: input.table.readCacheBytes,
    fs: input.fs,
    logger: input.logger,
  });
  try {
    await markTableCreated(input.dataDir, table);
  } catch (err) {
    // The table serves; only the "missing file" check of a later start is weaker.
    input.logger.error({ op: 'open', err }, 'could not record the table in the registry of created tables');
  }
  return opened;
});

const maintain = fromPromise<TableCorruptError | null, { file: TableFile; job: MaintenanceJob; logger: Logger }>(async ({ input }) => {
  // The job's own promise carries the outcome to the supervisor; this actor
  // only marks how long the table is busy with maintenance, and hands back
  // any damage the run found so the owner stops serving the file.
  try {
    const outcome = await runMaintenance(input.file, input.job.request, input.logger);
    input.job.resolve(outcome);
    return outcome.kind === 'scrub' ? outcome.damage : null;
  } catch (err) {
    input.job.reject(err);
    return corruptionIn(err);
  }
});

const closeTable = fromPromise<void, { file: TableFile | null; logger: Logger }>(async ({ input }) => {
  if (!input.file) return;
  // A file deleted while open still lives in the descriptor: put it back
  // before closing, so recovery (or the next start) finds every record.
  try {
    if (await input.file.preserveIfMissing()) input.logger.error({ op: 'close' }, 'table file was deleted while open; rewrote it from the open descriptor');
  } catch (err) {
    input.logger.error({ op: 'close', err }, 'could not rewrite the deleted table file');
  }
  await input.file.close();
});

/**
 * One table's owner. States: `opening` -> `serving` -> `stopping` -> `stopped`;
 * `corrupt` when damage is found (the supervisor recovers the table);
 * `failed` when the file cannot be used. `stopped` and `failed` are final and
 * carry a TableOwnerOutput the supervisor observes.
 */
export const tableOwnerMachine = setup({
  types: {
    input: {} as TableOwnerInput,
    context: {} as {
      input: TableOwnerInput;
      file: TableFile | null;
      error: TablekeeperError | null;
      failed: boolean;
      job: MaintenanceJob | null;
      stopRequested: boolean;
      /** Who found the damage that put the owner in `corrupt`. */
      source: CorruptionSource;
      /** A corruption request waiting for the recovery, handed to the supervisor on entering `corrupt`. */
      reply: ((body: unknown) => void) | null;
    },
    events: {} as TableOwnerEvent,
    output: {} as TableOwnerOutput,
  },
  actors: { requestRouter, openTable, closeTable, maintain },
  actions: {
    route: sendTo('router', (_, mode: ServingMode): RouterEvent => ({ type: 'MODE', mode })),
    rejectJob: ({ context, event }) => {
      if (event.type !== 'MAINTAIN') return;
      const table = context.input.table.name;
      const state = context.file ? 'busy with maintenance' : 'not serving';
      event.job.reject(
        context.file
          ? new MaintenanceConflictError(table, event.job.request.kind, 'another maintenance run')
          : new TableUnavailableError(table, state),
      );
    },
    forwardCompact: sendParent(({ context, event }): TableOwnerReport => {
      const e = event as Extract<TableOwnerEvent, { type: 'COMPACT_REQUESTED' }>;
      return { type: 'OWNER_COMPACT_REQUEST', table: context.input.table.name, force: e.force, reply: e.reply };
    }),
    forwardCorruption: sendParent(({ context, event }): TableOwnerReport => {
      const e = event as Extract<TableOwnerEvent, { type: 'CORRUPTION_DETECTED' }>;
      return { type: 'OWNER_CORRUPT', table: context.input.table.name, error: e.error, source: e.source, reply: e.reply };
    }),
    report: sendParent(({ context }, state: TableOwnerState): TableOwnerReport => ({
      type: 'OWNER_STATE',
      table: context.input.table.name,
      state,
    })),
  },
}).createMachine({
  id: 'tableOwner',
  // Everything the owner and its helpers log names the table (bound once, see tableLogger).
  context: ({ input }) => ({
    input: { ...input, logger: tableLogger(input.logger, input.table.name) },
    file: null,
    error: null,
    failed: false,
    job: null,
    stopRequested: false,
    source: 'read',
    reply: null,
  }),
  invoke: { id: 'router', src: 'requestRouter', input: ({ context }) => context.input },
  on: {
    // Outside `serving.idle` a maintenance job is refused at once.
    MAINTAIN: { actions: 'rejectJob' },
    COMPACT_REQUESTED: { actions: 'forwardCompact' },
    // Outside `serving` a reported corruption still reaches the supervisor
    // (a table already recovering adds the caller to that recovery).
    CORRUPTION_DETECTED: { actions: 'forwardCorruption' },
  },
  initial: 'opening',
  states: {
    opening: {
      entry: [{ type: 'route', params: { state: 'opening' } }, { type: 'report', params: 'opening' }],
      invoke: {
        src: 'openTable',
        input: ({ context }) => context.input,
        onDone: [
          // A stop that arrived while opening closes the freshly opened file.
          { guard: ({ context }) => context.stopRequested, target: 'stopping', actions: assign({ file: ({ event }) => event.output }) },
          { target: 'serving', actions: assign({ file: ({ event }) => event.output }) },
        ],
        onError: [
          { guard: ({ context }) => context.stopRequested, target: 'stopped' },
          {
            guard: ({ event }) => event.error instanceof TableCorruptError,
            target: 'corrupt',
            actions: assign({ error: ({ event }) => event.error as TableCorruptError, source: 'open' as const }),
          },
          { target: 'failed', actions: assign({ error: ({ event }) => toTablekeeperError(event.error) }) },
        ],
      },
      on: { STOP: { actions: assign({ stopRequested: true }) } },
    },
    serving: {
      entry: [
        { type: 'route', params: ({ context }) => ({ state: 'serving', file: context.file as TableFile }) },
        { type: 'report', params: 'serving' },
        ({ context }) => context.input.logger.info({ op: 'open', ...context.file?.stats() }, 'table serving'),
      ],
      on: {
        STOP: 'stopping',
        CORRUPTION_DETECTED: {
          target: 'corrupt',
          actions: assign(({ event }) => ({ error: event.error, source: event.source, reply: event.reply ?? null })),
        },
        FILE_FAILED: { target: 'failed', actions: assign({ error: ({ event }) => event.error }) },
      },
      initial: 'idle',
      states: {
        idle: {
          on: { MAINTAIN: { target: 'maintaining', actions: assign({ job: ({ event }) => event.job }) } },
        },
        // Online maintenance: requests keep being served from the same file.
        maintaining: {
          invoke: {
            src: 'maintain',
            input: ({ context }) => ({
              file: context.file as TableFile,
              job: context.job as MaintenanceJob,
              logger: context.input.logger,
            }),
            // Leaving mid-run (stop, corruption) stops this actor, but the run
            // itself still settles the job, so no caller is left waiting.
            onDone: [
              {
                guard: ({ event }) => event.output !== null,
                target: '#tableOwner.corrupt',
                actions: assign({
                  job: null,
                  error: ({ event }) => event.output,
                  source: ({ context }) => (context.job?.request.kind === 'scrub' ? 'scrub' : 'maintenance'),
                }),
              },
              { target: 'idle', actions: assign({ job: null }) },
            ],
          },
        },
      },
    },
    corrupt: {
      entry: [
        { type: 'route', params: { state: 'recovering' } },
        { type: 'report', params: 'corrupt' },
        ({ context }) => {
          const error = context.error as TableCorruptError;
          context.input.logger.error({ op: 'recover', source: context.source, offset: error.offset, reason: error.reason }, 'table corrupt');
        },
        sendParent(({ context }): TableOwnerReport => ({
          type: 'OWNER_CORRUPT',
          table: context.input.table.name,
          error: context.error as TableCorruptError,
          source: context.source,
          reply: context.reply ?? undefined,
        })),
        assign({ reply: null }),
      ],
      on: { STOP: 'stopping' },
    },
    stopping: {
      entry: [{ type: 'route', params: { state: 'stopping' } }, { type: 'report', params: 'stopping' }],
      invoke: {
        src: 'closeTable',
        input: ({ context }) => ({ file: context.file, logger: context.input.logger }),
        onDone: 'stopped',
        onError: {
          target: 'stopped',
          actions: ({ context, event }) =>
            context.input.logger.error({ op: 'close', err: event.error }, 'table close failed'),
        },
      },
    },
    stopped: { type: 'final' },
    failed: {
      type: 'final',
      entry: [
        assign({ failed: true }),
        ({ context }) => {
          const log = context.input.logger;
          log.error({ err: context.error }, 'table owner failed');
          // Best effort: release the descriptor; the supervisor reopens the file.
          context.file?.close().catch((err: unknown) => log.warn({ op: 'close', err }, 'close after failure failed'));
        },
      ],
    },
  },
  output: ({ context }): TableOwnerOutput =>
    context.failed
      ? { table: context.input.table.name, reason: 'failed', error: context.error ?? undefined }
      : { table: context.input.table.name, reason: 'stopped' },
});

/** A running table owner. */
export type TableOwnerRef = ActorRefFrom<typeof tableOwnerMachine>;
