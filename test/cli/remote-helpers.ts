/** Shared pieces of the operator CLI tests: captured output, a port nobody listens on, a small configuration. */
import { createServer } from 'node:net';
import * as path from 'node:path';
import { runRemote, type CommandIo } from '../../cli/remote';
import type { RemoteCommand } from '../../cli/remote-args';
import { loadConfig, type Config } from '../../supervisor/config';

/** What a command wrote, and its exit code. */
export interface CommandRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in-process with captured streams. `log`, when given, also
 * receives every write as `out:<text>` / `err:<text>`, in order with whatever
 * else the test records there.
 */
export async function runCli(
  command: RemoteCommand,
  argv: string[],
  env: NodeJS.ProcessEnv,
  log?: string[],
): Promise<CommandRun> {
  let stdout = '';
  let stderr = '';
  const io: CommandIo = {
    argv,
    env,
    stdout: {
      write: (text: string) => {
        stdout += text;
        log?.push(`out:${text}`);
      },
    },
    stderr: {
      write: (text: string) => {
        stderr += text;
        log?.push(`err:${text}`);
      },
    },
  };
  const code = await runRemote(command, io);
  return { code, stdout, stderr };
}

/** A TCP port on 127.0.0.1 that was free a moment ago and has no listener now. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/**
 * The configuration of a small service in `dir`: two tables, `orders` and
 * `events`, and an HTTP port of its own (port 0) so that tests never meet on 8080.
 */
export function smallConfig(dir: string, env: Record<string, string> = {}, extra: Partial<Config> = {}): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: path.join(dir, 'data'), TABLEKEEPER_HTTP_PORT: '0', ...env } });
  return {
    ...base,
    tables: [
      { name: 'orders', sync: 'always', maxValueBytes: 4096 },
      { name: 'events', sync: 'always', maxValueBytes: 4096 },
    ],
    ...extra,
  };
}
