import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorReply } from '../../bus/codec';
import { ERROR_CODES, STATUS_WIRE, statusOfWire, type WireErrorCode } from '../../bus/error-codes';
import { RemoteError } from '../../bus/errors';
import { HTTP_ONLY_ERRORS, HttpError, httpErrorAnswer, WIRE_STATUS, type HttpOnlyCode } from '../../http';
import { remoteErrorOf } from '../../http/bus-call';
import { TablekeeperError, type ErrorCode } from '../../store/errors';

const WIRE: readonly WireErrorCode[] = ['bad_request', 'not_found', 'unavailable', 'corrupt', 'unauthorized', 'timeout', 'internal'];

/** The members of the `ErrorCode` union, read from the source so that a new code cannot be missed. */
function declaredCodes(): ErrorCode[] {
  const src = readFileSync(join(__dirname, '../../store/errors.ts'), 'utf8');
  const m = /export type ErrorCode\s*=([^;]+);/.exec(src);
  if (!m) throw new Error('ErrorCode union not found in store/errors.ts');
  return [...m[1].matchAll(/'([A-Z_]+)'/g)].map((x) => x[1] as ErrorCode);
}

describe('http error statuses', () => {
  test('error status - every ErrorCode answers with its ERROR_CODES status and wire code', () => {
    const codes = declaredCodes();
    expect(codes.length).toBeGreaterThan(5);
    for (const code of codes) {
      const a = httpErrorAnswer(new TablekeeperError(code, `m ${code}`));
      expect({ code, status: a.status, body: a.body }).toEqual({
        code,
        status: ERROR_CODES[code].status,
        body: { error: { code: ERROR_CODES[code].wire, message: `m ${code}` } },
      });
    }
  });

  test('error status - every wire code has a status, used when a reply carries none', () => {
    expect(Object.keys(WIRE_STATUS).sort()).toEqual([...WIRE].sort());
    for (const wire of WIRE) {
      const a = httpErrorAnswer(new RemoteError(wire, 'remote', Number.NaN));
      expect({ wire, status: a.status, code: a.body.error.code }).toEqual({ wire, status: WIRE_STATUS[wire], code: wire });
    }
    // The status a reply carried wins: a maintenance conflict is 409, not the 503 of `unavailable`.
    expect(httpErrorAnswer(new RemoteError('unavailable', 'busy', 409)).status).toBe(409);
    // An unknown wire code is internal, keeping the status.
    expect(httpErrorAnswer(new RemoteError('teapot', 'x', 418)).body.error.code).toBe('internal');
  });

  test('error status - one table: every status in ERROR_CODES and HTTP_ONLY_ERRORS has a wire code, consistent with it', () => {
    const mappings = [...Object.values(ERROR_CODES), ...Object.values(HTTP_ONLY_ERRORS)];
    for (const m of mappings) {
      const back = STATUS_WIRE[m.status];
      expect({ status: m.status, mapped: back !== undefined }).toEqual({ status: m.status, mapped: true });
      // A status used by more than one wire code (503: unavailable, corrupt) maps to the general one.
      const wires = new Set(mappings.filter((x) => x.status === m.status).map((x) => x.wire));
      if (wires.size === 1) expect({ status: m.status, wire: back }).toEqual({ status: m.status, wire: m.wire });
      else expect([...wires]).toContain(back);
    }
    for (const wire of WIRE) expect(STATUS_WIRE[WIRE_STATUS[wire]]).toBeDefined();
    expect(statusOfWire('teapot')).toBe(500);
    expect(statusOfWire('timeout')).toBe(504);
  });

  test('error status - a bus reply without the status header takes its wire code\'s usual status; with it, the sent one', () => {
    const body = (code: string) => Buffer.from(JSON.stringify({ error: { code, message: 'm' } }));
    expect(remoteErrorOf({ subject: 'r', data: body('not_found'), respond: () => false }).status).toBe(404);
    expect(remoteErrorOf({ subject: 'r', data: body('mystery'), respond: () => false })).toMatchObject({ wireCode: 'mystery', status: 500 });
    // The header keeps what the wire code alone cannot say: a conflict is 409, not the 503 of `unavailable`.
    const conflict = errorReply(new TablekeeperError('MAINTENANCE_CONFLICT', 'busy'));
    const withHeader = remoteErrorOf({ subject: 'r', data: Buffer.from(JSON.stringify(conflict.body)), headers: conflict.headers, respond: () => false });
    expect([withHeader.wireCode, withHeader.status]).toEqual(['unavailable', 409]);
    expect(httpErrorAnswer(withHeader).status).toBe(409);
  });

  test('error status - HTTP-only failures, Retry-After and WWW-Authenticate', () => {
    const expected: Record<HttpOnlyCode, number> = {
      UNAUTHORIZED: 401,
      ROUTE_NOT_FOUND: 404,
      BODY_TOO_LARGE: 413,
      UNSUPPORTED_MEDIA_TYPE: 415,
      RATE_LIMITED: 429,
      TOO_MANY_STREAMS: 429,
      EVENT_STREAMS_FULL: 503,
    };
    for (const [code, status] of Object.entries(expected)) {
      expect(HTTP_ONLY_ERRORS[code as HttpOnlyCode].status).toBe(status);
      expect(httpErrorAnswer(new HttpError(code as HttpOnlyCode, 'x')).status).toBe(status);
    }
    expect(httpErrorAnswer(new HttpError('UNAUTHORIZED', 'x')).headers['www-authenticate']).toBe('Bearer realm="tablekeeper"');
    expect(httpErrorAnswer(new HttpError('RATE_LIMITED', 'x', { retryAfterS: 7 })).headers['retry-after']).toBe('7');
    expect(httpErrorAnswer(new TablekeeperError('TABLE_UNAVAILABLE', 'x')).headers['retry-after']).toBe('1');
    expect(httpErrorAnswer(new RemoteError('corrupt', 'x', 503)).headers['retry-after']).toBe('1');
    expect(httpErrorAnswer(new TablekeeperError('INTERNAL', 'x')).headers['retry-after']).toBeUndefined();
  });

  test('error status - anything else is a 500 that does not leak its message', () => {
    const a = httpErrorAnswer(new Error('secret internals at /srv/x'));
    expect(a.status).toBe(500);
    expect(a.unexpected).toBe(true);
    expect(a.body.error.code).toBe('internal');
    expect(a.body.error.message).not.toContain('secret');
    expect(httpErrorAnswer('thrown string').status).toBe(500);
    // Fastify's own errors keep their meaning.
    expect(httpErrorAnswer(Object.assign(new Error('too big'), { statusCode: 413 })).status).toBe(413);
    expect(httpErrorAnswer(Object.assign(new Error('bad url'), { statusCode: 400 })).body.error.code).toBe('bad_request');
  });

  test('error status - the README status table documents every HTTP-only case', () => {
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    for (const m of Object.values(HTTP_ONLY_ERRORS)) {
      const row = `| ${m.status} | \`${m.wire}\` | ${m.doc} |`;
      expect({ row, documented: readme.includes(row) }).toEqual({ row, documented: true });
    }
  });
});
