import pino from 'pino';
import { createActor, setup, sendTo } from 'xstate';
import { InProcessBus, requestJson } from '../../bus';
import { tablesGateway, type GatewayEvent } from '../../supervisor/tables-gateway';

const silent = pino({ level: 'silent' });

/** A parent that only forwards events to the gateway it invokes. */
const harness = setup({
  types: { events: {} as GatewayEvent, input: {} as { bus: InProcessBus }, context: {} as { bus: InProcessBus } },
  actors: { tablesGateway },
}).createMachine({
  context: ({ input }) => ({ bus: input.bus }),
  invoke: { id: 'gateway', src: 'tablesGateway', input: ({ context }) => ({ bus: context.bus, subjectPrefix: '', tables: ['alpha', 'beta'] }) },
  on: { OWNER_ALIVE: { actions: sendTo('gateway', ({ event }) => event) } },
});

describe('tables gateway', () => {
  test('tables gateway - answers for tables without a live owner: not_found, restarting or recovering', async () => {
    const bus = new InProcessBus({ logger: silent });
    const actor = createActor(harness, { input: { bus } }).start();
    try {
      await expect(requestJson(bus, 'tables.nosuch.get', { key: 'k' })).rejects.toMatchObject({ wireCode: 'not_found' });
      await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).rejects.toMatchObject({ wireCode: 'unavailable', message: expect.stringContaining('restarting') });
      actor.send({ type: 'OWNER_ALIVE', table: 'alpha', alive: false, recovering: true });
      await expect(requestJson(bus, 'tables.alpha.put', { key: 'k', value: 1 })).rejects.toMatchObject({ wireCode: 'unavailable', message: expect.stringContaining('recovering') });
      // beta is unaffected by alpha's recovery.
      await expect(requestJson(bus, 'tables.beta.get', { key: 'k' })).rejects.toMatchObject({ message: expect.stringContaining('restarting') });
      // Once an owner is alive the gateway stays silent and the owner answers.
      actor.send({ type: 'OWNER_ALIVE', table: 'alpha', alive: true });
      bus.subscribe('tables.alpha.get', (msg) => void msg.respond(Buffer.from('{"found":false}')));
      await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).resolves.toEqual({ found: false });
    } finally {
      actor.stop();
      await bus.close();
    }
  });
});
