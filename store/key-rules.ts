/**
 * The key rules, checked on every write: a non-empty string of at most 1024
 * UTF-8 bytes with no lone UTF-16 surrogates.
 */
import { KeyInvalidError } from './errors';
import { MAX_KEY_BYTES } from './format';

// Matches a lone (unpaired) UTF-16 surrogate, which UTF-8 cannot represent.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Checks the key rules and returns the key's UTF-8 length. Lone surrogates
 * are refused because they would not survive the round trip through the file
 * (UTF-8 stores them as U+FFFD). Throws KeyInvalidError with the reason.
 */
export function validateKey(key: unknown): number {
  if (typeof key !== 'string') throw new KeyInvalidError(`key must be a string, got ${typeof key}`);
  if (key.length === 0) throw new KeyInvalidError('key must not be empty');
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes > MAX_KEY_BYTES) {
    throw new KeyInvalidError(`key is ${bytes} bytes in UTF-8; the limit is ${MAX_KEY_BYTES}`, {
      details: { bytes, max: MAX_KEY_BYTES },
    });
  }
  // Pure ASCII (bytes === length) cannot hold surrogates: skip the regex on the common path.
  if (bytes !== key.length && LONE_SURROGATE.test(key)) {
    throw new KeyInvalidError('key contains a lone UTF-16 surrogate, which UTF-8 cannot store');
  }
  return bytes;
}
