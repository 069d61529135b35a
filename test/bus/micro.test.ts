import { InProcessBus } from '../../bus/in-process-bus';
import { MicroService } from '../../bus/micro';
import { decodeJson, requestJson, respondError, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from '../../bus/codec';
import { BusNoRespondersError, PayloadTooLargeError, RemoteError } from '../../bus/errors';
import type { Message } from '../../bus/bus';
import { BadRequestError, TableUnavailableError } from '../../store/errors';

const STARTED = Date.UTC(2026, 0, 2, 3, 4, 5);

describe('micro', () => {
  let bus: InProcessBus;
  let ticks: number;
  let svc: MicroService;

  beforeEach(() => {
    bus = new InProcessBus();
    ticks = 0;
    svc = new MicroService(bus, {
      version: '0.1.0',
      id: 'inst1',
      description: 'self-maintaining tables',
      metadata: { node: 'a' },
      // Every clock read advances 1 ms: each request then takes exactly 1 ms.
      clock: () => ++ticks,
      wallClock: () => STARTED,
    });
  });

  afterEach(async () => {
    svc.stop();
    await bus.close();
  });

  test.each(['$SRV.PING', '$SRV.PING.tablekeeper', '$SRV.PING.tablekeeper.inst1'])('micro - %s answers a ping_response', async (subject) => {
    await expect(requestJson(bus, subject, undefined)).resolves.toEqual({
      type: 'io.nats.micro.v1.ping_response',
      name: 'tablekeeper',
      id: 'inst1',
      version: '0.1.0',
      metadata: { node: 'a' },
    });
  });

  test('micro - another name or id is not answered', async () => {
    await expect(bus.request('$SRV.PING.other')).rejects.toBeInstanceOf(BusNoRespondersError);
    await expect(bus.request('$SRV.PING.tablekeeper.inst2')).rejects.toBeInstanceOf(BusNoRespondersError);
  });

  test('micro - $SRV.INFO lists the endpoints', async () => {
    svc.addEndpoint({ name: 'task_queue', subject: 'tables.task_queue.>', handler: () => ({}) });
    svc.addEndpoint({ name: 'admin', subject: 'admin.>', queueGroup: 'admins', metadata: { kind: 'admin' }, handler: () => ({}) });
    await expect(requestJson(bus, '$SRV.INFO.tablekeeper', undefined)).resolves.toEqual({
      type: 'io.nats.micro.v1.info_response',
      name: 'tablekeeper',
      id: 'inst1',
      version: '0.1.0',
      metadata: { node: 'a' },
      description: 'self-maintaining tables',
      endpoints: [
        { name: 'task_queue', subject: 'tables.task_queue.>', queue_group: 'q' },
        { name: 'admin', subject: 'admin.>', queue_group: 'admins', metadata: { kind: 'admin' } },
      ],
    });
  });

  test('micro - $SRV.STATS counts requests, errors and processing time', async () => {
    let pending: (() => void) | undefined;
    svc.addEndpoint({
      name: 't',
      subject: 'tables.t.>',
      handler: (msg) => {
        const op = msg.subject.split('.')[2];
        if (op === 'get') return { found: false }; // returned body: ok reply
        if (op === 'put') throw new BadRequestError('value: is required'); // thrown: error reply
        if (op === 'stats') return Promise.resolve({ records: 0 }); // async body
        if (op === 'select') return Promise.reject(new TableUnavailableError('t', 'recovering')); // async error
        // 'delete': the handler answers later by itself, with an error
        pending = () => void respondError(msg, new TableUnavailableError('t', 'opening'));
        return undefined;
      },
    });
    await expect(requestJson(bus, 'tables.t.get', { key: 'k' })).resolves.toEqual({ found: false });
    const put = await bus.request('tables.t.put', new TextEncoder().encode('{"key":"k"}'));
    expect(decodeJson(put.data)).toEqual({ error: { code: 'bad_request', message: 'value: is required' } });
    expect(put.headers).toEqual({ [SERVICE_ERROR_HEADER]: 'value: is required', [SERVICE_ERROR_CODE_HEADER]: '400' });
    await expect(requestJson(bus, 'tables.t.stats', {})).resolves.toEqual({ records: 0 });
    await expect(requestJson(bus, 'tables.t.select', {})).rejects.toMatchObject({ wireCode: 'unavailable', status: 503 });
    const del = requestJson(bus, 'tables.t.delete', { key: 'k' });
    await bus.flush();
    pending!();
    await expect(del).rejects.toBeInstanceOf(RemoteError);

    const stats = (await requestJson(bus, '$SRV.STATS', undefined)) as Record<string, unknown>;
    expect(stats).toEqual({
      type: 'io.nats.micro.v1.stats_response',
      name: 'tablekeeper',
      id: 'inst1',
      version: '0.1.0',
      metadata: { node: 'a' },
      started: '2026-01-02T03:04:05.000Z',
      endpoints: [
        {
          name: 't',
          subject: 'tables.t.>',
          queue_group: 'q',
          num_requests: 5,
          num_errors: 3,
          last_error: "table 't' is opening; retry later",
          processing_time: 5_000_000,
          average_processing_time: 1_000_000,
        },
      ],
    });
  });

  test('micro - reset zeroes the counters', async () => {
    const ep = svc.addEndpoint({ name: 't', subject: 'tables.t.>', handler: () => ({ ok: true }) });
    await requestJson(bus, 'tables.t.put', { key: 'k', value: 1 });
    expect(ep.stats().num_requests).toBe(1);
    svc.reset();
    expect(ep.stats()).toMatchObject({ num_requests: 0, num_errors: 0, last_error: '', processing_time: 0 });
  });

  test('micro - endpoints in one queue group share the work; stop() unsubscribes', async () => {
    const a = svc.addEndpoint({ name: 'a', subject: 'work.x', handler: () => 'a' });
    const b = svc.addEndpoint({ name: 'b', subject: 'work.x', handler: () => 'b' });
    const replies = await Promise.all(Array.from({ length: 10 }, () => requestJson(bus, 'work.x', {})));
    expect(replies.filter((r) => r === 'a').length + replies.filter((r) => r === 'b').length).toBe(10);
    expect(a.stats().num_requests + b.stats().num_requests).toBe(10);
    a.stop();
    b.stop();
    await expect(bus.request('work.x')).rejects.toBeInstanceOf(BusNoRespondersError);
    expect(svc.info().endpoints).toEqual([]);
  });

  test('micro - a published (not requested) message is counted without a reply', async () => {
    const ep = svc.addEndpoint({ name: 'ev', subject: 'backups.>', handler: () => undefined });
    bus.publish('backups.backup_complete', new TextEncoder().encode('{}'));
    await bus.flush();
    expect(ep.stats()).toMatchObject({ num_requests: 1, num_errors: 0, processing_time: 1_000_000 });
  });

  test('micro - an endpoint without a subscription of its own is listed as usual and counts what is handed to it', async () => {
    const ep = svc.addEndpoint({ name: 'alpha', subject: 'tables.alpha.>', subscribe: false, handler: (msg) => ({ echo: msg.subject }) });
    // Nothing subscribes to its subject: only a wider subscription that dispatches reaches it.
    await expect(requestJson(bus, 'tables.alpha.get', {})).rejects.toBeInstanceOf(BusNoRespondersError);
    const sub = bus.subscribe('tables.>', (msg) => ep.handle(msg));
    try {
      await expect(requestJson(bus, 'tables.alpha.get', {})).resolves.toEqual({ echo: 'tables.alpha.get' });
      const info = (await requestJson(bus, '$SRV.INFO', undefined)) as { endpoints: unknown[] };
      expect(info.endpoints).toEqual([{ name: 'alpha', subject: 'tables.alpha.>', queue_group: 'q' }]);
      expect(ep.stats()).toMatchObject({ num_requests: 1, num_errors: 0 });
    } finally {
      sub.unsubscribe();
    }
  });

  test('micro - a reply that cannot be sent is not counted; the error reply after it is', async () => {
    // The bus's own messages: a body that is not bytes throws in respond.
    const ep = svc.addEndpoint({
      name: 'own',
      subject: 'own.x',
      handler: (msg) => {
        try {
          msg.respond('not bytes' as unknown as Uint8Array);
        } catch (err) {
          respondError(msg, err);
        }
      },
    });
    const reply = await bus.request('own.x');
    expect(reply.headers?.[SERVICE_ERROR_CODE_HEADER]).toBe('400');
    expect(ep.stats()).toMatchObject({ num_requests: 1, num_errors: 1, last_error: 'message body must be a Uint8Array' });

    // A message from elsewhere (wrapped): a plain reply over its limit throws, as over NATS.
    const sent: string[] = [];
    const raw: Message = {
      subject: 'wrapped.x',
      data: new Uint8Array(0),
      reply: 'somewhere',
      respond(data, opts) {
        if (opts?.headers === undefined && data.length > 10) throw new PayloadTooLargeError(data.length, 10, 'a reply');
        sent.push(new TextDecoder().decode(data));
        return true;
      },
    };
    const wrapped = svc.addEndpoint({ name: 'wrapped', subject: 'wrapped.x', subscribe: false, handler: () => 'x'.repeat(20) });
    wrapped.handle(raw);
    expect(sent).toHaveLength(1);
    expect(JSON.parse(sent[0])).toMatchObject({ error: { code: 'bad_request' } });
    expect(wrapped.stats()).toMatchObject({ num_requests: 1, num_errors: 1 });
    expect(wrapped.stats().last_error).toMatch(/max_payload/);
  });

  test('micro - invalid names are refused', () => {
    expect(() => svc.addEndpoint({ name: 'a.b', subject: 'x', handler: () => 1 })).toThrow(BadRequestError);
    expect(() => svc.addEndpoint({ name: 'a', subject: 'x..y', handler: () => 1 })).toThrow(BadRequestError);
    expect(() => new MicroService(bus, { version: '1', name: 'has space' })).toThrow(BadRequestError);
  });
});
