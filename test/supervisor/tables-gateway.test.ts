import pino from 'pino';
import { createActor, setup, sendTo } from 'xstate';
import { InProcessBus, requestJson } from '../../bus';
import { TableDispatch, tablesGateway, type GatewayEvent } from '../../supervisor/tables-gateway';

const silent = pino({ level: 'silent' });

interface HarnessContext {
  bus: InProcessBus;
  dispatch: TableDispatch;
}

/** A parent that only forwards events to the gateway it invokes. */
const harness = setup({
  types: { events: {} as GatewayEvent, input: {} as HarnessContext, context: {} as HarnessContext },
  actors: { tablesGateway },
}).createMachine({
  context: ({ input }) => input,
  invoke: {
    id: 'gateway',
    src: 'tablesGateway',
    input: ({ context }) => ({ bus: context.bus, subjectPrefix: '', tables: ['alpha', 'beta'], dispatch: context.dispatch }),
  },
  on: { OWNER_ALIVE: { actions: sendTo('gateway', ({ event }) => event) } },
});

describe('tables gateway', () => {
  let bus: InProcessBus;
  let dispatch: TableDispatch;
  let actor: ReturnType<typeof createActor<typeof harness>>;

  beforeEach(() => {
    bus = new InProcessBus({ logger: silent });
    dispatch = new TableDispatch();
    actor = createActor(harness, { input: { bus, dispatch } }).start();
  });

  afterEach(async () => {
    actor.stop();
    await bus.close();
  });

  test('tables gateway - answers for tables without a live owner: not_found, restarting or recovering', async () => {
    await expect(requestJson(bus, 'tables.nosuch.get', { key: 'k' })).rejects.toMatchObject({ wireCode: 'not_found' });
    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).rejects.toMatchObject({ wireCode: 'unavailable', message: expect.stringContaining('restarting') });
    actor.send({ type: 'OWNER_ALIVE', table: 'alpha', alive: false, recovering: true });
    await expect(requestJson(bus, 'tables.alpha.put', { key: 'k', value: 1 })).rejects.toMatchObject({ wireCode: 'unavailable', message: expect.stringContaining('recovering') });
    // beta is unaffected by alpha's recovery.
    await expect(requestJson(bus, 'tables.beta.get', { key: 'k' })).rejects.toMatchObject({ message: expect.stringContaining('restarting') });
    // An operation that does not exist is bad_request even while the owner is down: retrying would not help.
    await expect(requestJson(bus, 'tables.alpha.frobnicate', {})).rejects.toMatchObject({ wireCode: 'bad_request' });
  });

  test('tables gateway - hands a table request to the registered owner, once, and answers again once it unregisters', async () => {
    const seen: string[] = [];
    const unregister = dispatch.register('alpha', (msg) => {
      seen.push(msg.subject);
      msg.respond(Buffer.from('{"found":false}'));
    });
    actor.send({ type: 'OWNER_ALIVE', table: 'alpha', alive: true });
    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).resolves.toEqual({ found: false });
    expect(seen).toEqual(['tables.alpha.get']);
    // An older owner's unregister does not remove a newer owner's handler.
    const newer = dispatch.register('alpha', (msg) => void msg.respond(Buffer.from('{"found":true,"value":1}')));
    unregister();
    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).resolves.toEqual({ found: true, value: 1 });
    newer();
    actor.send({ type: 'OWNER_ALIVE', table: 'alpha', alive: false });
    await expect(requestJson(bus, 'tables.alpha.get', { key: 'k' })).rejects.toMatchObject({ wireCode: 'unavailable' });
    expect(seen).toEqual(['tables.alpha.get']);
  });

  test('tables gateway - a known table with no operation gets bad_request, whether its owner runs or not', async () => {
    await expect(requestJson(bus, 'tables.alpha', {})).rejects.toMatchObject({ wireCode: 'bad_request', message: expect.stringContaining('no operation') });
    dispatch.register('alpha', (msg) => void msg.respond(Buffer.from('{}')));
    await expect(requestJson(bus, 'tables.alpha', {})).rejects.toMatchObject({ wireCode: 'bad_request' });
    await expect(requestJson(bus, 'tables.nosuch', {})).rejects.toMatchObject({ wireCode: 'not_found' });
  });
});
