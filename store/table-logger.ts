import pino, { type Logger } from 'pino';

/**
 * `logger` with the `table` field bound, for everything logged about one
 * table. A logger already bound to that table is returned as it is: binding
 * it again would write the field twice in every line.
 */
export function tableLogger(logger: Logger | undefined, table: string): Logger {
  const base = logger ?? pino({ level: 'silent' });
  return base.bindings().table === table ? base : base.child({ table });
}
