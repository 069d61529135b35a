import type { FastifyInstance } from 'fastify';
import { mkdirSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { createActor, toPromise, waitFor } from 'xstate';
import { createBus, MicroService, type Bus } from '../bus';
import { createHttpServer, listenHttp, type ServiceLifecycle } from '../http';
import type { StoreFs } from '../store';
import { loadConfig, type Config } from '../supervisor/config';
import { allTablesSettled, supervisorMachine } from '../supervisor/supervisor';
import { VERSION } from './version';

/** A running service, as returned by `startService`. */
export interface RunningService {
  config: Config;
  bus: Bus;
  /** The HTTP server (admin and data API, events, metrics, dashboard), listening on `httpUrl`. */
  http: FastifyInstance;
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:8080`. */
  httpUrl: string;
  /** Stops the HTTP server, stops accepting requests, closes every table (flush + fsync), drains the bus. */
  stop(): Promise<void>;
}

/** What `startService` may be given besides the configuration. */
export interface StartOptions {
  /** The table files' file access (default the real disk); fault-injection tests pass their own. */
  fs?: StoreFs;
}

/**
 * Starts Tablekeeper: the bus (NATS when configured, otherwise in-process),
 * the HTTP server, the micro-service responder, and the supervisor with one
 * owner per table. HTTP listens first, so that a port already in use stops
 * the start before any table is opened, and `/readyz` can say "starting".
 */
export async function startService(config: Config, logger: Logger, opts: StartOptions = {}): Promise<RunningService> {
  mkdirSync(config.dataDir, { recursive: true });
  const bus = await createBus({
    natsUrl: config.nats.url,
    user: config.nats.user,
    pass: config.nats.pass,
    token: config.nats.token,
    credsFile: config.nats.credsFile,
    nkeyFile: config.nats.nkeyFile,
    name: 'tablekeeper',
    logger: logger.child({ component: 'bus' }),
  });
  let lifecycle: ServiceLifecycle = 'starting';
  let http: FastifyInstance | undefined;
  let httpUrl: string;
  try {
    http = createHttpServer({ config, bus, logger, lifecycle: () => lifecycle });
    httpUrl = await listenHttp(http, config.http);
  } catch (err) {
    await http?.close().catch(() => undefined);
    await bus.close();
    throw err;
  }
  const httpServer = http;
  const service = new MicroService(bus, {
    name: 'tablekeeper',
    version: VERSION,
    description: 'Self-maintaining key/value tables',
    logger: logger.child({ component: 'micro' }),
  });
  const supervisor = createActor(supervisorMachine, {
    input: { config, bus, logger: logger.child({ component: 'supervisor' }), service, fs: opts.fs },
  });
  supervisor.start();
  // Report started only once every table has left `opening`, so the first
  // request after the log line finds its table serving (or known broken).
  await waitFor(supervisor, allTablesSettled, { timeout: Infinity });
  lifecycle = 'running';
  logger.info(
    { op: 'serve', tables: config.tables.length, bus: config.nats.url ? 'nats' : 'in-process', dataDir: config.dataDir, http: httpUrl },
    'tablekeeper started',
  );

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // HTTP first: it ends event streams and finishes in-flight calls while the bus still answers them.
      lifecycle = 'stopping';
      await httpServer.close();
      const done = toPromise(supervisor);
      supervisor.send({ type: 'STOP' });
      await done;
      service.stop();
      await bus.drain();
      logger.info({ op: 'stop' }, 'tablekeeper stopped');
    })());
  return { config, bus, http: httpServer, httpUrl, stop };
}

/** `tablekeeper serve`: runs until SIGTERM or SIGINT, then shuts down cleanly and exits 0. */
export async function serveCommand(env: NodeJS.ProcessEnv): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ env });
  } catch (err) {
    process.stderr.write(`tablekeeper: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = pino({ name: 'tablekeeper', level: config.logLevel });
  let running: RunningService;
  try {
    running = await startService(config, logger);
  } catch (err) {
    logger.fatal({ err, op: 'serve' }, 'tablekeeper failed to start');
    return 1;
  }
  return new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal, op: 'stop' }, 'signal received; shutting down');
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      running.stop().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err, op: 'stop' }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
