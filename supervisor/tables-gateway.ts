import { fromCallback } from 'xstate';
import { respondError, TABLE_OPERATIONS, type Bus, type MessageHandler } from '../bus';
import { BadRequestError, TableNotFoundError, TableUnavailableError, UnknownOperationError } from '../store';

const OPERATIONS: ReadonlySet<string> = new Set(TABLE_OPERATIONS);

/** Events the gateway accepts from the supervisor. */
export type GatewayEvent = { type: 'OWNER_ALIVE'; table: string; alive: boolean; recovering?: boolean };

/**
 * Where table owners register their request handler, by table name. The
 * gateway's one subscription hands each request to the handler registered
 * for its table, so a request reaches the process once, whoever answers it.
 */
export class TableDispatch {
  private readonly handlers = new Map<string, MessageHandler>();

  /** Routes `table`'s requests to `handler` until the returned function is called. */
  register(table: string, handler: MessageHandler): () => void {
    this.handlers.set(table, handler);
    return () => {
      // A newer owner of the same table may have registered meanwhile.
      if (this.handlers.get(table) === handler) this.handlers.delete(table);
    };
  }

  /** The handler registered for `table`, if an owner runs. */
  handler(table: string): MessageHandler | undefined {
    return this.handlers.get(table);
  }
}

/** What the gateway needs. */
export interface GatewayInput {
  bus: Bus;
  subjectPrefix: string;
  tables: string[];
  /** Owners register here; the gateway dispatches to them. */
  dispatch: TableDispatch;
  /** Tables held down by a recovery when the gateway starts (a restarted gateway is told again). */
  recovering?: string[];
  /** Queue group of the subscription; default 'q', as for NATS micro endpoints. */
  queue?: string;
}

/**
 * The one subscriber to `tables.>`: hands each request to its table's owner
 * (through `TableDispatch`) and answers the rest itself: `not_found` for an
 * unknown table, `bad_request` for a subject that names no operation, and
 * `unavailable` for a configured table whose owner is down (between a crash
 * and its restart, or during a recovery). Every request gets exactly one answer.
 */
export const tablesGateway = fromCallback<GatewayEvent, GatewayInput>(({ input, receive }) => {
  const known = new Set(input.tables);
  const recovering = new Set(input.recovering ?? []);
  const dispatch = input.dispatch;
  receive((event) => {
    if (!event.alive && event.recovering) recovering.add(event.table);
    else recovering.delete(event.table);
  });
  const base = `${input.subjectPrefix}tables.`;
  const sub = input.bus.subscribe(
    `${base}>`,
    (msg) => {
      const subject = msg.subject;
      const dot = subject.indexOf('.', base.length);
      const table = subject.slice(base.length, dot === -1 ? subject.length : dot);
      if (dot !== -1) {
        const handler = dispatch.handler(table);
        // Returned, so that a draining bus waits for a write's reply.
        if (handler !== undefined) return handler(msg);
      }
      if (!known.has(table)) respondError(msg, new TableNotFoundError(table));
      else if (dot === -1) respondError(msg, noOperation(subject));
      // A request that could never succeed says so, whether or not the owner is up.
      else if (!OPERATIONS.has(subject.slice(dot + 1))) respondError(msg, new UnknownOperationError(subject.slice(dot + 1)));
      else respondError(msg, new TableUnavailableError(table, recovering.has(table) ? 'recovering' : 'restarting'));
    },
    { queue: input.queue ?? 'q' },
  );
  return () => sub.unsubscribe();
});

/** The answer to `tables.<t>` (a known table, but no operation token). */
function noOperation(subject: string): BadRequestError {
  return new BadRequestError(`subject '${subject}' names no operation; use ${subject}.<${TABLE_OPERATIONS.join('|')}>`, {
    details: { subject },
  });
}
