import pino from 'pino';
import { InProcessBus } from '../../bus/in-process-bus';
import { MicroService } from '../../bus/micro';
import { decodeJson, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from '../../bus/codec';
import { TableRequests, type RequestHandlerReport } from '../../actors/table-requests';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('table requests', () => {
  let bus: InProcessBus;
  let svc: MicroService;
  let reports: RequestHandlerReport[];

  beforeEach(() => {
    bus = new InProcessBus();
    svc = new MicroService(bus, { version: '0.1.0', id: 'treq' });
    reports = [];
    const requests = new TableRequests('t', pino({ level: 'silent' }), (r) => void reports.push(r));
    svc.addEndpoint({ name: 't', subject: 'tables.t.>', handler: (msg) => requests.handle(msg.subject.split('.')[2], msg) });
  });

  afterEach(async () => {
    svc.stop();
    await bus.close();
  });

  /** Sends a corruption request and answers it, as the supervisor would after the recovery, with `outcome`. */
  async function corruption(outcome: unknown) {
    const reply = bus.request('tables.t.corruption', text('{"reason":"test"}'));
    await bus.flush();
    const report = reports.find((r) => r.type === 'CORRUPTION_DETECTED');
    expect(report?.type === 'CORRUPTION_DETECTED' && report.reply).toBeInstanceOf(Function);
    if (report?.type === 'CORRUPTION_DETECTED') report.reply!(outcome);
    return reply;
  }

  test('table requests - a corruption request whose recovery failed is answered as an error, with the micro error headers, and counted as one', async () => {
    const reply = await corruption({ error: { code: 'internal', message: 'recovery failed:\nno backup' } });
    expect(decodeJson(reply.data)).toEqual({ error: { code: 'internal', message: 'recovery failed:\nno backup' } });
    expect(reply.headers).toEqual({ [SERVICE_ERROR_HEADER]: 'recovery failed: no backup', [SERVICE_ERROR_CODE_HEADER]: '500' });
    expect(svc.stats().endpoints[0]).toMatchObject({ num_requests: 1, num_errors: 1, last_error: 'recovery failed: no backup' });
  });

  test('table requests - an `unavailable` outcome (the service stopping) carries status 503', async () => {
    const reply = await corruption({ error: { code: 'unavailable', message: 'the service is stopping' } });
    expect(reply.headers?.[SERVICE_ERROR_CODE_HEADER]).toBe('503');
    expect(svc.stats().endpoints[0]).toMatchObject({ num_errors: 1 });
  });

  test('table requests - a corruption request whose recovery succeeded is answered without error headers', async () => {
    const reply = await corruption({ status: 'recovered', table: 't' });
    expect(decodeJson(reply.data)).toEqual({ status: 'recovered', table: 't' });
    expect(reply.headers).toBeUndefined();
    expect(svc.stats().endpoints[0]).toMatchObject({ num_requests: 1, num_errors: 0 });
  });
});
