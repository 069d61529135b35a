import * as path from 'node:path';
import type { Logger } from 'pino';
import { assign, fromCallback, fromPromise, sendParent, sendTo, setup, type ActorRefFrom } from 'xstate';
import type { Bus, Message } from '../bus/bus';
import type { MicroService } from '../bus/micro';
import {
  MaintenanceConflictError,
  TableCorruptError,
  TableFile,
  TableUnavailableError,
  toTablekeeperError,
  type StoreFs,
  type TablekeeperError,
} from '../store';
import type { TableConfig } from '../supervisor/config';
import { runMaintenance, type MaintenanceJob } from './maintenance-job';
import { TableRequests, type RequestHandlerReport, type ServingMode } from './table-requests';

/** What a table owner needs; everything comes in here, nothing from module state. */
export interface TableOwnerInput {
  table: TableConfig;
  dataDir: string;
  bus: Bus;
  /** Subject prefix including its trailing dot, or '' (e.g. 'acme.'). */
  subjectPrefix: string;
  logger: Logger;
  /** Registers the table's subjects as a NATS micro-service endpoint. */
  service?: MicroService;
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
  | { type: 'CORRUPTION_DETECTED'; error: TableCorruptError; source: 'read' | 'scrub' | 'operator' | 'open' }
  | { type: 'FILE_FAILED'; error: TablekeeperError };

/** The owner's lifecycle states, as reported to the supervisor. */
export type TableOwnerState = 'opening' | 'serving' | 'corrupt' | 'stopping' | 'stopped' | 'failed';

/** Events the owner sends to its parent (the supervisor). */
export type TableOwnerReport =
  | { type: 'OWNER_STATE'; table: string; state: TableOwnerState }
  | { type: 'OWNER_COMPACT_REQUEST'; table: string; force: boolean; reply: (body: unknown) => void }
  | { type: 'OWNER_CORRUPT'; table: string; error: TableCorruptError; source: string };

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
  const requests = new TableRequests(table, log, (r: RequestHandlerReport) => sendBack(r));
  receive((event) => requests.setMode(event.mode));
  const subject = `${input.subjectPrefix}tables.${table}.>`;
  const opStart = subject.length - 1;
  // The returned promise (for writes) lets a draining bus wait for the reply.
  const handler = (msg: Message) => requests.handle(msg.subject.slice(opStart), msg);
  if (input.service) {
    const endpoint = input.service.addEndpoint({ name: table, subject, handler });
    return () => endpoint.stop();
  }
  const sub = input.bus.subscribe(subject, handler);
  return () => sub.unsubscribe();
});

const openTable = fromPromise<TableFile, TableOwnerInput>(({ input }) =>
  TableFile.open({
    table: input.table.name,
    path: tableFilePath(input.dataDir, input.table.name),
    sync: input.table.sync,
    maxValueBytes: input.table.maxValueBytes,
    fs: input.fs,
    logger: input.logger,
  }),
);

const maintain = fromPromise<void, { file: TableFile; job: MaintenanceJob; logger: Logger }>(async ({ input }) => {
  // The job's own promise carries the outcome to the supervisor; this actor
  // only marks how long the table is busy with maintenance.
  try {
    input.job.resolve(await runMaintenance(input.file, input.job.request, input.logger));
  } catch (err) {
    input.job.reject(err);
  }
});

const closeTable = fromPromise<void, { file: TableFile | null }>(async ({ input }) => {
  if (input.file) await input.file.close();
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
    report: sendParent(({ context }, state: TableOwnerState): TableOwnerReport => ({
      type: 'OWNER_STATE',
      table: context.input.table.name,
      state,
    })),
  },
}).createMachine({
  id: 'tableOwner',
  context: ({ input }) => ({ input, file: null, error: null, failed: false, job: null, stopRequested: false }),
  invoke: { id: 'router', src: 'requestRouter', input: ({ context }) => context.input },
  on: {
    // Outside `serving.idle` a maintenance job is refused at once.
    MAINTAIN: { actions: 'rejectJob' },
    COMPACT_REQUESTED: { actions: 'forwardCompact' },
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
            actions: assign({ error: ({ event }) => event.error as TableCorruptError }),
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
        ({ context }) => context.input.logger.info({ table: context.input.table.name, ...context.file?.stats() }, 'table serving'),
      ],
      on: {
        STOP: 'stopping',
        CORRUPTION_DETECTED: { target: 'corrupt', actions: assign({ error: ({ event }) => event.error }) },
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
            onDone: { target: 'idle', actions: assign({ job: null }) },
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
          context.input.logger.error({ table: context.input.table.name, offset: error.offset, reason: error.reason }, 'table corrupt');
        },
        sendParent(({ context }): TableOwnerReport => ({
          type: 'OWNER_CORRUPT',
          table: context.input.table.name,
          error: context.error as TableCorruptError,
          source: 'owner',
        })),
      ],
      on: { STOP: 'stopping' },
    },
    stopping: {
      entry: [{ type: 'route', params: { state: 'stopping' } }, { type: 'report', params: 'stopping' }],
      invoke: {
        src: 'closeTable',
        input: ({ context }) => ({ file: context.file }),
        onDone: 'stopped',
        onError: {
          target: 'stopped',
          actions: ({ context, event }) =>
            context.input.logger.error({ table: context.input.table.name, err: event.error }, 'table close failed'),
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
          const table = context.input.table.name;
          log.error({ table, err: context.error }, 'table owner failed');
          // Best effort: release the descriptor; the supervisor reopens the file.
          context.file?.close().catch((err: unknown) => log.warn({ table, err }, 'close after failure failed'));
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
