import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, type WireErrorCode } from '../../bus/error-codes';

const WIRE: readonly WireErrorCode[] = ['bad_request', 'not_found', 'unavailable', 'corrupt', 'unauthorized', 'timeout', 'internal'];

/** The members of the `ErrorCode` union, read from the source so that a new code cannot be missed. */
function declaredCodes(): string[] {
  const src = readFileSync(join(__dirname, '../../store/errors.ts'), 'utf8');
  const m = /export type ErrorCode\s*=([^;]+);/.exec(src);
  if (!m) throw new Error('ErrorCode union not found in store/errors.ts');
  return [...m[1].matchAll(/'([A-Z_]+)'/g)].map((x) => x[1]);
}

describe('error codes', () => {
  test('error codes - every ErrorCode has an ERROR_CODES entry and nothing else does', () => {
    const codes = declaredCodes();
    expect(codes.length).toBeGreaterThan(5);
    expect(Object.keys(ERROR_CODES).sort()).toEqual([...codes].sort());
  });

  test('error codes - each entry has a wire code, an HTTP error status and a doc line', () => {
    for (const [code, m] of Object.entries(ERROR_CODES)) {
      expect({ code, wire: WIRE.includes(m.wire) }).toEqual({ code, wire: true });
      expect(Number.isInteger(m.status) && m.status >= 400 && m.status <= 599).toBe(true);
      expect(m.doc.trim().length).toBeGreaterThan(10);
    }
  });

  test('error codes - the README documents every code with its wire code, status and meaning', () => {
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    for (const [code, m] of Object.entries(ERROR_CODES)) {
      const row = `| \`${code}\` | \`${m.wire}\` | ${m.status} | ${m.doc} |`;
      expect({ code, documented: readme.includes(row) }).toEqual({ code, documented: true });
    }
  });
});
