/**
 * The operator commands that drive a running service: `status`,
 * `compact [table] [--force]`, `backup [table]` and `restore <table>`, over
 * the HTTP API or NATS. Human-readable output by default; `--json` prints
 * exactly one JSON document on stdout and sends progress to stderr. Exit
 * codes are in `exit-codes.ts`.
 *
 * `compact` and `backup` without a table run one request per table, one
 * after another, in the order of the health reply, and print each table's
 * line as soon as it is done.
 */
import { openAdminClient, type AdminClient } from './admin-client';
import { EXIT, reportFailure, UnknownTableError, UnreachableError, type ExitCode } from './exit-codes';
import { parseRemoteArgs, remoteUsage, type RemoteArgs, type RemoteCommand } from './remote-args';
import {
  asHealth,
  formatBackupResult,
  formatCompactResult,
  formatHealth,
  formatRestore,
  formatRunSummary,
  tableNames,
  type HealthView,
} from './remote-format';
import { RemoteError } from '../bus';

/** Where a command writes; `process.stdout` fits, and so does a test's collector. */
export interface OutputStream {
  write(text: string): unknown;
}

/** What a command gets: its arguments (after the command name), the environment and two streams. */
export interface CommandIo {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  stdout: OutputStream;
  stderr: OutputStream;
}

/** Default per-request timeouts: health answers quickly; a backup or compaction of a large table may not. */
const HEALTH_TIMEOUT_MS = 15_000;
const OPERATION_TIMEOUT_MS = 10 * 60_000;

type Json = Record<string, unknown>;

/** `tablekeeper status`: exit 0 when every table is serving and not degraded, else 1. */
export function statusCommand(io: CommandIo): Promise<number> {
  return runRemote('status', io);
}

/** `tablekeeper compact [table] [--force]`: exit 1 if any table's compaction ended in error. */
export function compactCommand(io: CommandIo): Promise<number> {
  return runRemote('compact', io);
}

/** `tablekeeper backup [table]`: exit 1 if any table's backup failed. */
export function backupCommand(io: CommandIo): Promise<number> {
  return runRemote('backup', io);
}

/** `tablekeeper restore <table>`: exit 0 once the table is restored from its latest verified backup. */
export function restoreCommand(io: CommandIo): Promise<number> {
  return runRemote('restore', io);
}

/** Runs one operator command; resolves to its exit code and never rejects. */
export async function runRemote(command: RemoteCommand, io: CommandIo): Promise<ExitCode> {
  let args: RemoteArgs;
  try {
    args = parseRemoteArgs(command, io.argv, io.env);
  } catch (err) {
    return new Output(command, io, io.argv.includes('--json')).fail(err);
  }
  const out = new Output(command, io, args.json);
  if (args.help) {
    io.stdout.write(remoteUsage(command));
    return EXIT.OK;
  }
  let client: AdminClient | undefined;
  try {
    client = await openAdminClient(args.target, io.env, { notice: (m) => out.progress(m) });
    const health = await fetchHealth(client, args.timeoutMs ?? HEALTH_TIMEOUT_MS);
    if (command === 'status') return status(out, health);
    const table = args.table === undefined ? undefined : knownTable(health.view, args.table);
    if (command === 'restore') return await restore(out, client, table ?? '', args);
    return await run(command, out, client, table === undefined ? tableNames(health.view) : [table], args);
  } catch (err) {
    return out.fail(err);
  } finally {
    await client?.close().catch(() => undefined);
  }
}

/** Health is every command's first request: it proves the service is there and names its tables. */
async function fetchHealth(client: AdminClient, timeoutMs: number): Promise<{ raw: unknown; view: HealthView }> {
  let raw: unknown;
  try {
    raw = await client.health(timeoutMs);
  } catch (err) {
    // Over HTTP a 503 means the API is up but nothing serves behind it.
    if (err instanceof RemoteError && err.wireCode === 'unavailable') {
      throw new UnreachableError(`the service at ${client.where} is not ready: ${err.message}`, { cause: err });
    }
    throw err;
  }
  const view = asHealth(raw);
  if (view === undefined) throw new Error(`the service at ${client.where} sent a health reply of an unknown shape`);
  return { raw, view };
}

function knownTable(health: HealthView, table: string): string {
  const names = tableNames(health);
  if (!names.includes(table)) throw new UnknownTableError(table, names);
  return table;
}

function status(out: Output, health: { raw: unknown; view: HealthView }): ExitCode {
  out.result(out.json ? JSON.stringify(health.raw) : formatHealth(health.view));
  return health.view.status === 'ok' ? EXIT.OK : EXIT.FAILED;
}

/** `compact` or `backup` over `tables`, one request each, printing each table's line as it finishes. */
async function run(
  command: 'compact' | 'backup',
  out: Output,
  client: AdminClient,
  tables: string[],
  args: RemoteArgs,
): Promise<ExitCode> {
  const timeoutMs = args.timeoutMs ?? OPERATION_TIMEOUT_MS;
  const width = Math.max(0, ...tables.map((t) => t.length));
  const ok = command === 'compact' ? ['compacted', 'skipped'] : ['ok'];
  const results: Json[] = [];
  const started = Date.now();
  for (const table of tables) {
    let result: Json;
    try {
      const reply = command === 'compact' ? await client.compact(table, args.force, timeoutMs) : await client.backup(table, timeoutMs);
      result = resultFor(reply, table, command);
    } catch (err) {
      const failure = reportFailure(err);
      // Without the service (or the right to ask it) the other tables cannot go better: stop here.
      if (failure.exit === EXIT.UNREACHABLE || failure.exit === EXIT.AUTH) return out.fail(err, { results });
      result = { table, status: failedStatus(command), error: { code: failure.code, message: failure.message } };
    }
    results.push(result);
    out.progress(command === 'compact' ? formatCompactResult(result, width) : formatBackupResult(result, width));
  }
  const durationMs = Date.now() - started;
  const failed = results.filter((r) => !ok.includes(String(r.status))).length;
  out.result(out.json ? JSON.stringify({ results, durationMs }) : formatRunSummary(command, results, failed, durationMs));
  return failed > 0 ? EXIT.FAILED : EXIT.OK;
}

function failedStatus(command: 'compact' | 'backup'): string {
  return command === 'compact' ? 'error' : 'failed';
}

/** The table's entry in a `{results: [...]}` reply; a failed entry when the reply has none. */
function resultFor(reply: unknown, table: string, command: 'compact' | 'backup'): Json {
  const list: unknown = typeof reply === 'object' && reply !== null ? (reply as Json).results : undefined;
  const found = Array.isArray(list)
    ? list.find((r): r is Json => typeof r === 'object' && r !== null && (r as Json).table === table)
    : undefined;
  return (
    found ?? {
      table,
      status: failedStatus(command),
      error: { code: 'internal', message: `the reply names no result for '${table}'` },
    }
  );
}

async function restore(out: Output, client: AdminClient, table: string, args: RemoteArgs): Promise<ExitCode> {
  out.progress(`restoring ${table} from its latest verified backup`);
  const reply = await client.restore(table, args.timeoutMs ?? OPERATION_TIMEOUT_MS);
  const report: Json = typeof reply === 'object' && reply !== null ? (reply as Json) : {};
  out.result(out.json ? JSON.stringify(reply) : formatRestore(report));
  return report.status === 'restored' || report.status === 'recovered' ? EXIT.OK : EXIT.FAILED;
}

/** Where each kind of output goes in human and in `--json` mode. */
class Output {
  constructor(
    private readonly command: RemoteCommand,
    private readonly io: CommandIo,
    readonly json: boolean,
  ) {}

  /** A progress line: stdout for people, stderr under `--json` (stdout carries only the final document). */
  progress(line: string): void {
    (this.json ? this.io.stderr : this.io.stdout).write(`${line}\n`);
  }

  /** The final result: the JSON document, or the closing text. */
  result(text: string): void {
    this.io.stdout.write(`${text}\n`);
  }

  /** Reports `err` (stderr; plus `{error, ...extra}` on stdout under `--json`) and returns its exit code. */
  fail(err: unknown, extra: Json = {}): ExitCode {
    const { exit, code, message } = reportFailure(err);
    this.io.stderr.write(`tablekeeper ${this.command}: ${message}\n`);
    if (exit === EXIT.USAGE && !(err instanceof UnknownTableError)) {
      this.io.stderr.write(`run 'tablekeeper ${this.command} --help' for usage\n`);
    }
    if (this.json) this.io.stdout.write(`${JSON.stringify({ error: { code, message }, ...extra })}\n`);
    return exit;
  }
}
