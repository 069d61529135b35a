import * as path from 'node:path';
import pino from 'pino';
import { InProcessBus } from '../../bus/in-process-bus';
import { MicroService } from '../../bus/micro';
import { decodeJson, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from '../../bus/codec';
import { TableRequests, type RequestHandlerReport } from '../../actors/table-requests';
import { TableFile } from '../../store';
import { useTempDir } from '../helpers/store-temp';

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

describe('table requests - select page size', () => {
  const tmp = useTempDir();
  const silent = pino({ level: 'silent' });

  /** A table file with `values` (key -> JSON text) behind TableRequests on an in-process bus whose message limit is `maxPayload`. */
  async function serve(values: [string, string][], maxPayload?: number) {
    const file = await TableFile.open({ table: 't', path: path.join(tmp.dir, 't.tkt'), readCacheBytes: 0 });
    for (const [k, v] of values) await file.put(k, Buffer.from(v));
    const bus = new InProcessBus();
    const requests = new TableRequests('t', silent, () => undefined, () => maxPayload);
    requests.setMode({ state: 'serving', file });
    bus.subscribe('tables.t.>', (msg) => requests.handle(msg.subject.split('.')[2], msg));
    const select = async (body: unknown) => {
      const reply = await bus.request('tables.t.select', text(JSON.stringify(body)));
      return { bytes: reply.data.length, body: decodeJson(reply.data) as { items: { key: string }[]; next?: string } };
    };
    return { file, bus, select, close: async () => { await bus.close(); await file.close(); } };
  }

  test('table requests - a select of large values returns at most 4 MiB of them and a `next`, not the whole limit at once', async () => {
    const mib = 1024 * 1024;
    const big = JSON.stringify('v'.repeat(mib - 16));
    const t = await serve(Array.from({ length: 10 }, (_, i) => [`k${i}`, big] as [string, string]));
    const page = await t.select({ limit: 1000 });
    expect(page.body.items.map((i) => i.key)).toEqual(['k0', 'k1', 'k2', 'k3']);
    expect(page.body.next).toBe('k3');
    expect(page.bytes).toBeLessThan(4 * mib + 1024);
    // Only what the page returns was read from the file.
    expect(t.file.stats().readCache.misses).toBe(4);
    await t.close();
  });

  test('table requests - over a bus with a message limit, a page of large values is cut to fit it (with `next`), never refused for its size', async () => {
    const value = JSON.stringify('x'.repeat(308)); // 310 bytes
    const t = await serve(['a', 'b', 'c', 'd'].map((k) => [k, value] as [string, string]), 1000);
    // Keys and values of a, b, c are 933 bytes, within the limit; with the framing the reply would be 1015.
    const first = await t.select({ limit: 1000 });
    expect(first.body.items.map((i) => i.key)).toEqual(['a', 'b']);
    expect(first.body.next).toBe('b');
    expect(first.bytes).toBeLessThanOrEqual(1000);
    const second = await t.select({ after: first.body.next, limit: 1000 });
    expect(second.body.items.map((i) => i.key)).toEqual(['c', 'd']);
    expect(second.body.next).toBeUndefined();
    expect(second.bytes).toBeLessThanOrEqual(1000);
    await t.close();
  });
});
