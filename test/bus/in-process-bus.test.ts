import { InProcessBus } from '../../bus/in-process-bus';
import { BusTimeoutError } from '../../bus/errors';
import { defineBusContract } from './contract';

defineBusContract('in-process bus', async (opts) => new InProcessBus(opts));

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('in-process bus', () => {
  test('in-process bus - a queue group shares messages on distinct subjects evenly, across (un)subscribes', async () => {
    const bus = new InProcessBus();
    const counts = [0, 0];
    for (const i of [0, 1]) bus.subscribe('fair.>', () => void counts[i]++, { queue: 'w' });
    for (let i = 0; i < 1000; i++) {
      // Every tenth message, some unrelated subscription comes and goes.
      if (i % 10 === 0) bus.subscribe('other', () => undefined).unsubscribe();
      bus.publish(`fair.${i}`);
    }
    await bus.flush();
    expect(counts[0] + counts[1]).toBe(1000);
    for (const c of counts) {
      expect(c).toBeGreaterThanOrEqual(400);
      expect(c).toBeLessThanOrEqual(600);
    }
    // One subject, the cache cleared before every message: still in turn.
    counts.fill(0);
    for (let i = 0; i < 100; i++) {
      bus.subscribe('other', () => undefined).unsubscribe();
      bus.publish('fair.same');
    }
    await bus.flush();
    expect(counts).toEqual([50, 50]);
    await bus.close();
  });

  test('in-process bus - fan-out gives every subscriber its own buffer', async () => {
    const bus = new InProcessBus();
    const seen: number[][] = [];
    bus.subscribe('fan.x', (m) => {
      seen.push([...m.data]);
      m.data[0] = 42; // a handler scribbling on its copy
    });
    bus.subscribe('fan.*', (m) => void seen.push([...m.data]));
    bus.publish('fan.x', new Uint8Array([1, 2]));
    await bus.flush();
    expect(seen).toEqual([
      [1, 2],
      [1, 2],
    ]);
    await bus.close();
  });

  test('in-process bus - a request loop made only of microtasks still lets timers run', async () => {
    const bus = new InProcessBus();
    bus.subscribe('spin', (m) => void m.respond(m.data));
    let timerRan = false;
    setTimeout(() => (timerRan = true), 0);
    let requests = 0;
    // Without yielding, this loop would never let the timer fire.
    while (!timerRan && requests < 200_000) {
      await bus.request('spin', text('x'));
      requests++;
    }
    expect(timerRan).toBe(true);
    await bus.close();
  });

  test('in-process bus - a wildcard subscriber sees replies on the inbox subject', async () => {
    const bus = new InProcessBus();
    const inbox: string[] = [];
    bus.subscribe('_INBOX.>', (m) => void inbox.push(`${m.subject}|${new TextDecoder().decode(m.data)}`));
    let replySubject = '';
    bus.subscribe('svc', (m) => {
      replySubject = m.reply!;
      m.respond(text('pong'));
    });
    const reply = await bus.request('svc', text('ping'));
    await bus.flush();
    expect(reply.subject).toBe(replySubject);
    expect(inbox).toEqual([`${replySubject}|pong`]);
    await bus.close();
  });

  test('in-process bus - requests with different timeouts expire independently', async () => {
    const bus = new InProcessBus();
    bus.subscribe('silent', () => undefined);
    const results = await Promise.allSettled([
      bus.request('silent', undefined, { timeoutMs: 60 }),
      bus.request('silent', undefined, { timeoutMs: 20 }),
      bus.request('silent', undefined, { timeoutMs: 60 }),
    ]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(BusTimeoutError);
    }
    await bus.close();
  });

  test('in-process bus - queue group members take turns', async () => {
    const bus = new InProcessBus();
    const counts = [0, 0, 0];
    for (let i = 0; i < 3; i++) bus.subscribe('rr', () => void counts[i]++, { queue: 'g' });
    for (let i = 0; i < 30; i++) bus.publish('rr');
    await bus.flush();
    expect(counts).toEqual([10, 10, 10]);
    await bus.close();
  });
});
