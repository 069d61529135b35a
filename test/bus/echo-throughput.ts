/**
 * Echo throughput of a bus: N concurrent requesters, each awaiting one
 * request at a time against a subscriber that echoes the body. Not a jest
 * test (no `.test.ts`): compile and run it by hand, e.g.
 *
 *   npx tsc -p . --outDir /tmp/tk-build
 *   node /tmp/tk-build/test/bus/echo-throughput.js            # in-process
 *   node /tmp/tk-build/test/bus/echo-throughput.js --nats     # real nats-server
 *   ... --micro                                               # echo as a MicroService endpoint
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Bus } from '../../bus/bus';
import { InProcessBus } from '../../bus/in-process-bus';
import { NatsBus } from '../../bus/nats-bus';
import { encodeJson } from '../../bus/codec';
import { MicroService } from '../../bus/micro';
import { startNatsServer } from '../helpers/nats-server';

/**
 * Requests per second of an echo through `bus` with `concurrency` requests in
 * flight; with `micro`, the echo is a `MicroService` endpoint (stats on).
 */
export async function measureEcho(bus: Bus, concurrency: number, durationMs: number, micro = false): Promise<number> {
  const subject = 'bench.tables.t.get';
  const svc = micro ? new MicroService(bus, { version: '0.0.0' }) : undefined;
  const echo = (msg: { data: Uint8Array; respond(d: Uint8Array): boolean }): void => {
    msg.respond(msg.data);
  };
  svc?.addEndpoint({ name: 't', subject, handler: echo });
  const sub = svc ? undefined : bus.subscribe(subject, echo);
  const body = encodeJson({ key: 'user:00000042' });
  let done = 0;
  let stop = false;
  const worker = async (): Promise<void> => {
    while (!stop) {
      await bus.request(subject, body, { timeoutMs: 5000 });
      done++;
    }
  };
  // Warm up, then measure.
  const warm = Array.from({ length: concurrency }, worker);
  await sleep(300);
  stop = true;
  await Promise.all(warm);
  stop = false;
  done = 0;
  const started = process.hrtime.bigint();
  const workers = Array.from({ length: concurrency }, worker);
  await sleep(durationMs);
  stop = true;
  await Promise.all(workers);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  svc?.stop();
  sub?.unsubscribe();
  return done / seconds;
}

async function main(): Promise<void> {
  const nats = process.argv.includes('--nats');
  const micro = process.argv.includes('--micro');
  const how = micro ? ' via a micro endpoint' : '';
  const concurrency = 64;
  const durationMs = 3000;
  if (!nats) {
    const bus = new InProcessBus();
    for (let run = 0; run < 3; run++) {
      const rate = await measureEcho(bus, concurrency, durationMs, micro);
      process.stdout.write(`in-process echo${how}, ${concurrency} in flight: ${Math.round(rate)} req/s\n`);
    }
    await bus.close();
    return;
  }
  const server = await startNatsServer();
  try {
    const bus = await NatsBus.connect({ servers: server.url, name: 'echo-throughput' });
    for (let run = 0; run < 3; run++) {
      const rate = await measureEcho(bus, concurrency, durationMs, micro);
      process.stdout.write(`nats echo${how} (one client), ${concurrency} in flight: ${Math.round(rate)} req/s\n`);
    }
    await bus.close();
  } finally {
    await server.stop();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exitCode = 1;
  });
}
