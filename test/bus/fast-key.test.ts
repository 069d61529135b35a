import { fastKeyOf, parseKeyRequest, parseRequest } from '../../bus/schemas';
import { BadRequestError } from '../../store/errors';

const enc = (s: string): Uint8Array => Buffer.from(s, 'utf8');

/** What the full path makes of a body: the key, or the error's message. */
function full(op: 'get' | 'delete', body: Uint8Array): { key: string } | { error: string } {
  try {
    return { key: parseRequest(op, body).key };
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequestError);
    return { error: (err as Error).message };
  }
}

/** parseKeyRequest must agree with the full path on every body, and the fast path may only ever accept. */
function agrees(body: Uint8Array): void {
  for (const op of ['get', 'delete'] as const) {
    const expected = full(op, body);
    const fast = fastKeyOf(body);
    if (fast !== undefined) expect({ key: fast }).toEqual(expected);
    if ('key' in expected) {
      expect(parseKeyRequest(op, body)).toBe(expected.key);
    } else {
      expect(() => parseKeyRequest(op, body)).toThrow(BadRequestError);
      expect(() => parseKeyRequest(op, body)).toThrow(expected.error);
    }
  }
}

/** A small deterministic PRNG, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('fast key decoding (get/delete bodies)', () => {
  test('fast key - takes the compact {"key":"..."} body itself', () => {
    expect(fastKeyOf(enc('{"key":"key-00000042"}'))).toBe('key-00000042');
    expect(fastKeyOf(enc(JSON.stringify({ key: 'a b~!#$%&()*+,-./:;<=>?@[]^_`{|}' })))).toBe('a b~!#$%&()*+,-./:;<=>?@[]^_`{|}');
    expect(fastKeyOf(enc(`{"key":"${'k'.repeat(1024)}"}`))).toBe('k'.repeat(1024));
    // A view into a larger buffer (as NATS delivers bodies).
    const big = enc('xx{"key":"inner"}yy');
    expect(fastKeyOf(big.subarray(2, big.length - 2))).toBe('inner');
  });

  test('fast key - leaves every other shape to the full decoder', () => {
    for (const s of [
      '',
      '{}',
      '{"key":""}',
      `{"key":"${'k'.repeat(1025)}"}`,
      '{ "key":"a"}',
      '{"key": "a"}',
      '{"key":"a" }',
      '{"key":"a"}\n',
      '{"key":"a\\"b"}',
      '{"key":"a\\u0041"}',
      '{"key":"é"}',
      '{"key":"😀"}',
      '{"key":1}',
      '{"key":"a","extra":1}',
      '{"key":"a","key":"b"}',
      '{"Key":"a"}',
      '["key","a"]',
      '{"key":"a"',
      '{"key":"a"}}',
    ]) {
      expect(fastKeyOf(enc(s))).toBeUndefined();
      agrees(enc(s));
    }
  });

  test('fast key - every byte value, in a one-character key and inside a longer one', () => {
    const head = enc('{"key":"');
    const tail = enc('"}');
    for (let b = 0; b < 256; b++) {
      for (const key of [[b], [0x61, b, 0x62]]) {
        agrees(Buffer.concat([head, Uint8Array.from(key), tail]));
      }
    }
  });

  test('fast key - every byte value at every position of a valid body', () => {
    const base = enc('{"key":"abc"}');
    for (let pos = 0; pos < base.length; pos++) {
      for (let b = 0; b < 256; b++) {
        const body = Uint8Array.from(base);
        body[pos] = b;
        agrees(body);
      }
    }
  });

  test('fast key - key lengths around the limits', () => {
    for (const n of [0, 1, 2, 1023, 1024, 1025, 2000]) agrees(enc(`{"key":"${'x'.repeat(n)}"}`));
  });

  test('fast key - random bodies agree with the full decoder', () => {
    const next = rng(42);
    const alphabet = ['{', '}', '"', ':', ',', '\\', ' ', 'k', 'e', 'y', 'a', 'é', '\u0000', '\u007f', 'u', '0'];
    for (let i = 0; i < 3_000; i++) {
      // Mostly near-valid bodies: the valid shape with a few random edits.
      let s = `{"key":"${'ab'.repeat(Math.floor(next() * 4))}"}`;
      const edits = 1 + Math.floor(next() * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(next() * (s.length + 1));
        const ch = alphabet[Math.floor(next() * alphabet.length)];
        const kind = next();
        if (kind < 0.4) s = s.slice(0, at) + ch + s.slice(at);
        else if (kind < 0.7) s = s.slice(0, at) + s.slice(at + 1);
        else s = s.slice(0, at) + ch + s.slice(at + 1);
      }
      agrees(enc(s));
    }
  });
});
