import * as path from 'node:path';
import { ConfigInvalidError } from '../../store/errors';
import { DEFAULT_TABLES, loadConfig, parseDuration } from '../../supervisor/config';

function withFile(content: unknown, env: Record<string, string> = {}) {
  return loadConfig({
    env: { TABLEKEEPER_CONFIG: '/cfg/tk.json', ...env },
    cwd: '/srv',
    readFile: (f) => {
      expect(f).toBe('/cfg/tk.json');
      return typeof content === 'string' ? content : JSON.stringify(content);
    },
  });
}

describe('config', () => {
  test('config - defaults declare the nine tables, durable, on loopback', () => {
    const c = loadConfig({ env: {}, cwd: '/srv' });
    expect(c.tables.map((t) => t.name)).toEqual([...DEFAULT_TABLES]);
    expect(c.tables.every((t) => t.sync === 'always' && t.maxValueBytes === 1024 * 1024)).toBe(true);
    expect(c.dataDir).toBe(path.resolve('/srv', 'data'));
    expect(c.backupDir).toBe(path.resolve('/srv', 'data', 'backups'));
    expect(c.http).toEqual({
      host: '127.0.0.1',
      port: 8080,
      adminToken: undefined,
      readToken: undefined,
      bodyLimitBytes: 1024 * 1024 + 64 * 1024,
      rateLimit: { burst: 20, perMinute: 60 },
      maxEventStreams: 256,
    });
    expect(c.nats).toEqual({});
    expect(c.backup).toEqual({ every: '24h', keep: 3 });
    expect(c.compaction).toEqual({ every: '6h', threshold: 0.1 });
    expect(c.scrub).toEqual({ every: '1h' });
  });

  test('config - environment overrides the file, the file overrides defaults', () => {
    const c = withFile(
      {
        dataDir: './from-file',
        http: { port: 9000 },
        nats: { url: 'nats://127.0.0.1:4000' },
        tables: [{ name: 'a', sync: { intervalMs: 50 } }, { name: 'b', sync: 'none', maxValueBytes: 10, readCacheBytes: 0 }],
        compaction: { cron: '0 */6 * * *', threshold: 0.2 },
      },
      { TABLEKEEPER_HTTP_PORT: '9100', NATS_URL: 'nats://127.0.0.1:4222', TABLEKEEPER_DATA_DIR: '/var/tk' },
    );
    expect(c.dataDir).toBe('/var/tk');
    expect(c.http.port).toBe(9100);
    expect(c.nats.url).toBe('nats://127.0.0.1:4222');
    expect(c.tables).toEqual([
      { name: 'a', sync: { intervalMs: 50 }, maxValueBytes: 1024 * 1024, readCacheBytes: 8 * 1024 * 1024 },
      { name: 'b', sync: 'none', maxValueBytes: 10, readCacheBytes: 0 },
    ]);
    expect(c.compaction).toEqual({ cron: '0 */6 * * *', threshold: 0.2 });
  });

  test("config - a secret still set to deploy/env.example's placeholder stops the start", () => {
    for (const name of ['TABLEKEEPER_ADMIN_TOKEN', 'TABLEKEEPER_READ_TOKEN', 'NATS_PASS', 'NATS_TOKEN']) {
      expect(() => loadConfig({ env: { [name]: 'change-me-admin-token' } })).toThrow(ConfigInvalidError);
      expect(() => loadConfig({ env: { [name]: 'change-me-admin-token' } })).toThrow(new RegExp(`^${name}: still the placeholder`));
    }
    expect(loadConfig({ env: { TABLEKEEPER_ADMIN_TOKEN: 'a-real-secret-change-me-later' } }).http.adminToken).toBe('a-real-secret-change-me-later');
  });

  test('config - an empty variable counts as unset, the subject prefix too', () => {
    const c = withFile({ subjectPrefix: 'acme', dataDir: './from-file' }, { TABLEKEEPER_SUBJECT_PREFIX: '', TABLEKEEPER_DATA_DIR: '' });
    expect(c.subjectPrefix).toBe('acme');
    expect(c.dataDir).toBe('/srv/from-file');
  });

  test('config - http section: host, port and tokens from the environment, limits from the file', () => {
    const c = withFile(
      {
        http: { host: '0.0.0.0', port: 9000, bodyLimitBytes: 4096, rateLimit: { burst: 2, perMinute: 60 }, maxEventStreams: 3 },
        tables: [{ name: 'a', maxValueBytes: 100 }],
      },
      {
        TABLEKEEPER_HTTP_HOST: '127.0.0.2',
        TABLEKEEPER_HTTP_PORT: '0',
        TABLEKEEPER_ADMIN_TOKEN: 'admin-secret',
        TABLEKEEPER_READ_TOKEN: 'read-secret',
      },
    );
    expect(c.http).toEqual({
      host: '127.0.0.2',
      port: 0,
      adminToken: 'admin-secret',
      readToken: 'read-secret',
      bodyLimitBytes: 4096,
      rateLimit: { burst: 2, perMinute: 60 },
      maxEventStreams: 3,
    });
    // Without a file limit the body may hold the largest table value plus framing.
    const d = withFile({ tables: [{ name: 'a', maxValueBytes: 100 }, { name: 'b', maxValueBytes: 5000 }] });
    expect(d.http.bodyLimitBytes).toBe(5000 + 64 * 1024);
    expect(d.http.host).toBe('127.0.0.1');
    expect(d.http.adminToken).toBeUndefined();
    expect(() => withFile({ http: { adminToken: 'x' } })).toThrow(/unknown key 'adminToken'/);
    expect(() => withFile({ http: { rateLimit: { burst: 0 } } })).toThrow(/rateLimit\/burst/);
    expect(() => withFile({ http: { maxEventStreams: 0 } })).toThrow(/maxEventStreams/);
    expect(() => loadConfig({ env: { TABLEKEEPER_HTTP_PORT: '70000' } })).toThrow(/not a port/);
  });

  test('config - unknown keys are named in the error', () => {
    expect(() => withFile({ tabels: [] })).toThrow(/unknown key 'tabels'/);
    expect(() => withFile({ http: { prot: 1 } })).toThrow(/\/http: unknown key 'prot'/);
  });

  test('config - bad values give readable errors', () => {
    expect(() => withFile('{not json')).toThrow(ConfigInvalidError);
    expect(() => withFile('{not json')).toThrow(/not valid JSON/);
    expect(() => withFile({ tables: [{ name: '../etc' }] })).toThrow(/\/tables\/0\/name/);
    expect(() => withFile({ tables: [{ name: 'a' }, { name: 'a' }] })).toThrow(/declared twice/);
    expect(() => withFile({ tables: [{ name: 'a', sync: 'sometimes' }] })).toThrow(ConfigInvalidError);
    expect(() => withFile({ tables: [{ name: 'a', readCacheBytes: -1 }] })).toThrow(/\/tables\/0\/readCacheBytes/);
    expect(() => withFile({ backup: { every: 'daily' } })).toThrow(/backup/);
    expect(() => withFile({ backup: { cron: '61 * * * *' } })).toThrow(/backup.cron: '61 \* \* \* \*' is not a cron expression/);
    expect(() => withFile({ backup: { every: '1h', cron: '0 * * * *' } })).toThrow(ConfigInvalidError);
    expect(() => loadConfig({ env: { TABLEKEEPER_HTTP_PORT: 'eighty' } })).toThrow(/TABLEKEEPER_HTTP_PORT/);
    expect(() => loadConfig({ env: { TABLEKEEPER_CONFIG: '/nope/missing.json' } })).toThrow(/cannot read config file/);
  });

  test('config - lockStale: default 60 s, from the file or TABLEKEEPER_LOCK_STALE, readable errors', () => {
    expect(loadConfig({ env: {} }).lockStaleMs).toBe(60_000);
    expect(withFile({ lockStale: '2m' }).lockStaleMs).toBe(120_000);
    expect(withFile({ lockStale: '2m' }, { TABLEKEEPER_LOCK_STALE: '1500ms' }).lockStaleMs).toBe(1_500);
    expect(() => withFile({}, { TABLEKEEPER_LOCK_STALE: 'soon' })).toThrow(/TABLEKEEPER_LOCK_STALE: 'soon' is not a duration/);
    expect(() => withFile({}, { TABLEKEEPER_LOCK_STALE: '100ms' })).toThrow(/too short/);
    expect(() => withFile({ lockStale: 5 })).toThrow(ConfigInvalidError);
    // A bad value from the file is named by its key there, not by a variable that was never set.
    expect(() => withFile({ lockStale: 'soon' })).toThrow(/^lockStale: 'soon' is not a duration/);
    expect(() => withFile({ lockStale: '100ms' })).toThrow(/^lockStale: '100ms' is too short/);
  });

  test('config - durations', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('6h')).toBe(21_600_000);
    expect(parseDuration('1d')).toBe(86_400_000);
    expect(() => parseDuration('0s')).toThrow(ConfigInvalidError);
    expect(() => parseDuration('5 minutes')).toThrow(ConfigInvalidError);
  });

  test('config - notify: defaults, file values, VAPID from the environment, readable errors', () => {
    const d = loadConfig({ env: {}, cwd: '/srv' }).notify;
    expect(d).toEqual({
      events: ['backup_failed', 'compaction_failed', 'recovery_complete', 'recovery_failed'],
      webhooks: [],
      timeoutMs: 5000,
      maxAttempts: 5,
      queueSize: 1000,
      webPush: { enabled: true, subject: 'mailto:tablekeeper@localhost', publicKey: undefined, privateKey: undefined },
    });
    const c = withFile(
      {
        notify: {
          webhooks: [{ url: 'https://hooks.example.test/tk', secret: 's3' }, { url: 'http://127.0.0.1:9000/x' }],
          events: ['corruption_detected'],
          maxAttempts: 2,
          webPush: { enabled: false, subject: 'https://ops.example.test' },
        },
      },
      { TABLEKEEPER_VAPID_PUBLIC_KEY: 'pub', TABLEKEEPER_VAPID_PRIVATE_KEY: 'priv' },
    ).notify;
    expect(c.webhooks).toEqual([{ url: 'https://hooks.example.test/tk', secret: 's3' }, { url: 'http://127.0.0.1:9000/x' }]);
    expect(c.events).toEqual(['corruption_detected']);
    expect(c.maxAttempts).toBe(2);
    expect(c.webPush).toEqual({ enabled: false, subject: 'https://ops.example.test', publicKey: 'pub', privateKey: 'priv' });

    expect(() => withFile({ notify: { webhooks: [{ url: 'ftp://x.test/h' }] } })).toThrow(/notify.webhooks\[0\].url: must be an http:\/\/ or https:\/\/ URL, not ftp:/);
    expect(() => withFile({ notify: { webhooks: [{ url: 'https://ok.test' }, { url: 'not a url' }] } })).toThrow(/notify.webhooks\[1\].url: is not a URL/);
    // A URL is never repeated in the error: it may carry a token.
    expect(() => withFile({ notify: { webhooks: [{ url: 'ftp://user:s3cret@x.test/h?token=t0k' }] } })).toThrow(/^(?!.*(s3cret|t0k)).*$/s);
    expect(() => withFile({ notify: { events: ['backup_complete'] } })).toThrow(/\/notify\/events\/0/);
    expect(() => withFile({ notify: { webhook: [] } })).toThrow(/unknown key 'webhook'/);
    expect(() => withFile({ notify: { webPush: { subject: 'ops@example.test' } } })).toThrow(/notify.webPush.subject: .* mailto: address or an https:\/\/ URL/);
    expect(() => loadConfig({ env: { TABLEKEEPER_VAPID_PUBLIC_KEY: 'pub' } })).toThrow(/must be set together/);
  });
});
