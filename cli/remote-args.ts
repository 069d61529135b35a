/**
 * The command line of the operator commands: options, the optional or
 * required table, and where the service is (HTTP or NATS). Pure: everything
 * comes from `argv` and `env`, so tests need no real environment.
 */
import { loadConfig, parseDuration, TABLE_NAME_PATTERN } from '../supervisor';

/** The longest --timeout: 24 days, under the 2^31-1 ms a timer can wait. */
const MAX_TIMEOUT_MS = 24 * 24 * 3600 * 1000;
import { UsageError } from './exit-codes';

/** The operator commands that talk to a running service. */
export const REMOTE_COMMANDS = ['status', 'compact', 'backup', 'restore'] as const;
/** One of `REMOTE_COMMANDS`. */
export type RemoteCommand = (typeof REMOTE_COMMANDS)[number];

/** Where the service is and how to authenticate. */
export type Target =
  | { kind: 'http'; url: string; token?: string }
  | { kind: 'nats'; url: string };

/** A parsed command line. */
export interface RemoteArgs {
  command: RemoteCommand;
  /** The table named on the command line; absent means every table (compact, backup). */
  table?: string;
  force: boolean;
  json: boolean;
  help: boolean;
  target: Target;
  /** Per-request timeout given with `--timeout`; each command has its own default otherwise. */
  timeoutMs?: number;
}

/** Where the HTTP API is when neither `--url` nor `TABLEKEEPER_URL` says. */
export const DEFAULT_URL = 'http://127.0.0.1:8080';

const TABLE_NAME = new RegExp(TABLE_NAME_PATTERN);
const VALUE_OPTIONS = new Set(['--url', '--token', '--nats', '--timeout']);
const FLAG_OPTIONS = new Set(['--json', '--force', '--help', '-h']);

/** Usage text of one command (or of them all). */
export function remoteUsage(command?: RemoteCommand): string {
  const lines: Record<RemoteCommand, string> = {
    status: 'tablekeeper status                    health of every table',
    compact: 'tablekeeper compact [table] [--force]  compact one table or all (threshold applies unless --force)',
    backup: 'tablekeeper backup [table]            back up one table or all',
    restore: 'tablekeeper restore <table>           roll a table back to its latest verified backup',
  };
  const shown = command === undefined ? REMOTE_COMMANDS.map((c) => lines[c]) : [lines[command]];
  return `usage:
  ${shown.join('\n  ')}

options:
  --url <url>         HTTP API of the service (env TABLEKEEPER_URL; default: the service's
                      configured address, TABLEKEEPER_HTTP_HOST/_PORT or TABLEKEEPER_CONFIG's,
                      else ${DEFAULT_URL})
  --token <token>     admin token (env TABLEKEEPER_ADMIN_TOKEN; else <dataDir>/.tablekeeper/admin-token)
  --nats <url>        talk over NATS instead (env NATS_URL; credentials from NATS_USER/NATS_PASS,
                      NATS_TOKEN, NATS_CREDS or NATS_NKEY)
  --timeout <time>    per-request timeout, e.g. 30s or 10m
  --json              print one JSON document on stdout (progress goes to stderr)

exit codes: 0 ok, 1 a table failed or the service refused, 2 usage, 3 unreachable or timed out, 4 auth refused
`;
}

/** Parses the arguments after the command name. Throws `UsageError`. */
export function parseRemoteArgs(command: RemoteCommand, argv: readonly string[], env: NodeJS.ProcessEnv): RemoteArgs {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (VALUE_OPTIONS.has(name)) {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined || value === '') throw new UsageError(`${name} needs a value`);
      values.set(name, value);
    } else if (FLAG_OPTIONS.has(name) && eq < 0) {
      flags.add(name === '-h' ? '--help' : name);
    } else {
      throw new UsageError(`unknown option '${arg}'`);
    }
  }

  const help = flags.has('--help');
  if (flags.has('--force') && command !== 'compact') throw new UsageError('--force applies only to compact');
  const table = tableArgument(command, positional, help);
  const timeout = values.get('--timeout');
  let timeoutMs: number | undefined;
  if (timeout !== undefined) {
    try {
      timeoutMs = parseDuration(/^[0-9]+$/.test(timeout) ? `${timeout}s` : timeout);
    } catch {
      throw new UsageError(`--timeout: '${timeout}' is not a duration (use e.g. 30s, 5m)`);
    }
    // The longest a timer can wait (2^31-1 ms): a longer one would fire at once.
    if (timeoutMs > MAX_TIMEOUT_MS) throw new UsageError(`--timeout: '${timeout}' is longer than the maximum, 24d`);
  }
  return {
    command,
    table,
    force: flags.has('--force'),
    json: flags.has('--json'),
    help,
    target: targetFrom(values, env),
    timeoutMs,
  };
}

function tableArgument(command: RemoteCommand, positional: string[], help: boolean): string | undefined {
  const max = command === 'status' ? 0 : 1;
  if (positional.length > max) {
    throw new UsageError(`unexpected argument '${positional[max]}'`);
  }
  const table = positional[0];
  if (command === 'restore' && table === undefined && !help) throw new UsageError('restore needs a table');
  if (table !== undefined && !TABLE_NAME.test(table)) {
    throw new UsageError(`'${table}' is not a table name (1 to 64 of A-Z a-z 0-9 _ -)`);
  }
  return table;
}

/**
 * Options beat the environment; `--url` and `--nats` exclude each other.
 * Without either, `TABLEKEEPER_URL` picks HTTP, else `NATS_URL` picks NATS,
 * else the default HTTP address.
 */
function targetFrom(values: Map<string, string>, env: NodeJS.ProcessEnv): Target {
  const url = values.get('--url');
  const nats = values.get('--nats');
  const token = values.get('--token') ?? (env.TABLEKEEPER_ADMIN_TOKEN || undefined);
  if (url !== undefined && nats !== undefined) throw new UsageError('give either --url or --nats, not both');
  if (nats !== undefined) return natsTarget(nats, values.has('--token'));
  if (url !== undefined) return httpTarget(url, token);
  if (env.TABLEKEEPER_URL) return httpTarget(env.TABLEKEEPER_URL, token);
  if (env.NATS_URL) return natsTarget(env.NATS_URL, values.has('--token'));
  return httpTarget(configuredUrl(env), token);
}

/**
 * The HTTP address the service's own configuration gives (the same
 * environment and config file: `TABLEKEEPER_HTTP_HOST` / `_PORT`, `http` in
 * the file), for an operator on the service's host; an address that listens
 * on every interface is reached on loopback. DEFAULT_URL when the
 * configuration does not load (the service would not start with it either).
 */
function configuredUrl(env: NodeJS.ProcessEnv): string {
  let host: string;
  let port: number;
  try {
    ({ host, port } = loadConfig({ env }).http);
  } catch {
    return DEFAULT_URL;
  }
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function httpTarget(url: string, token: string | undefined): Target {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`'${url}' is not a URL (e.g. ${DEFAULT_URL})`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`'${url}' is not an http:// or https:// URL`);
  }
  return { kind: 'http', url: parsed.toString().replace(/\/+$/, ''), token };
}

function natsTarget(url: string, tokenGiven: boolean): Target {
  if (tokenGiven) throw new UsageError('--token is for HTTP; over NATS use NATS_USER/NATS_PASS, NATS_TOKEN, NATS_CREDS or NATS_NKEY');
  return { kind: 'nats', url };
}
