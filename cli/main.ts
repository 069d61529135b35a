#!/usr/bin/env node
import { serveCommand } from './serve';
import { VERSION } from './version';

const USAGE = `usage: tablekeeper <command>

commands:
  serve        run the service (configuration from the environment; see README)
  --version    print the version
`;

/** Dispatches the command line; resolves to the process exit code. */
export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'serve':
      return serveCommand(env);
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
  main(process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`tablekeeper: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
