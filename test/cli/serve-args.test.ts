/**
 * `tablekeeper serve` takes no arguments: `serve --help` prints its usage and
 * anything else is a usage error, and neither starts a service (which would
 * create the data directory, generate an admin token and lock it).
 */
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import * as path from 'node:path';
import { main } from '../../cli/main';
import { useTempDir } from '../helpers/store-temp';

describe('cli - serve arguments', () => {
  const tmp = useTempDir('tk-serve-args-');
  let busy: Server;
  let port: number;
  let out: string;
  let err: string;

  beforeAll(async () => {
    // A port in use: were a service started anyway, it would stop at its listen, after creating its files.
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    port = (busy.address() as { port: number }).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => busy.close(() => resolve()));
  });

  beforeEach(() => {
    out = '';
    err = '';
    jest.spyOn(process.stdout, 'write').mockImplementation((t: string | Uint8Array) => ((out += String(t)), true));
    jest.spyOn(process.stderr, 'write').mockImplementation((t: string | Uint8Array) => ((err += String(t)), true));
  });

  afterEach(() => jest.restoreAllMocks());

  const env = () => ({
    TABLEKEEPER_DATA_DIR: path.join(tmp.dir, 'data'),
    TABLEKEEPER_HTTP_PORT: String(port),
    TABLEKEEPER_LOG_LEVEL: 'silent',
  });

  test.each(['--help', '-h'])('cli - serve %s prints the usage, exits 0 and starts nothing', async (flag) => {
    await expect(main(['serve', flag], env())).resolves.toBe(0);
    expect(out).toContain('usage: tablekeeper serve');
    expect(existsSync(path.join(tmp.dir, 'data'))).toBe(false);
  });

  test.each([['--port', '9000'], ['extra']])('cli - serve %s is a usage error (exit 2) and starts nothing', async (...args) => {
    await expect(main(['serve', ...args], env())).resolves.toBe(2);
    expect(err).toContain(`unexpected argument '${args[0]}'`);
    expect(existsSync(path.join(tmp.dir, 'data'))).toBe(false);
  });
});
