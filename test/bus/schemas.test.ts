import { checkReply, OPERATIONS, parseRequest, validateRequest, type Operation } from '../../bus/schemas';
import { BadRequestError } from '../../store/errors';

function failure(op: Operation, body: unknown): string {
  try {
    validateRequest(op, body);
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequestError);
    return (err as BadRequestError).message;
  }
  throw new Error(`expected ${op} to reject ${JSON.stringify(body)}`);
}

describe('schemas', () => {
  test('schemas - get: {key}', () => {
    expect(() => validateRequest('get', { key: 'user:1' })).not.toThrow();
    expect(failure('get', {})).toBe('key: is required');
    expect(failure('get', { key: 1 })).toBe('key: must be string');
    expect(failure('get', { key: '' })).toBe('key: must NOT have fewer than 1 characters');
    expect(failure('get', { key: 'x'.repeat(1025) })).toBe('key: must NOT have more than 1024 characters');
    expect(failure('get', { key: 'k', extra: 1 })).toBe('extra: is not allowed');
    expect(failure('get', [])).toBe('body: must be object');
    expect(failure('get', null)).toBe('body: must be object');
  });

  test('schemas - put: {key, value} with any JSON value, null included', () => {
    for (const value of [null, 0, 'v', false, [1, 'a'], { nested: { deep: true } }]) {
      expect(() => validateRequest('put', { key: 'k', value })).not.toThrow();
    }
    expect(failure('put', { key: 'k' })).toBe('value: is required');
    expect(failure('put', { value: 1 })).toBe('key: is required');
    expect(failure('put', {})).toBe('key: is required; value: is required');
    expect(failure('put', { key: 5, value: 1, x: 2 })).toBe('x: is not allowed; key: must be string');
  });

  test('schemas - delete: {key}', () => {
    expect(() => validateRequest('delete', { key: 'k' })).not.toThrow();
    expect(failure('delete', {})).toBe('key: is required');
    expect(failure('delete', { key: ['k'] })).toBe('key: must be string');
    expect(failure('delete', { key: 'k', value: 1 })).toBe('value: is not allowed');
  });

  test('schemas - select: {prefix?, after?, limit? 1..1000}', () => {
    for (const body of [{}, { prefix: 'user:' }, { after: 'user:5', limit: 1 }, { prefix: '', limit: 1000 }]) {
      expect(() => validateRequest('select', body)).not.toThrow();
    }
    expect(failure('select', { limit: 0 })).toBe('limit: must be >= 1');
    expect(failure('select', { limit: 1001 })).toBe('limit: must be <= 1000');
    expect(failure('select', { limit: 2.5 })).toBe('limit: must be integer');
    expect(failure('select', { limit: '10' })).toBe('limit: must be integer');
    expect(failure('select', { prefix: 1 })).toBe('prefix: must be string');
    expect(failure('select', { after: null })).toBe('after: must be string');
    expect(failure('select', { cursor: 'x' })).toBe('cursor: is not allowed');
  });

  test('schemas - stats, compact and admin requests', () => {
    expect(() => validateRequest('stats', {})).not.toThrow();
    expect(failure('stats', { verbose: true })).toBe('verbose: is not allowed');
    expect(() => validateRequest('compact', { force: true })).not.toThrow();
    expect(failure('compact', { force: 'yes' })).toBe('force: must be boolean');
    expect(() => validateRequest('corruption', { reason: 'crc mismatch', offset: 128 })).not.toThrow();
    expect(failure('corruption', {})).toBe('reason: is required');
    // An enum names what it takes.
    expect(failure('corruption', { reason: 'r', source: 'cron' })).toBe("source: must be one of 'operator', 'scrub', 'owner'");
    expect(() => validateRequest('admin.history', { limit: 20 })).not.toThrow();
    expect(failure('admin.health', { x: 1 })).toBe('x: is not allowed');
  });

  test('schemas - parseRequest decodes then validates', () => {
    const body = parseRequest('get', new TextEncoder().encode('{"key":"a"}'));
    expect(body.key).toBe('a');
    expect(() => parseRequest('get', new TextEncoder().encode('{'))).toThrow('body is not valid JSON');
    expect(() => parseRequest('get', new Uint8Array(0))).toThrow('key: is required');
  });

  test('schemas - replies', () => {
    expect(checkReply('get', { found: true, value: { a: 1 } })).toBeNull();
    expect(checkReply('get', { found: false })).toBeNull();
    expect(checkReply('get', { value: 1 })).toBe('found: is required');
    expect(checkReply('put', { ok: true })).toBeNull();
    expect(checkReply('put', { ok: false })).toBe('ok: must be equal to constant');
    expect(checkReply('delete', { deleted: false })).toBeNull();
    expect(checkReply('select', { items: [{ key: 'a', value: null }], next: 'a' })).toBeNull();
    expect(checkReply('select', { items: [{ key: 'a' }] })).toBe('items.0.value: is required');
    const stats = { records: 3, fileBytes: 100, liveBytes: 60, deadBytes: 40, fragmentation: 0.4, generation: 2 };
    expect(checkReply('stats', stats)).toBeNull();
    expect(checkReply('stats', { ...stats, fragmentation: 1.5 })).toBe('fragmentation: must be <= 1');
    expect(checkReply('compact', { status: 'skipped', fragmentation: 0.02 })).toBeNull();
  });

  test('schemas - every operation has a subject, a request schema and a reply schema', () => {
    for (const [op, def] of Object.entries(OPERATIONS)) {
      expect(def.subject).toMatch(op.startsWith('admin.') ? /^admin\./ : /^tables\.<t>\./);
      expect(def.request).toBeDefined();
      expect(def.reply).toBeDefined();
      expect(() => checkReply(op as Operation, {})).not.toThrow(); // compiles
    }
  });
});
