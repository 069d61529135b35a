/**
 * Where a member's value lies in a JSON object's text, so that a put can
 * store the value exactly as the client wrote it. Parsing and writing it
 * again would change it: integers beyond 2^53 lose digits
 * (12345678901234567890 comes back as 12345678901234567000), `1.0` becomes
 * `1`, `1e2` becomes `100`.
 *
 * Only for a text that JSON.parse has accepted: the scan relies on it being
 * valid JSON and checks nothing. It works on UTF-8 bytes: every byte it looks
 * for is ASCII, and no byte of a multi-byte character is.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipSpace(d: Uint8Array, i: number): number {
  while (i < d.length && isSpace(d[i])) i++;
  return i;
}

/** Index after the string whose opening quote is at `i`. */
function skipString(d: Uint8Array, i: number): number {
  let j = i + 1;
  while (d[j] !== QUOTE) j += d[j] === BACKSLASH ? 2 : 1;
  return j + 1;
}

/** Index after the value that starts at `i`. */
function skipValue(d: Uint8Array, i: number): number {
  const c = d[i];
  if (c === QUOTE) return skipString(d, i);
  if (c === OPEN_BRACE || c === OPEN_BRACKET) {
    let depth = 0;
    for (let j = i; ; ) {
      const b = d[j];
      if (b === QUOTE) {
        j = skipString(d, j);
        continue;
      }
      if (b === OPEN_BRACE || b === OPEN_BRACKET) depth++;
      else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) return j + 1;
      }
      j++;
    }
  }
  // A number, true, false or null: up to the next delimiter.
  let j = i;
  while (j < d.length && d[j] !== COMMA && d[j] !== CLOSE_BRACE && d[j] !== CLOSE_BRACKET && !isSpace(d[j])) j++;
  return j;
}

/** True when the member name whose text (quotes included) is d[start, end) is `name`. */
function nameIs(d: Uint8Array, start: number, end: number, name: string): boolean {
  for (let i = start + 1; i < end - 1; i++) {
    // An escape (`"val\u0075e"`): let JSON.parse say what the name is.
    if (d[i] === BACKSLASH) return JSON.parse(Buffer.from(d.buffer, d.byteOffset + start, end - start).toString('utf8')) === name;
  }
  if (end - start - 2 !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (d[start + 1 + i] !== name.charCodeAt(i)) return false;
  return true;
}

/**
 * [start, end) of the text of the value of the top-level member `name` (an
 * ASCII name) of the JSON object in `data`, without the whitespace around
 * it; the last one when the name appears more than once, the one JSON.parse
 * keeps. Undefined when `data` is not an object or has no such member.
 * `data` must be a text JSON.parse accepts.
 */
export function jsonMemberSpan(data: Uint8Array, name: string): [number, number] | undefined {
  let i = skipSpace(data, 0);
  if (data[i] !== OPEN_BRACE) return undefined;
  i = skipSpace(data, i + 1);
  if (data[i] === CLOSE_BRACE) return undefined;
  let found: [number, number] | undefined;
  for (;;) {
    const nameEnd = skipString(data, i);
    const wanted = nameIs(data, i, nameEnd, name);
    // Past the colon.
    i = skipSpace(data, skipSpace(data, nameEnd) + 1);
    const valueEnd = skipValue(data, i);
    if (wanted) found = [i, valueEnd];
    i = skipSpace(data, valueEnd);
    if (data[i] !== COMMA) return found;
    i = skipSpace(data, i + 1);
  }
}
