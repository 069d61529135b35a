/**
 * The one contract every `Bus` implementation must meet. Each implementation's
 * test file calls `defineBusContract` with a factory.
 *
 * No test waits on wall-clock luck: "everything published has arrived" is
 * established with `bus.flush()` (on NATS, one connection's flush returns
 * after the server has sent it every message published before it), and the
 * only timeouts asserted are "it did time out, with the right error".
 */
import pino, { type Logger } from 'pino';
import type { Bus, Message } from '../../bus/bus';
import { BusClosedError, BusNoRespondersError, BusTimeoutError, InvalidSubjectError } from '../../bus/errors';
import { BadRequestError } from '../../store/errors';
import { MAX_QUEUE_BYTES, MAX_SUBJECT_BYTES } from '../../bus/rules';

/** Creates a fresh, connected bus for one test. */
export type BusFactory = (opts: { logger: Logger; drainTimeoutMs?: number }) => Promise<Bus>;

/** Log lines captured from a pino logger. */
export interface CapturedLog {
  logger: Logger;
  lines: Array<{ level: number; msg: string; [k: string]: unknown }>;
}

/** A pino logger that records every line in memory. */
export function captureLog(): CapturedLog {
  const lines: CapturedLog['lines'] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (d: Uint8Array): string => new TextDecoder().decode(d);

/** Defines the contract tests for one implementation. */
export function defineBusContract(label: string, factory: BusFactory): void {
  describe(`${label} - bus contract`, () => {
    let open: Bus[] = [];
    let log: CapturedLog;
    let n = 0;
    let root: string;

    const newBus = async (drainTimeoutMs?: number): Promise<Bus> => {
      const bus = await factory({ logger: log.logger, drainTimeoutMs });
      open.push(bus);
      return bus;
    };

    /** Records what arrives on `subject` as "subject|body" strings. */
    const collect = (bus: Bus, subject: string, queue?: string): string[] => {
      const got: string[] = [];
      bus.subscribe(subject, (m) => void got.push(`${m.subject}|${str(m.data)}`), queue ? { queue } : undefined);
      return got;
    };

    beforeEach(() => {
      log = captureLog();
      // A fresh subject root per test, so nothing can leak between tests on a shared server.
      root = `ct${process.pid}x${++n}`;
    });

    afterEach(async () => {
      await Promise.all(open.map((b) => b.close()));
      open = [];
    });

    test('publish reaches a subscriber with the same bytes, asynchronously', async () => {
      const bus = await newBus();
      const got: Message[] = [];
      bus.subscribe(`${root}.a`, (m) => void got.push(m));
      bus.publish(`${root}.a`, new Uint8Array([0, 1, 2, 255]));
      expect(got).toHaveLength(0); // never delivered inside publish
      await bus.flush();
      expect(got).toHaveLength(1);
      expect(got[0].subject).toBe(`${root}.a`);
      expect([...got[0].data]).toEqual([0, 1, 2, 255]);
      expect(got[0].reply).toBeUndefined();
      expect(got[0].headers).toBeUndefined();
    });

    test('publish without a body delivers an empty body', async () => {
      const bus = await newBus();
      const got: Message[] = [];
      bus.subscribe(`${root}.a`, (m) => void got.push(m));
      bus.publish(`${root}.a`);
      await bus.flush();
      expect(got).toHaveLength(1);
      expect(got[0].data.length).toBe(0);
    });

    test('messages from one publisher arrive in order', async () => {
      const bus = await newBus();
      const got = collect(bus, `${root}.seq`);
      for (let i = 0; i < 200; i++) bus.publish(`${root}.seq`, text(String(i)));
      await bus.flush();
      expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `${root}.seq|${i}`));
    });

    test('`*` matches exactly one token', async () => {
      const bus = await newBus();
      const got = collect(bus, `${root}.*.get`);
      for (const s of ['t1.get', 't2.get', 'get', 't1.put', 't1.x.get', 't1.get.x']) bus.publish(`${root}.${s}`, text(s));
      await bus.flush();
      expect(got).toEqual([`${root}.t1.get|t1.get`, `${root}.t2.get|t2.get`]);
    });

    test('`>` matches one or more trailing tokens', async () => {
      const bus = await newBus();
      const got = collect(bus, `${root}.tables.>`);
      for (const s of ['tables', 'tables.t', 'tables.t.get', 'tables.t.a.b.c', 'other.t']) bus.publish(`${root}.${s}`, text(s));
      await bus.flush();
      expect(got).toEqual([`${root}.tables.t|tables.t`, `${root}.tables.t.get|tables.t.get`, `${root}.tables.t.a.b.c|tables.t.a.b.c`]);
    });

    test('literal subscriptions ignore other subjects', async () => {
      const bus = await newBus();
      const got = collect(bus, `${root}.a.b`);
      for (const s of ['a', 'a.b.c', 'a.c', 'A.b', 'a.b']) bus.publish(`${root}.${s}`, text(s));
      await bus.flush();
      expect(got).toEqual([`${root}.a.b|a.b`]);
    });

    test('every matching subscription gets its own copy', async () => {
      const bus = await newBus();
      const a = collect(bus, `${root}.x.y`);
      const b = collect(bus, `${root}.*.y`);
      const c = collect(bus, `${root}.>`);
      bus.publish(`${root}.x.y`, text('m'));
      await bus.flush();
      expect([a, b, c]).toEqual([[`${root}.x.y|m`], [`${root}.x.y|m`], [`${root}.x.y|m`]]);
    });

    test('queue group: each message goes to exactly one member; plain subscribers get all', async () => {
      const bus = await newBus();
      const q1 = collect(bus, `${root}.work`, 'workers');
      const q2 = collect(bus, `${root}.work`, 'workers');
      // As on NATS, the group is the queue name among all matching subscriptions.
      const q3 = collect(bus, `${root}.*`, 'workers');
      const other = collect(bus, `${root}.work`, 'auditors');
      const plain = collect(bus, `${root}.work`);
      const total = 60;
      for (let i = 0; i < total; i++) bus.publish(`${root}.work`, text(String(i)));
      await bus.flush();
      const all = Array.from({ length: total }, (_, i) => `${root}.work|${i}`);
      expect(plain).toEqual(all);
      expect(other).toEqual(all);
      expect(q1.length + q2.length + q3.length).toBe(total);
      expect([...q1, ...q2, ...q3].sort()).toEqual([...all].sort());
    });

    test('request gets the reply; the reply subject is on the request', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.echo`, (m) => {
        expect(typeof m.reply).toBe('string');
        m.respond(text(`echo:${str(m.data)}`));
      });
      const reply = await bus.request(`${root}.echo`, text('hi'));
      expect(str(reply.data)).toBe('echo:hi');
    });

    test('publishing to msg.reply answers the request like respond()', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.fwd`, (m) => {
        bus.publish(m.reply!, text('via publish'));
      });
      const reply = await bus.request(`${root}.fwd`);
      expect(str(reply.data)).toBe('via publish');
    });

    test('a reply can itself be a request: the requester sees its reply subject and answers it', async () => {
      const bus = await newBus();
      let answered!: (s: string) => void;
      const answer = new Promise<string>((resolve) => (answered = resolve));
      bus.subscribe(`${root}.ask`, async (m) => {
        // Answers the request with a question of its own, sent to the requester's inbox.
        const back = await bus.request(m.reply!, text('which one?'), { headers: { 'X-Q': '1' } });
        answered(str(back.data));
      });
      await bus.flush();
      const reply = await bus.request(`${root}.ask`, text('give me one'));
      expect(str(reply.data)).toBe('which one?');
      expect(reply.headers?.['X-Q']).toBe('1');
      expect(reply.reply).toEqual(expect.stringMatching(/^_INBOX\./));
      expect(reply.respond(text('the blue one'))).toBe(true);
      expect(await answer).toBe('the blue one');
    });

    test('many concurrent requests each get their own reply', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.double`, (m) => void m.respond(text(String(Number(str(m.data)) * 2))));
      const replies = await Promise.all(
        Array.from({ length: 300 }, (_, i) => bus.request(`${root}.double`, text(String(i)))),
      );
      expect(replies.map((r) => Number(str(r.data)))).toEqual(Array.from({ length: 300 }, (_, i) => i * 2));
    });

    test('only the first reply counts', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.twice`, (m) => {
        m.respond(text('first'));
        m.respond(text('second'));
      });
      const reply = await bus.request(`${root}.twice`);
      expect(str(reply.data)).toBe('first');
      await bus.flush();
    });

    test('a request nobody answers rejects with BusTimeoutError', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.silent`, () => undefined);
      const err = await bus.request(`${root}.silent`, undefined, { timeoutMs: 100 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusTimeoutError);
      expect((err as BusTimeoutError).code).toBe('BUS_TIMEOUT');
    });

    test('a request to a subject without subscribers rejects with BusNoRespondersError', async () => {
      const bus = await newBus();
      collect(bus, `${root}.other`);
      // A long timeout: no-responders must be reported at once, not after it.
      const err = await bus.request(`${root}.nobody`, undefined, { timeoutMs: 30_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusNoRespondersError);
      expect((err as BusNoRespondersError).code).toBe('BUS_NO_RESPONDERS');
    });

    test('headers round trip on publish, request and reply', async () => {
      const bus = await newBus();
      const seen: Array<Record<string, string> | undefined> = [];
      bus.subscribe(`${root}.h`, (m) => {
        seen.push(m.headers ? { ...m.headers } : undefined);
        if (m.reply) m.respond(text('ok'), { headers: { 'X-Reply': 'yes', 'Trace-Id': m.headers?.['Trace-Id'] ?? '' } });
      });
      bus.publish(`${root}.h`, text('p'), { headers: { 'X-One': '1', 'Content-Type': 'application/json' } });
      const reply = await bus.request(`${root}.h`, text('r'), { headers: { 'Trace-Id': 'abc-123' } });
      expect(seen).toEqual([{ 'X-One': '1', 'Content-Type': 'application/json' }, { 'Trace-Id': 'abc-123' }]);
      expect(reply.headers).toEqual({ 'X-Reply': 'yes', 'Trace-Id': 'abc-123' });
    });

    test('invalid headers and timeouts are rejected', async () => {
      const bus = await newBus();
      expect(() => bus.publish(`${root}.h`, undefined, { headers: { 'bad name': 'x' } })).toThrow(BadRequestError);
      expect(() => bus.publish(`${root}.h`, undefined, { headers: { 'X-A': 'line\nbreak' } })).toThrow(BadRequestError);
      expect(() => bus.publish(`${root}.h`, undefined, { headers: { 'a:b': 'x' } })).toThrow(BadRequestError);
      expect(() => bus.request(`${root}.h`, undefined, { timeoutMs: 0 })).toThrow(BadRequestError);
      expect(() => bus.request(`${root}.h`, undefined, { timeoutMs: Infinity })).toThrow(BadRequestError);
    });

    test('bodies are copied: changing the sent buffer after publish changes nothing received', async () => {
      const bus = await newBus();
      const got: Message[] = [];
      bus.subscribe(`${root}.copy`, (m) => void got.push(m));
      const buf = new Uint8Array([1, 2, 3]);
      bus.publish(`${root}.copy`, buf);
      buf[0] = 99;
      const node = Buffer.from([4, 5, 6]); // a Buffer, whose slice() would not copy
      bus.publish(`${root}.copy`, node);
      node[0] = 99;
      await bus.flush();
      expect(got.map((m) => [...m.data])).toEqual([
        [1, 2, 3],
        [4, 5, 6],
      ]);
    });

    test('replies are copied too', async () => {
      const bus = await newBus();
      const shared = new Uint8Array([7, 7]);
      bus.subscribe(`${root}.rc`, (m) => {
        m.respond(shared);
        shared[0] = 0;
      });
      const reply = await bus.request(`${root}.rc`);
      expect([...reply.data]).toEqual([7, 7]);
    });

    test('unsubscribe stops delivery, and a request then has no responders', async () => {
      const bus = await newBus();
      const got: string[] = [];
      const sub = bus.subscribe(`${root}.u`, (m) => {
        got.push(str(m.data));
        m.respond(text('r'));
      });
      expect(sub.subject).toBe(`${root}.u`);
      bus.publish(`${root}.u`, text('1'));
      await bus.flush();
      sub.unsubscribe();
      sub.unsubscribe(); // idempotent
      bus.publish(`${root}.u`, text('2'));
      await bus.flush();
      expect(got).toEqual(['1']);
      await expect(bus.request(`${root}.u`, undefined, { timeoutMs: 30_000 })).rejects.toBeInstanceOf(BusNoRespondersError);
    });

    test('a throwing or rejecting handler is logged and the bus keeps working', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.boom`, () => {
        throw new Error('sync boom');
      });
      bus.subscribe(`${root}.boom`, async () => {
        await Promise.resolve();
        throw new Error('async boom');
      });
      const after = collect(bus, `${root}.boom`);
      bus.publish(`${root}.boom`, text('1'));
      bus.publish(`${root}.boom`, text('2'));
      bus.subscribe(`${root}.echo`, (m) => void m.respond(m.data));
      const reply = await bus.request(`${root}.echo`, text('still alive'));
      await bus.flush();
      expect(str(reply.data)).toBe('still alive');
      expect(after).toEqual([`${root}.boom|1`, `${root}.boom|2`]);
      const messages = log.lines.filter((l) => l.level >= 50).map((l) => (l.err as { message: string }).message);
      expect(messages.sort()).toEqual(['async boom', 'async boom', 'sync boom', 'sync boom']);
    });

    test('drain lets an in-flight reply out, then closes', async () => {
      const bus = await newBus();
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let started!: () => void;
      const handlerStarted = new Promise<void>((r) => (started = r));
      bus.subscribe(`${root}.slow`, async (m) => {
        started();
        await gate;
        m.respond(text('late but delivered'));
      });
      const reply = bus.request(`${root}.slow`, undefined, { timeoutMs: 30_000 });
      await handlerStarted;
      const drained = bus.drain();
      expect(() => bus.subscribe(`${root}.new`, () => undefined)).toThrow(BusClosedError);
      await expect(bus.request(`${root}.slow`)).rejects.toBeInstanceOf(BusClosedError);
      release();
      expect(str((await reply).data)).toBe('late but delivered');
      await drained;
      expect(() => bus.publish(`${root}.x`)).toThrow(BusClosedError);
    });

    test('drain gives up on a handler that never finishes, after the drain timeout', async () => {
      const bus = await newBus(100);
      bus.subscribe(`${root}.stuck`, () => new Promise<void>(() => undefined));
      const pending = bus.request(`${root}.stuck`, undefined, { timeoutMs: 30_000 });
      await bus.flush();
      await bus.drain();
      await expect(pending).rejects.toBeInstanceOf(BusClosedError);
      expect(log.lines.map((l) => l.msg)).toContain('drain timed out; closing anyway');
      expect(() => bus.publish(`${root}.x`)).toThrow(BusClosedError);
    });

    test('close rejects pending requests with BusClosedError and later calls fail', async () => {
      const bus = await newBus();
      bus.subscribe(`${root}.never`, () => undefined);
      const pending = bus.request(`${root}.never`, undefined, { timeoutMs: 30_000 });
      await bus.flush();
      await bus.close();
      await bus.close(); // idempotent
      await expect(pending).rejects.toBeInstanceOf(BusClosedError);
      expect(() => bus.publish(`${root}.x`)).toThrow(BusClosedError);
      expect(() => bus.subscribe(`${root}.x`, () => undefined)).toThrow(BusClosedError);
      await expect(bus.request(`${root}.never`)).rejects.toBeInstanceOf(BusClosedError);
      await expect(bus.flush()).rejects.toBeInstanceOf(BusClosedError);
      await bus.drain(); // a no-op once closed
    });

    test('respond after close returns false instead of throwing', async () => {
      const bus = await newBus();
      let held: Message | undefined;
      bus.subscribe(`${root}.hold`, (m) => void (held = m));
      const pending = bus.request(`${root}.hold`, undefined, { timeoutMs: 30_000 }).catch(() => 'rejected');
      await bus.flush();
      await bus.close();
      expect(held).toBeDefined();
      expect(held!.respond(text('too late'))).toBe(false);
      expect(await pending).toBe('rejected');
    });

    test('invalid subjects are rejected synchronously with a BAD_REQUEST error', async () => {
      const bus = await newBus();
      const badPublish = ['', 'a..b', '.a', 'a.', 'a b', 'a\tb', 'a.*', 'a.>', '*', '>', 'a.b*', 'a.>b'];
      for (const s of badPublish) {
        expect(() => bus.publish(s)).toThrow(InvalidSubjectError);
        expect(() => bus.request(s)).toThrow(InvalidSubjectError);
      }
      const badSubscribe = ['', 'a..b', 'a.>.b', '>.a', 'a b', 'a.b*', 'a.*b', '.>'];
      for (const s of badSubscribe) expect(() => bus.subscribe(s, () => undefined)).toThrow(InvalidSubjectError);
      expect(() => bus.subscribe(`${root}.q`, () => undefined, { queue: 'bad queue' })).toThrow(InvalidSubjectError);
      try {
        bus.publish('a..b');
      } catch (err) {
        expect((err as InvalidSubjectError).code).toBe('BAD_REQUEST');
      }
      // Valid edge cases still work.
      const got = collect(bus, `${root}.$SRV.-_x`);
      bus.publish(`${root}.$SRV.-_x`, text('ok'));
      await bus.flush();
      expect(got).toEqual([`${root}.$SRV.-_x|ok`]);
    });

    test('subjects over MAX_SUBJECT_BYTES and queue names over MAX_QUEUE_BYTES (UTF-8) are rejected; both at the limit work', async () => {
      const bus = await newBus();
      // Padded with a filler token to an exact UTF-8 length.
      const ofBytes = (bytes: number, fill = 'x'): string => {
        const head = `${root}.`;
        const unit = Buffer.byteLength(fill);
        return head + fill.repeat(Math.floor((bytes - head.length) / unit)) + 'y'.repeat((bytes - head.length) % unit);
      };
      const atLimit = ofBytes(MAX_SUBJECT_BYTES);
      expect(Buffer.byteLength(atLimit)).toBe(MAX_SUBJECT_BYTES);
      const over = [ofBytes(MAX_SUBJECT_BYTES + 1), ofBytes(MAX_SUBJECT_BYTES + 2, 'é'), ofBytes(5000)];
      // 'é' is 2 bytes: fewer UTF-16 units than the limit, more bytes.
      expect(over[1].length).toBeLessThan(MAX_SUBJECT_BYTES);
      for (const s of over) {
        expect(Buffer.byteLength(s)).toBeGreaterThan(MAX_SUBJECT_BYTES);
        expect(() => bus.publish(s)).toThrow(InvalidSubjectError);
        expect(() => bus.request(s)).toThrow(InvalidSubjectError);
        expect(() => bus.subscribe(s, () => undefined)).toThrow(InvalidSubjectError);
      }
      const longQueue = 'q'.repeat(MAX_QUEUE_BYTES + 1);
      expect(() => bus.subscribe(`${root}.q`, () => undefined, { queue: longQueue })).toThrow(InvalidSubjectError);
      expect(() => bus.subscribe(`${root}.q`, () => undefined, { queue: 'é'.repeat(MAX_QUEUE_BYTES / 2 + 1) })).toThrow(InvalidSubjectError);
      try {
        bus.publish(over[0]);
      } catch (err) {
        expect((err as InvalidSubjectError).code).toBe('BAD_REQUEST');
        expect((err as Error).message).toMatch(/longer than the limit/);
      }
      // At the limit: delivered, and the connection is still usable.
      const got: string[] = [];
      bus.subscribe(atLimit, (m) => void got.push(str(m.data)), { queue: 'q'.repeat(MAX_QUEUE_BYTES) });
      bus.publish(atLimit, text('ok'));
      await bus.flush();
      expect(got).toEqual(['ok']);
      bus.subscribe(`${root}.after`, (m) => void m.respond(text('alive')));
      await bus.flush();
      expect(str((await bus.request(`${root}.after`)).data)).toBe('alive');
    });
  });
}
