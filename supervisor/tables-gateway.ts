import { fromCallback } from 'xstate';
import type { Bus } from '../bus/bus';
import { respondError } from '../bus/codec';
import { TableNotFoundError, TableUnavailableError } from '../store';

/** Events the gateway accepts from the supervisor. */
export type GatewayEvent = { type: 'OWNER_ALIVE'; table: string; alive: boolean; recovering?: boolean };

/** What the gateway needs. */
export interface GatewayInput {
  bus: Bus;
  subjectPrefix: string;
  tables: string[];
}

/**
 * Answers requests no owner answers: an unknown table gets `not_found`, a
 * configured table whose owner is down (between a crash and its restart) gets
 * `unavailable`. It stays silent for tables whose owner is alive, so every
 * request gets exactly one answer.
 */
export const tablesGateway = fromCallback<GatewayEvent, GatewayInput>(({ input, receive }) => {
  const alive = new Map<string, boolean>(input.tables.map((t) => [t, false]));
  const recovering = new Set<string>();
  receive((event) => {
    alive.set(event.table, event.alive);
    if (!event.alive && event.recovering) recovering.add(event.table);
    else recovering.delete(event.table);
  });
  const base = `${input.subjectPrefix}tables.`;
  const sub = input.bus.subscribe(`${base}>`, (msg) => {
    const subject = msg.subject;
    const dot = subject.indexOf('.', base.length);
    const state = alive.get(subject.slice(base.length, dot === -1 ? subject.length : dot));
    if (state === true) return; // the owner answers (the common case: nothing else to do)
    const table = subject.slice(base.length, dot === -1 ? subject.length : dot);
    if (state === undefined) respondError(msg, new TableNotFoundError(table));
    else if (!state) respondError(msg, new TableUnavailableError(table, recovering.has(table) ? 'recovering' : 'restarting'));
  });
  return () => sub.unsubscribe();
});
