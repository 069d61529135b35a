import * as fs from 'node:fs';
import { adminTokenPath, bearerToken, resolveAdminToken, TokenAuth, tokenMatches, TokenBucketLimiter } from '../../http';
import { EventTickets } from '../../http/event-tickets';
import { ConfigInvalidError } from '../../store/errors';
import { useTempDir } from '../helpers/store-temp';
import { captureLogger } from './http-helpers';

const tmp = useTempDir('tk-http-auth-');

describe('http auth', () => {
  test('auth - bearer header parsing', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer  abc ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken('Bearer')).toBeUndefined();
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
    expect(bearerToken(['Bearer a'])).toBeUndefined();
  });

  test('auth - tokens match only exactly, whatever their lengths', () => {
    expect(tokenMatches('secret', 'secret')).toBe(true);
    expect(tokenMatches('secret', 'secreT')).toBe(false);
    expect(tokenMatches('secre', 'secret')).toBe(false);
    expect(tokenMatches('secret-and-more', 'secret')).toBe(false);
    expect(tokenMatches('', 'secret')).toBe(false);
  });

  test('auth - the admin token grants everything, the read token only read routes', () => {
    const auth = new TokenAuth('admin-t', 'read-t');
    expect(auth.grantOf('admin-t')).toBe('admin');
    expect(auth.grantOf('read-t')).toBe('read');
    expect(auth.grantOf('other')).toBe('none');
    expect(auth.grantOf(undefined)).toBe('none');
    expect(() => TokenAuth.require('admin', 'admin', 'token')).not.toThrow();
    expect(() => TokenAuth.require('read', 'read', 'token')).not.toThrow();
    expect(() => TokenAuth.require('read', 'read', 'ticket')).not.toThrow();
    expect(() => TokenAuth.require('read', 'admin', 'token')).toThrow(/read-only token does not grant/);
    expect(() => TokenAuth.require('none', 'read', 'none')).toThrow(/needs an Authorization: Bearer token/);
    expect(() => TokenAuth.require('none', 'read', 'token')).toThrow(/^the bearer token is not valid/);
    expect(() => TokenAuth.require('none', 'read', 'ticket')).toThrow(/^the ticket is not valid/);
    // Without a read token configured, nothing is read-only.
    expect(new TokenAuth('admin-t').grantOf('')).toBe('none');
    expect(() => new TokenAuth('')).toThrow();
  });

  test('auth - a generated admin token is stored with mode 0600, logged once, and read back later', () => {
    const first = captureLogger('info');
    const a = resolveAdminToken({ dataDir: tmp.dir, logger: first.logger });
    expect(a.source).toBe('generated');
    expect(a.token).toMatch(/^[A-Za-z0-9_-]{43}$/); // 32 bytes, base64url
    const file = adminTokenPath(tmp.dir);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(a.token);
    const warn = first.lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40);
    expect(warn).toHaveLength(1);
    expect(warn[0].msg).toMatch(/generated an HTTP admin token/);
    expect(first.text().split(a.token).length - 1).toBe(1);

    const second = captureLogger('trace');
    const b = resolveAdminToken({ dataDir: tmp.dir, logger: second.logger });
    expect(b).toEqual({ token: a.token, source: 'file' });
    expect(second.text()).not.toContain(a.token);

    const third = captureLogger('trace');
    expect(resolveAdminToken({ dataDir: tmp.dir, configured: 'from-env', logger: third.logger })).toEqual({ token: 'from-env', source: 'environment' });
    expect(third.lines).toHaveLength(0);
  });

  test('auth - a token file readable by others is narrowed to 0600 with a warning, and still used', () => {
    const file = adminTokenPath(tmp.dir);
    fs.mkdirSync(`${tmp.dir}/.tablekeeper`);
    fs.writeFileSync(file, 'token-from-the-file\n', { mode: 0o644 });
    fs.chmodSync(file, 0o644); // whatever the umask made of it
    const log = captureLogger('info');
    expect(resolveAdminToken({ dataDir: tmp.dir, logger: log.logger })).toEqual({ token: 'token-from-the-file', source: 'file' });
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const warn = log.lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40);
    expect(warn).toEqual([expect.objectContaining({ op: 'secret-file', what: 'admin token', file, mode: '644', msg: expect.stringMatching(/mode is now 0600/) })]);
    expect(log.text()).not.toContain('token-from-the-file');
    // Once narrowed, a later start says nothing.
    const again = captureLogger('info');
    resolveAdminToken({ dataDir: tmp.dir, logger: again.logger });
    expect(again.lines).toHaveLength(0);
  });

  test('auth - a configured token creates no file; an empty token file is an error', () => {
    resolveAdminToken({ dataDir: tmp.dir, configured: 'x', logger: captureLogger().logger });
    expect(fs.existsSync(adminTokenPath(tmp.dir))).toBe(false);
    fs.mkdirSync(`${tmp.dir}/.tablekeeper`);
    fs.writeFileSync(adminTokenPath(tmp.dir), '\n');
    expect(() => resolveAdminToken({ dataDir: tmp.dir, logger: captureLogger().logger })).toThrow(ConfigInvalidError);
  });
});

describe('http rate limit and tickets', () => {
  test('rate limit - a bucket holds burst tokens and refills at perMinute', () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ burst: 3, perMinute: 30, now: () => now });
    expect([limiter.take('a'), limiter.take('a'), limiter.take('a')].every((d) => d.allowed)).toBe(true);
    expect(limiter.take('a')).toEqual({ allowed: false, retryAfterS: 2 });
    expect(limiter.take('b').allowed).toBe(true);
    now += 1999;
    expect(limiter.take('a').allowed).toBe(false);
    now += 1;
    expect(limiter.take('a').allowed).toBe(true);
    now += 60_000; // refills to the burst, no further
    expect([1, 2, 3, 4].map(() => limiter.take('a').allowed)).toEqual([true, true, true, false]);
    now -= 10_000; // a clock stepping back adds nothing
    expect(limiter.take('a').allowed).toBe(false);
  });

  test('rate limit - the client table stays bounded', () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ burst: 1, perMinute: 1, now: () => now, maxClients: 3 });
    for (const c of ['a', 'b', 'c', 'd', 'e']) expect(limiter.take(c).allowed).toBe(true);
    // 'a' was forgotten to make room, so it starts full again: the bound only ever gives more room.
    expect(limiter.take('e').allowed).toBe(false);
    now += 1;
    expect(limiter.take('a').allowed).toBe(true);
  });

  test('tickets - a ticket works once and only before it expires', () => {
    let now = 0;
    const tickets = new EventTickets({ ttlMs: 1000, now: () => now });
    const t = tickets.issue('read');
    expect(tickets.redeem(t)).toBe('read');
    expect(tickets.redeem(t)).toBe('none');
    const u = tickets.issue('admin');
    now += 1000;
    expect(tickets.redeem(u)).toBe('none');
    expect(tickets.redeem('made-up')).toBe('none');
  });
});
