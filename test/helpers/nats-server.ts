/**
 * Starts a real nats-server on 127.0.0.1 with a random port and a private
 * temporary store directory, for tests and benchmarks. No jest APIs here.
 *
 * The binary comes from `NATS_SERVER_BIN`, else `nats-server` on PATH. The
 * port is read from the server's own log line "Listening for client
 * connections on 127.0.0.1:<port>", so there is no race over a free port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** Options for `startNatsServer`. */
export interface NatsServerOptions {
  /** Enable JetStream (stored in the temporary directory). */
  jetstream?: boolean;
  /** Extra configuration file text (nats-server config syntax), e.g. an `authorization {}` block. */
  config?: string;
  /**
   * A configuration file to use as it is (instead of `config`). Its listen
   * address is still overridden (127.0.0.1, a random port), but not its
   * JetStream store directory: nats-server refuses `-sd` beside a
   * `store_dir` in the file, so a test points the file's `store_dir` at a
   * temporary directory of its own.
   */
  configFile?: string;
  /** Extra command-line flags, e.g. `['-m', '-1']` for a monitoring port of its own. */
  args?: string[];
  /** Extra environment for the server, e.g. the passwords a config file names as `$VARIABLES`. */
  env?: Record<string, string>;
  /** How long to wait for the server to listen; default 10 s. */
  startTimeoutMs?: number;
}

/** A running server. `stop()` kills it by pid and removes its directory. */
export interface NatsServer {
  url: string;
  port: number;
  pid: number;
  /** The server's temporary directory (store, config). */
  dir: string;
  /** Everything the server has logged so far. */
  log(): string;
  stop(): Promise<void>;
}

/** Finds the nats-server binary: `NATS_SERVER_BIN`, else the first `nats-server` on PATH. */
export function findNatsServerBinary(): string {
  const fromEnv = process.env.NATS_SERVER_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`NATS_SERVER_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir.length === 0) continue;
    const candidate = join(dir, 'nats-server');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('nats-server not found: install it or set NATS_SERVER_BIN');
}

const LISTENING = /Listening for client connections on [^\s]*:(\d+)/;

/** Starts nats-server and resolves once it accepts clients. */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const bin = findNatsServerBinary();
  const dir = mkdtempSync(join(tmpdir(), 'tk-nats-'));
  const args = ['-a', '127.0.0.1', '-p', '-1'];
  if (opts.configFile === undefined) args.push('-sd', join(dir, 'store'));
  if (opts.jetstream) args.push('-js');
  if (opts.config !== undefined) {
    const configFile = join(dir, 'server.conf');
    writeFileSync(configFile, opts.config);
    args.push('-c', configFile);
  } else if (opts.configFile !== undefined) {
    args.push('-c', opts.configFile);
  }
  if (opts.args !== undefined) args.push(...opts.args);

  let child: ChildProcess;
  try {
    child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let output = '';
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });

  const stop = async (): Promise<void> => {
    if (!exited && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const killTimer = setTimeout(() => {
        if (!exited && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, 5000);
      await exitPromise;
      clearTimeout(killTimer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server did not start within ${opts.startTimeoutMs ?? 10000} ms:\n${output}`)),
        opts.startTimeoutMs ?? 10000,
      );
      const onData = (chunk: Buffer): void => {
        output += chunk.toString('utf8');
        const m = LISTENING.exec(output);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      };
      // The server logs to stderr; keep reading both so the pipes never fill.
      child.stderr?.on('data', onData);
      child.stdout?.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited (${code ?? signal}) before listening:\n${output}`));
      });
    });
    if (child.pid === undefined) throw new Error('nats-server has no pid');
    return {
      url: `nats://127.0.0.1:${port}`,
      port,
      pid: child.pid,
      dir,
      log: () => output,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
