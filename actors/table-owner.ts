import * as path from 'node:path';
import type { Logger } from 'pino';
import { assign, fromCallback, fromPromise, sendParent, sendTo, setup, type ActorRefFrom } from 'xstate';
import type { Bus, Message } from '../bus/bus';
import type { MicroService } from '../bus/micro';
import { TableCorruptError, TableFile, toTablekeeperError, type StoreFs, type TablekeeperError } from '../store';
import type { TableConfig } from '../supervisor/config';
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
  | { type: 'CORRUPTION_DETECTED'; error: TableCorruptError; source: 'read' | 'scrub' | 'operator' | 'open' }
  | { type: 'FILE_FAILED'; error: TablekeeperError };

/** The owner's lifecycle states, as reported to the supervisor. */
export type TableOwnerState = 'opening' | 'serving' | 'corrupt' | 'stopping' | 'stopped' | 'failed';

/** Events the owner sends to its parent (the supervisor). */
export type TableOwnerReport =
  | { type: 'OWNER_STATE'; table: string; state: TableOwnerState }
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
    context: {} as { input: TableOwnerInput; file: TableFile | null; error: TablekeeperError | null; failed: boolean },
    events: {} as TableOwnerEvent,
    output: {} as TableOwnerOutput,
  },
  actors: { requestRouter, openTable, closeTable },
  actions: {
    route: sendTo('router', (_, mode: ServingMode): RouterEvent => ({ type: 'MODE', mode })),
    report: sendParent(({ context }, state: TableOwnerState): TableOwnerReport => ({
      type: 'OWNER_STATE',
      table: context.input.table.name,
      state,
    })),
  },
}).createMachine({
  id: 'tableOwner',
  context: ({ input }) => ({ input, file: null, error: null, failed: false }),
  invoke: { id: 'router', src: 'requestRouter', input: ({ context }) => context.input },
  initial: 'opening',
  states: {
    opening: {
      entry: [{ type: 'route', params: { state: 'opening' } }, { type: 'report', params: 'opening' }],
      invoke: {
        src: 'openTable',
        input: ({ context }) => context.input,
        onDone: { target: 'serving', actions: assign({ file: ({ event }) => event.output }) },
        onError: [
          {
            guard: ({ event }) => event.error instanceof TableCorruptError,
            target: 'corrupt',
            actions: assign({ error: ({ event }) => event.error as TableCorruptError }),
          },
          { target: 'failed', actions: assign({ error: ({ event }) => toTablekeeperError(event.error) }) },
        ],
      },
      on: { STOP: 'stopping' },
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
