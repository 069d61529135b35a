import { DEFAULT_URL, parseRemoteArgs } from '../../cli/remote-args';
import { UsageError } from '../../cli/exit-codes';

describe('cli remote args', () => {
  test('cli remote args - defaults: HTTP on the default URL, token from the environment', () => {
    expect(parseRemoteArgs('status', [], { TABLEKEEPER_ADMIN_TOKEN: 't' })).toEqual({
      command: 'status',
      table: undefined,
      force: false,
      json: false,
      help: false,
      target: { kind: 'http', url: DEFAULT_URL, token: 't' },
      timeoutMs: undefined,
    });
  });

  test("cli remote args - without a URL, the service's own configured address, reached on loopback when it listens on all", () => {
    expect(parseRemoteArgs('status', [], { TABLEKEEPER_HTTP_PORT: '9123' }).target).toEqual({ kind: 'http', url: 'http://127.0.0.1:9123', token: undefined });
    expect(parseRemoteArgs('status', [], { TABLEKEEPER_HTTP_HOST: '0.0.0.0', TABLEKEEPER_HTTP_PORT: '9124' }).target).toMatchObject({ url: 'http://127.0.0.1:9124' });
    expect(parseRemoteArgs('status', [], { TABLEKEEPER_HTTP_HOST: '::1' }).target).toMatchObject({ url: 'http://[::1]:8080' });
    // A configuration that does not load: the default address.
    expect(parseRemoteArgs('status', [], { TABLEKEEPER_HTTP_PORT: 'eighty' }).target).toMatchObject({ url: DEFAULT_URL });
  });

  test('cli remote args - options beat the environment; TABLEKEEPER_URL beats NATS_URL', () => {
    const env = { TABLEKEEPER_URL: 'http://10.0.0.1:9000/', NATS_URL: 'nats://127.0.0.1:4222', TABLEKEEPER_ADMIN_TOKEN: 'env' };
    expect(parseRemoteArgs('status', [], env).target).toEqual({ kind: 'http', url: 'http://10.0.0.1:9000', token: 'env' });
    expect(parseRemoteArgs('status', [], { NATS_URL: 'nats://127.0.0.1:4222' }).target).toEqual({ kind: 'nats', url: 'nats://127.0.0.1:4222' });
    expect(parseRemoteArgs('status', ['--url=http://127.0.0.1:1', '--token', 'opt'], env).target).toEqual({
      kind: 'http',
      url: 'http://127.0.0.1:1',
      token: 'opt',
    });
    expect(parseRemoteArgs('status', ['--nats', 'nats://h:1'], env).target).toEqual({ kind: 'nats', url: 'nats://h:1' });
  });

  test('cli remote args - table, --force, --json and --timeout', () => {
    const args = parseRemoteArgs('compact', ['--json', 'orders', '--force', '--timeout', '90s'], {});
    expect(args).toEqual(expect.objectContaining({ table: 'orders', force: true, json: true, timeoutMs: 90_000 }));
    expect(parseRemoteArgs('backup', ['--timeout=45'], {}).timeoutMs).toBe(45_000);
    expect(parseRemoteArgs('backup', ['--timeout=24d'], {}).timeoutMs).toBe(24 * 24 * 3600 * 1000);
    expect(parseRemoteArgs('backup', ['--', '-odd-name'], {}).table).toBe('-odd-name');
  });

  test.each([
    ['restore', [], /restore needs a table/],
    ['status', ['orders'], /unexpected argument 'orders'/],
    ['backup', ['a', 'b'], /unexpected argument 'b'/],
    ['backup', ['--force'], /--force applies only to compact/],
    ['compact', ['--json=yes'], /unknown option '--json=yes'/],
    ['compact', ['--url'], /--url needs a value/],
    ['status', ['--url', 'not a url'], /is not a URL/],
    ['status', ['--nats', 'nats://h:1', '--token', 'x'], /--token is for HTTP/],
    ['backup', ['bad.name'], /is not a table name/],
    ['status', ['--timeout', '0s'], /--timeout: '0s' is not a duration/],
    ['status', ['--timeout', '25d'], /--timeout: '25d' is longer than the maximum, 24d/],
    ['status', ['--timeout=1000d'], /--timeout: '1000d' is longer than the maximum/],
  ] as const)('cli remote args - %s %j is a usage error', (command, argv, message) => {
    expect(() => parseRemoteArgs(command, [...argv], {})).toThrow(UsageError);
    expect(() => parseRemoteArgs(command, [...argv], {})).toThrow(message);
  });

  test('cli remote args - --help needs no table', () => {
    expect(parseRemoteArgs('restore', ['--help'], {}).help).toBe(true);
  });
});
