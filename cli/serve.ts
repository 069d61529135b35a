import type { FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { createActor, toPromise, waitFor } from 'xstate';
import { Notifier, notifierMachine, PushSubscriptions } from '../actors';
import { createBus, MicroService, Subjects, VERSION, type Bus } from '../bus';
import { createHttpServer, listenHttp, resolveVapidKeys, type ServiceLifecycle } from '../http';
import { closeIdleSourceWorkers, ConfigInvalidError, isErrno, type StoreFs } from '../store';
import { acquireDataDirLock, allTablesSettled, loadConfig, supervisorMachine, systemClock, type Config, type DataDirLock } from '../supervisor';

/** How long stopping waits for queued notifications to be delivered. */
const NOTIFY_FLUSH_MS = 5000;

/** A running service, as returned by `startService`. */
export interface RunningService {
  config: Config;
  bus: Bus;
  /** The HTTP server (admin and data API, events, metrics, dashboard), listening on `httpUrl`. */
  http: FastifyInstance;
  /** Where the HTTP server listens, e.g. `http://127.0.0.1:8080`. */
  httpUrl: string;
  /** Stops the HTTP server, stops accepting requests, closes every table (flush + fsync), drains the bus, releases the data directory. */
  stop(): Promise<void>;
  /**
   * Resolves (with the reason) if the data directory's lock stops being this
   * service's while it runs (removed, or taken over by a service that found
   * it stale): the caller must stop at once. Never rejects.
   */
  lockLost: Promise<string>;
}

/** What `startService` may be given besides the configuration. */
export interface StartOptions {
  /** The table files' file access (default the real disk); fault-injection tests pass their own. */
  fs?: StoreFs;
  /** Aborting it (a stop requested during a long start) stops waiting for the tables to settle. */
  abort?: AbortSignal;
}

/** Creates `dir` if need be; ConfigInvalidError naming `setting` when it is not a directory or cannot be made. */
function ensureDirectory(dir: string, setting: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    const reason = isErrno(err, 'EEXIST') || isErrno(err, 'ENOTDIR') ? 'is not a directory' : `cannot be created (${(err as Error).message})`;
    throw new ConfigInvalidError(`${setting}: '${dir}' ${reason}`, { cause: err });
  }
}

/**
 * Starts Tablekeeper: the bus (NATS when configured, otherwise in-process),
 * the HTTP server, the micro-service responder, and the supervisor with one
 * owner per table. HTTP listens first, so that a port already in use stops
 * the start before any table is opened, and `/readyz` can say "starting".
 * Before all of that it locks the data directory (see data-dir-lock.ts): a
 * second service on the same directory fails to start with
 * DataDirLockedError. The lock is released once the tables are closed.
 */
export async function startService(config: Config, logger: Logger, opts: StartOptions = {}): Promise<RunningService> {
  ensureDirectory(config.dataDir, 'dataDir');
  // Now rather than at the first backup, hours later.
  ensureDirectory(config.backupDir, 'backupDir');
  let lockLost!: (reason: string) => void;
  const lost = new Promise<string>((resolve) => (lockLost = resolve));
  const lock = await acquireDataDirLock(config.dataDir, {
    logger: logger.child({ component: 'lock' }),
    staleMs: config.lockStaleMs,
    abort: opts.abort,
    onLost: (reason) => lockLost(reason),
  });
  try {
    return await startLocked(config, logger, opts, lock, lost);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function startLocked(config: Config, logger: Logger, opts: StartOptions, lock: DataDirLock, lockLost: Promise<string>): Promise<RunningService> {
  // Before the bus: a broken key or subscriptions file stops the start with a config error.
  const notifyLog = logger.child({ component: 'notifier' });
  const webPush = config.notify.webPush.enabled
    ? {
        keys: resolveVapidKeys({ dataDir: config.dataDir, webPush: config.notify.webPush, logger: notifyLog }),
        subject: config.notify.webPush.subject,
        subscriptions: await PushSubscriptions.open(config.dataDir),
      }
    : undefined;
  const subjects = new Subjects(config.subjectPrefix);
  const notifier = new Notifier({ config: config.notify, subjects, logger: notifyLog, clock: systemClock, webPush });
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
  // Known before the HTTP server, whose /metrics asks this instance's own $SRV.STATS, not another's on the same NATS.
  const serviceId = randomBytes(11).toString('hex');
  let http: FastifyInstance | undefined;
  let httpUrl: string;
  try {
    http = createHttpServer({
      config,
      bus,
      logger,
      lifecycle: () => lifecycle,
      push: webPush && { publicKey: webPush.keys.publicKey, subscriptions: webPush.subscriptions },
      notifier,
      serviceId,
    });
    httpUrl = await listenHttp(http, config.http);
  } catch (err) {
    await http?.close().catch(() => undefined);
    await bus.close();
    throw err;
  }
  const httpServer = http;
  // Subscribed before the supervisor starts, so a recovery at start is notified too.
  const notifierActor = createActor(notifierMachine, { input: { notifier, bus, subjects, flushMs: NOTIFY_FLUSH_MS } });
  notifierActor.start();
  const service = new MicroService(bus, {
    name: 'tablekeeper',
    id: serviceId,
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
  // An abort (a signal during a long open or recovery) stops waiting: the
  // caller then stops the service, which closes whatever has opened.
  await Promise.race([waitFor(supervisor, allTablesSettled, { timeout: Infinity }), aborted(opts.abort)]);
  if (opts.abort?.aborted === true) {
    logger.info({ op: 'serve' }, 'start interrupted by a stop request');
  } else {
    lifecycle = 'running';
    logger.info(
      { op: 'serve', tables: config.tables.length, bus: config.nats.url ? 'nats' : 'in-process', dataDir: config.dataDir, http: httpUrl },
      'tablekeeper started',
    );
  }

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // HTTP first: it ends event streams and finishes in-flight calls while the bus still answers them.
      lifecycle = 'stopping';
      await httpServer.close();
      const done = toPromise(supervisor);
      supervisor.send({ type: 'STOP' });
      await done;
      // Maintenance is over with the supervisor: the threads kept for the next one go now.
      await closeIdleSourceWorkers();
      // After the supervisor, so its last events are queued; bounded, so a hung receiver cannot hold the stop.
      await bus.flush().catch(() => undefined);
      const notified = toPromise(notifierActor);
      notifierActor.send({ type: 'STOP' });
      await notified;
      service.stop();
      await bus.drain();
      lock.release();
      logger.info({ op: 'stop' }, 'tablekeeper stopped');
    })());
  return { config, bus, http: httpServer, httpUrl, stop, lockLost };
}

/** Resolves when `signal` aborts; never when there is none. */
function aborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal === undefined) return;
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * `tablekeeper serve`: runs until SIGTERM or SIGINT, then shuts down cleanly
 * and exits 0. The signal handlers are in place before the first table opens,
 * so a signal during a long start (a large table, a recovery) also ends in a
 * clean stop and exit 0, never in a kill halfway through a write. They stay
 * in place until the shutdown is over: a signal during it is logged and
 * ignored. Repeats are common: Ctrl-C under `npm start` reaches the
 * service twice, from the terminal and forwarded by npm, and the default
 * action of the second would end the process in the middle of its flush.
 */
export async function serveCommand(env: NodeJS.ProcessEnv): Promise<number> {
  let config: Config;
  try {
    config = loadConfig({ env });
  } catch (err) {
    process.stderr.write(`tablekeeper: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = pino({ name: 'tablekeeper', level: config.logLevel });
  const stopRequested = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopRequested.signal.aborted) {
      logger.warn({ signal, op: 'stop' }, 'signal received while shutting down: ignored (the shutdown goes on; SIGKILL ends it at once)');
      return;
    }
    logger.info({ signal, op: 'stop' }, 'signal received; shutting down');
    stopRequested.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    let running: RunningService;
    try {
      running = await startService(config, logger, { abort: stopRequested.signal });
    } catch (err) {
      if (stopRequested.signal.aborted && err === stopRequested.signal.reason) {
        // Stopped while waiting for the data directory's lock: nothing had started.
        logger.info({ op: 'serve' }, 'start interrupted by a stop request');
        return 0;
      }
      logger.fatal({ err, op: 'serve' }, 'tablekeeper failed to start');
      // A configuration that cannot work exits like one that does not load.
      return err instanceof ConfigInvalidError ? 2 : 1;
    }
    const lost = await Promise.race([aborted(stopRequested.signal).then(() => undefined), running.lockLost]);
    if (lost !== undefined) logger.fatal({ op: 'stop', reason: lost }, 'stopping: another service may be using the data directory');
    try {
      await running.stop();
      return lost === undefined ? 0 : 1;
    } catch (err) {
      logger.error({ err, op: 'stop' }, 'shutdown failed');
      return 1;
    }
  } finally {
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
  }
}
