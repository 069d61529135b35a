/**
 * `npm start`, the README's way to run the service, as a process manager
 * runs it: SIGTERM goes to the npm process, and must reach the service, which
 * then stops cleanly, so that npm exits 0 and nothing is left running.
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';

const ROOT = path.join(__dirname, '../..');
const MAIN = path.join(ROOT, 'dist/cli/main.js');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start', () => {
  let dir: string | undefined;
  let servicePid: number | undefined;

  afterEach(() => {
    // Only if the test failed: never leave the service behind.
    if (servicePid !== undefined && alive(servicePid)) process.kill(servicePid, 'SIGKILL');
    if (dir !== undefined) removeTempDir(dir);
  });

  /** Runs `npm start` with one table in a temp dir; resolves once the service has started. */
  async function npmStart(opts: { ownGroup: boolean }) {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` (npm test does) before these tests`);
    const tmp = makeTempDir('tk-npm-start-');
    dir = tmp;
    const config = path.join(tmp, 'config.json');
    writeFileSync(config, JSON.stringify({ tables: [{ name: 'orders', sync: 'always' }] }));
    // The npm that runs the tests when there is one (npm test), else the one on the PATH.
    const npmCli = process.env.npm_execpath;
    const [command, args] = npmCli !== undefined && npmCli.endsWith('.js') ? [process.execPath, [npmCli, 'start']] : ['npm', ['start']];
    const npm = spawn(command, args, {
      cwd: ROOT,
      // Its own process group, as a shell gives a foreground job: a terminal's Ctrl-C signals the whole group.
      detached: opts.ownGroup,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: tmp,
        npm_config_update_notifier: 'false',
        TABLEKEEPER_DATA_DIR: path.join(tmp, 'data'),
        TABLEKEEPER_CONFIG: config,
        TABLEKEEPER_HTTP_HOST: '127.0.0.1',
        TABLEKEEPER_HTTP_PORT: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const exited = new Promise<number | null>((resolve) => npm.on('exit', (code) => resolve(code)));
    // The service's start line carries its own pid (npm runs it as a child).
    servicePid = await new Promise<number>((resolve, reject) => {
      npm.stdout.on('data', (c: Buffer) => {
        output += c.toString();
        const line = output.split('\n').find((l) => l.includes('"tablekeeper started"'));
        if (line !== undefined) resolve((JSON.parse(line) as { pid: number }).pid);
      });
      npm.stderr.on('data', (c: Buffer) => (output += c.toString()));
      npm.once('exit', (code) => reject(new Error(`npm start exited with ${code} before the service started:\n${output}`)));
    });
    expect(servicePid).not.toBe(npm.pid);
    return { npm, servicePid, exited, output: () => output };
  }

  test('npm start - SIGTERM to the npm process stops the service cleanly: npm exits 0 and the service is gone', async () => {
    const run = await npmStart({ ownGroup: false });
    process.kill(run.npm.pid!, 'SIGTERM');
    expect(await run.exited).toBe(0);
    expect(run.output()).toContain('"tablekeeper stopped"');
    expect(alive(run.servicePid)).toBe(false);
  });

  test('npm start - Ctrl-C (SIGINT to the process group: the service gets it twice, once forwarded by npm) still ends in a clean stop', async () => {
    const run = await npmStart({ ownGroup: true });
    process.kill(-run.npm.pid!, 'SIGINT');
    expect(await run.exited).toBe(0);
    expect(run.output()).toContain('"tablekeeper stopped"');
    expect(alive(run.servicePid)).toBe(false);
  });
});
