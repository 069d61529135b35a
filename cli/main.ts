#!/usr/bin/env node
import { VERSION } from '../bus';
import { offlineCommand } from './offline';
import { backupCommand, compactCommand, restoreCommand, statusCommand } from './remote';
import { serveCommand } from './serve';

const USAGE = `usage: tablekeeper <command>

commands:
  serve        run the service (configuration from the environment; see README)
  status       health of every table of a running service
  compact      compact one table or all: compact [table] [--force]
  backup       back up one table or all: backup [table]
  restore      roll a table back to its latest verified backup: restore <table>
               (these four: --url/--token or --nats, --json; see <command> --help)
  verify       check a table file offline: verify <file> [--json]
  salvage      write the intact records of a table file to a new one: salvage <file> --out <file>
  dump         print a table file's records as JSON lines: dump <file>
               (these three never modify their input)
  --version    print the version
`;

const SERVE_USAGE = `usage: tablekeeper serve

Runs the service until SIGTERM or Ctrl-C. It takes no arguments: its
configuration comes from the environment and from the JSON file named by
TABLEKEEPER_CONFIG (see README, "Configuration").
`;

/**
 * `tablekeeper serve` takes no arguments. One given anyway (`--help`, a
 * mistyped `--port`) must not start a service with the defaults, which
 * creates `./data`, generates an admin token and locks the directory.
 */
function serve(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> | number {
  const [arg] = args;
  if (arg === undefined) return serveCommand(env);
  if (arg === '--help' || arg === '-h') {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  process.stderr.write(`tablekeeper serve: unexpected argument '${arg}' (settings come from the environment)\n${SERVE_USAGE}`);
  return 2;
}

/** Dispatches the command line; resolves to the process exit code. */
export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'serve':
      return serve(argv.slice(1), env);
    case 'status':
      return statusCommand({ argv: argv.slice(1), env, stdout: process.stdout, stderr: process.stderr });
    case 'compact':
      return compactCommand({ argv: argv.slice(1), env, stdout: process.stdout, stderr: process.stderr });
    case 'backup':
      return backupCommand({ argv: argv.slice(1), env, stdout: process.stdout, stderr: process.stderr });
    case 'restore':
      return restoreCommand({ argv: argv.slice(1), env, stdout: process.stdout, stderr: process.stderr });
    case 'verify':
    case 'salvage':
    case 'dump':
      return offlineCommand(command, { argv: argv.slice(1), env, stdout: process.stdout, stderr: process.stderr });
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`tablekeeper: unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

if (require.main === module) {
  // A reader that stops early (`tablekeeper dump ... | head`) closes the pipe,
  // and every later write fails with EPIPE. That is not a failure of the
  // command: what it writes from then on is dropped (dump stops reading),
  // instead of the process dying with a stack trace in the middle of its
  // work (a backup of every table would stop at the table it is on).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  main(process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`tablekeeper: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
