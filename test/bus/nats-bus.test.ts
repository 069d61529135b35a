import { existsSync } from 'node:fs';
import { NatsBus } from '../../bus/nats-bus';
import { MicroService } from '../../bus/micro';
import { decodeJson, respondError, SERVICE_ERROR_CODE_HEADER } from '../../bus/codec';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { captureLog, defineBusContract } from './contract';
import { until } from '../helpers/wait';

let server: NatsServer;

beforeAll(async () => {
  server = await startNatsServer();
});

afterAll(async () => {
  await server?.stop();
});

defineBusContract('nats bus', async (opts) => NatsBus.connect({ servers: server.url, name: 'contract', ...opts }));

describe('nats bus', () => {
  test('nats bus - $SRV.PING is answered over a real server', async () => {
    const bus = await NatsBus.connect({ servers: server.url });
    const client = await NatsBus.connect({ servers: server.url });
    try {
      const svc = new MicroService(bus, { version: '1.2.3', id: 'natsping' });
      await bus.flush();
      const reply = await client.request('$SRV.PING.tablekeeper.natsping', undefined, { timeoutMs: 5000 });
      expect(decodeJson(reply.data)).toEqual({
        type: 'io.nats.micro.v1.ping_response',
        name: 'tablekeeper',
        id: 'natsping',
        version: '1.2.3',
        metadata: {},
      });
      svc.stop();
    } finally {
      await client.close();
      await bus.close();
    }
  });

  test('nats bus - two connections: queue group splits work, and a request crosses connections', async () => {
    const a = await NatsBus.connect({ servers: server.url });
    const b = await NatsBus.connect({ servers: server.url });
    try {
      const handled: string[] = [];
      for (const [name, bus] of [['a', a], ['b', b]] as const) {
        bus.subscribe('xconn.work', (m) => {
          handled.push(name);
          m.respond(new TextEncoder().encode(name));
        }, { queue: 'workers' });
      }
      await Promise.all([a.flush(), b.flush()]);
      const replies = await Promise.all(Array.from({ length: 20 }, () => a.request('xconn.work')));
      expect(replies).toHaveLength(20);
      expect(handled).toHaveLength(20);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('nats bus - losing the server is logged as a status change', async () => {
    const own = await startNatsServer();
    const log = captureLog();
    const bus = await NatsBus.connect({ servers: own.url, logger: log.logger });
    try {
      await own.stop();
      const deadline = Date.now() + 10_000;
      while (!log.lines.some((l) => l.msg === 'nats disconnected') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(log.lines.map((l) => l.msg)).toContain('nats disconnected');
    } finally {
      await bus.close();
    }
  });

  test('nats bus - while the server is gone, requests fail at once (in flight ones too) and publishes throw; after it is back both work', async () => {
    let own = await startNatsServer();
    const { port } = own;
    const log = captureLog();
    const bus = await NatsBus.connect({ servers: own.url, logger: log.logger });
    const responder = await NatsBus.connect({ servers: own.url });
    try {
      responder.subscribe('svc.echo', (msg) => void msg.respond(msg.data));
      responder.subscribe('svc.silent', () => undefined);
      await responder.flush();
      expect(Buffer.from((await bus.request('svc.echo', Buffer.from('a'))).data).toString()).toBe('a');
      // Never answered: without the server gone it would wait its whole 60 s.
      const inFlight = bus.request('svc.silent', Buffer.from('x'), { timeoutMs: 60_000 }).then(() => 'answered', (err: unknown) => err);
      await own.stop();
      expect(await inFlight).toMatchObject({ code: 'BUS_CLOSED', message: expect.stringMatching(/connection is down/) });
      await expect(bus.request('svc.echo', Buffer.from('b'), { timeoutMs: 60_000 })).rejects.toMatchObject({ code: 'BUS_CLOSED' });
      expect(() => bus.publish('svc.event', Buffer.from('e'))).toThrow(/connection is down/);
      // The same port again: both connections come back by themselves.
      own = await startNatsServer({ args: ['-p', String(port)] });
      await until(() => log.lines.some((l) => l.msg === 'nats reconnected'), 'the reconnect', 30_000);
      // The responder's subscriptions are sent again on its own reconnect: retried until it has.
      let answer = '';
      for (let i = 0; i < 300 && answer !== 'c'; i++) {
        answer = await bus.request('svc.echo', Buffer.from('c'), { timeoutMs: 1000 }).then((m) => Buffer.from(m.data).toString(), () => '');
        if (answer !== 'c') await new Promise((r) => setTimeout(r, 50));
      }
      expect(answer).toBe('c');
      expect(() => bus.publish('svc.event', Buffer.from('e'))).not.toThrow();
    } finally {
      await bus.close();
      await responder.close();
      await own.stop();
    }
  });

  test('nats-server helper - stop kills the server by pid and removes its directory', async () => {
    const own = await startNatsServer({ jetstream: true });
    expect(own.url).toBe(`nats://127.0.0.1:${own.port}`);
    expect(existsSync(own.dir)).toBe(true);
    expect(() => process.kill(own.pid, 0)).not.toThrow();
    await own.stop();
    expect(existsSync(own.dir)).toBe(false);
    expect(() => process.kill(own.pid, 0)).toThrow();
  });
});

describe('nats bus - replies over max_payload', () => {
  let small: NatsServer;

  beforeAll(async () => {
    small = await startNatsServer({ config: 'max_payload: 1024' });
  });

  afterAll(async () => {
    await small?.stop();
  });

  test('nats bus - a reply over max_payload is not counted; the error reply after it is, in $SRV.STATS', async () => {
    const bus = await NatsBus.connect({ servers: small.url });
    const client = await NatsBus.connect({ servers: small.url });
    try {
      const svc = new MicroService(bus, { version: '1.0.0', id: 'oversize' });
      const big = 'x'.repeat(2048);
      // Returned body: the micro layer answers the send failure itself.
      const returned = svc.addEndpoint({ name: 'returned', subject: 'big.returned', handler: () => big });
      // Replied by the handler, which answers the failure with an error reply (as table requests do).
      const replied = svc.addEndpoint({
        name: 'replied',
        subject: 'big.replied',
        handler: (msg) => {
          try {
            msg.respond(new TextEncoder().encode(JSON.stringify(big)));
          } catch (err) {
            respondError(msg, err);
          }
        },
      });
      await bus.flush();
      for (const subject of ['big.returned', 'big.replied']) {
        const reply = await client.request(subject, undefined, { timeoutMs: 5000 });
        expect(reply.headers?.[SERVICE_ERROR_CODE_HEADER]).toBe('413');
        expect(decodeJson(reply.data)).toMatchObject({ error: { code: 'bad_request' } });
      }
      for (const ep of [returned, replied]) {
        expect(ep.stats()).toMatchObject({ num_requests: 1, num_errors: 1 });
        expect(ep.stats().last_error).toMatch(/max_payload/);
      }
      svc.stop();
    } finally {
      await client.close();
      await bus.close();
    }
  });
});
