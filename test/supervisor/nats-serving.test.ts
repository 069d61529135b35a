import pino from 'pino';
import { createActor, toPromise, waitFor } from 'xstate';
import { tableFilePath } from '../../actors/table-owner';
import { checkErrorReply, checkReply, decodeJson, encodeJson, MicroService, NatsBus, requestJson, type Operation } from '../../bus';
import { TableFile } from '../../store';
import { loadConfig, type Config } from '../../supervisor/config';
import { supervisorMachine, type SupervisorRef } from '../../supervisor/supervisor';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { useTempDir } from '../helpers/store-temp';

const silent = pino({ level: 'silent' });
/** Small, so that a value near it is easy to build. */
const MAX_PAYLOAD = 4096;

function configFor(dataDir: string): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: dataDir } });
  // The table's own value limit is far above the server's: the bus limit decides.
  return { ...base, tables: [{ name: 'alpha', sync: 'always' as const, maxValueBytes: 1024 * 1024 }] };
}

describe('tables over nats', () => {
  const tmp = useTempDir('tk-natsserve-');
  let server: NatsServer;
  let bus: NatsBus;
  let client: NatsBus;
  let service: MicroService;
  let actor: SupervisorRef;

  beforeAll(async () => {
    server = await startNatsServer({ config: `max_payload: ${MAX_PAYLOAD}\n` });
  });

  afterAll(async () => {
    await server?.stop();
  });

  async function start(): Promise<void> {
    bus = await NatsBus.connect({ servers: server.url, name: 'service' });
    client = await NatsBus.connect({ servers: server.url, name: 'client' });
    service = new MicroService(bus, { version: '0.0.0', id: 'natsserve' });
    actor = createActor(supervisorMachine, { input: { config: configFor(tmp.dir), bus, logger: silent, service } }).start();
    await waitFor(actor, (s) => s.context.owners.alpha.state === 'serving');
    await bus.flush();
  }

  afterEach(async () => {
    if (actor?.getSnapshot().status === 'active') {
      actor.send({ type: 'STOP' });
      await toPromise(actor);
    }
    service?.stop();
    await client?.close();
    await bus?.close();
  });

  /** The reply body of a request, success or error, as JSON. */
  async function ask(subject: string, body: unknown): Promise<unknown> {
    const reply = await client.request(subject, encodeJson(body), { timeoutMs: 5000 });
    return decodeJson(reply.data);
  }

  test('tables over nats - the bus reports the server max_payload', async () => {
    await start();
    expect(bus.maxPayload).toBe(MAX_PAYLOAD);
  });

  test('tables over nats - a put whose value could not be returned is refused with value_too_large; the service stays up', async () => {
    await start();
    const key = 'k';
    // {"items":[{"key":"k","value":V}],"next":"k"} is 37 + 2 * 3 bytes of framing.
    const fits = 'x'.repeat(MAX_PAYLOAD - 43 - 2);
    await expect(requestJson(client, 'tables.alpha.put', { key, value: fits })).resolves.toEqual({ ok: true });
    await expect(requestJson(client, 'tables.alpha.get', { key })).resolves.toEqual({ found: true, value: fits });
    await expect(requestJson(client, 'tables.alpha.select', { limit: 1 })).resolves.toMatchObject({ items: [{ key, value: fits }] });
    const tooBig = `${fits}y`;
    await expect(requestJson(client, 'tables.alpha.put', { key, value: tooBig })).rejects.toMatchObject({
      wireCode: 'bad_request',
      status: 413,
      message: expect.stringContaining(`max_payload of ${MAX_PAYLOAD} bytes`),
    });
    // Refused, so the old value is still there and still readable.
    await expect(requestJson(client, 'tables.alpha.get', { key })).resolves.toEqual({ found: true, value: fits });
  });

  test('tables over nats - a stored value or page too large for a reply gets bad_request naming max_payload, not a crash', async () => {
    // Written past the bus, as a file from an earlier, larger server would be.
    const file = await TableFile.open({ table: 'alpha', path: tableFilePath(tmp.dir, 'alpha') });
    await file.put('big', Buffer.from(JSON.stringify('z'.repeat(MAX_PAYLOAD))));
    await file.put('small', Buffer.from('1'));
    await file.close();
    await start();
    for (const [subject, body] of [
      ['tables.alpha.get', { key: 'big' }],
      ['tables.alpha.select', {}],
    ] as const) {
      const reply = await ask(subject, body);
      expect(checkErrorReply(reply)).toBeNull();
      expect(reply).toEqual({ error: { code: 'bad_request', message: expect.stringContaining('max_payload') } });
    }
    await expect(requestJson(client, 'tables.alpha.get', { key: 'small' })).resolves.toEqual({ found: true, value: 1 });
    expect(actor.getSnapshot().context.owners.alpha.state).toBe('serving');
  });

  test('tables over nats - a value comes back exactly as it was written: digits beyond 2^53, 1.0, its inner spacing', async () => {
    await start();
    const raw = (text: string) => Buffer.from(text);
    const value = '{ "id" : 12345678901234567890, "price": 1.0, "tags": ["a", "b"] }';
    await client.request('tables.alpha.put', raw(`{"key":"exact", "value" : ${value} }`), { timeoutMs: 5000 });
    const got = await client.request('tables.alpha.get', raw('{"key":"exact"}'), { timeoutMs: 5000 });
    expect(Buffer.from(got.data).toString()).toBe(`{"found":true,"value":${value}}`);
    const page = await client.request('tables.alpha.select', raw('{"prefix":"exact"}'), { timeoutMs: 5000 });
    expect(Buffer.from(page.data).toString()).toBe(`{"items":[{"key":"exact","value":${value}}]}`);
  });

  test('tables over nats - every operation reply matches its reply schema', async () => {
    await start();
    const cases: [Operation, unknown][] = [
      ['put', { key: 'a', value: { n: 1 } }],
      ['put', { key: 'b', value: null }],
      ['get', { key: 'a' }],
      ['get', { key: 'nope' }],
      ['select', { limit: 1 }],
      ['select', { prefix: 'b' }],
      ['delete', { key: 'b' }],
      ['delete', { key: 'b' }],
      ['stats', {}],
      ['compact', {}],
      ['compact', { force: true }],
    ];
    for (const [op, body] of cases) {
      const reply = await ask(`tables.alpha.${op}`, body);
      expect({ op, body, problems: checkReply(op, reply) }).toEqual({ op, body, problems: null });
    }
    const errors: [string, unknown][] = [
      ['tables.alpha.get', { key: 1 }],
      ['tables.alpha.put', { key: 'k' }],
      ['tables.alpha.nosuchop', {}],
      ['tables.alpha', {}],
      ['tables.nosuch.get', { key: 'k' }],
    ];
    for (const [subject, body] of errors) {
      const reply = await ask(subject, body);
      expect({ subject, problems: checkErrorReply(reply) }).toEqual({ subject, problems: null });
    }
  });

  test('tables over nats - $SRV.INFO lists one endpoint per table, and STATS counts its requests', async () => {
    await start();
    await requestJson(client, 'tables.alpha.get', { key: 'k' });
    const info = (await ask('$SRV.INFO.tablekeeper', {})) as { type: string; endpoints: unknown[] };
    expect(info.type).toBe('io.nats.micro.v1.info_response');
    expect(info.endpoints).toEqual([{ name: 'alpha', subject: 'tables.alpha.>', queue_group: 'q' }]);
    const stats = (await ask('$SRV.STATS.tablekeeper.natsserve', {})) as { endpoints: { name: string; num_requests: number }[] };
    expect(stats.endpoints).toEqual([expect.objectContaining({ name: 'alpha', num_requests: 1 })]);
  });
});
