/**
 * The checks both buses apply identically, so that a subject, queue name or
 * header that one bus rejects the other rejects too (nats.js itself only
 * rejects empty subjects and whitespace).
 */
import { BadRequestError } from '../store';
import { InvalidSubjectError } from './errors';
import type { Headers } from './bus';

const DOT = 0x2e;
const STAR = 0x2a;
const GT = 0x3e;

/** True for characters a subject token may not contain: ASCII controls, space, DEL. */
function isForbidden(c: number): boolean {
  return c <= 0x20 || c === 0x7f;
}

/**
 * The longest subject or subscription subject, in UTF-8 bytes.
 * nats-server closes the whole connection (not just the one message) when a
 * protocol line exceeds its `max_control_line` (4096 bytes by default), and a
 * PUB line also carries the reply subject and the sizes (a SUB line the
 * queue name): half of it is left for them. The in-process bus applies the same limit, so both refuse alike.
 */
export const MAX_SUBJECT_BYTES = 2048;
/** The longest queue name, in UTF-8 bytes: a SUB line carries it beside a subject of up to `MAX_SUBJECT_BYTES`. */
export const MAX_QUEUE_BYTES = 256;

/** Throws unless `s` fits in `max` bytes; counts bytes only when it might not. */
function checkLength(s: string, max: number, what: string): void {
  if (s.length * 3 <= max) return; // a UTF-16 unit is at most 3 UTF-8 bytes
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes > max) {
    throw new InvalidSubjectError(`${what} of ${bytes} bytes is longer than the limit of ${max} bytes (UTF-8)`);
  }
}

/**
 * Checks a subject or subscription pattern in one pass.
 * Tokens are non-empty; `*` and `>` are whole tokens only; `>` is last;
 * at most `MAX_SUBJECT_BYTES` long.
 */
function check(subject: string, wildcards: boolean, what: string): void {
  if (typeof subject !== 'string' || subject.length === 0) {
    throw new InvalidSubjectError(`${what} must be a non-empty string`);
  }
  checkLength(subject, MAX_SUBJECT_BYTES, what);
  let tokenStart = 0;
  let sawFullWildcard = false;
  const n = subject.length;
  for (let i = 0; i <= n; i++) {
    const c = i === n ? DOT : subject.charCodeAt(i);
    if (c === DOT) {
      const len = i - tokenStart;
      if (len === 0) throw new InvalidSubjectError(`${what} '${subject}' has an empty token`);
      if (sawFullWildcard) throw new InvalidSubjectError(`${what} '${subject}': '>' must be the last token`);
      if (len === 1) {
        const t = subject.charCodeAt(tokenStart);
        if (t === STAR || t === GT) {
          if (!wildcards) throw new InvalidSubjectError(`${what} '${subject}' may not contain wildcards`);
          sawFullWildcard = t === GT;
        }
      }
      tokenStart = i + 1;
    } else if (c === STAR || c === GT) {
      // A wildcard character is only legal as a whole token.
      const prev = i === tokenStart;
      const next = i + 1 === n || subject.charCodeAt(i + 1) === DOT;
      if (!(prev && next)) {
        throw new InvalidSubjectError(`${what} '${subject}': '${subject[i]}' must be a whole token`);
      }
    } else if (isForbidden(c)) {
      throw new InvalidSubjectError(`${what} '${subject}' contains whitespace or a control character`);
    }
  }
}

/** Throws `InvalidSubjectError` unless `subject` is a valid publish/request subject (no wildcards). */
export function checkSubject(subject: string): void {
  check(subject, false, 'subject');
}

/** Throws `InvalidSubjectError` unless `pattern` is a valid subscription subject (wildcards allowed). */
export function checkPattern(pattern: string): void {
  check(pattern, true, 'subscription subject');
}

/** True when `subject` is a valid publish subject. */
export function isValidSubject(subject: string): boolean {
  try {
    checkSubject(subject);
    return true;
  } catch {
    return false;
  }
}

/** Throws unless `queue` is a non-empty name without whitespace, at most `MAX_QUEUE_BYTES` long. */
export function checkQueue(queue: string): void {
  if (typeof queue !== 'string' || queue.length === 0) {
    throw new InvalidSubjectError('queue name must be a non-empty string');
  }
  checkLength(queue, MAX_QUEUE_BYTES, 'queue name');
  for (let i = 0; i < queue.length; i++) {
    if (isForbidden(queue.charCodeAt(i))) {
      throw new InvalidSubjectError(`queue name '${queue}' contains whitespace or a control character`);
    }
  }
}

/** True when the subscription tokens `pattern` match the subject tokens `subject`. */
export function tokensMatch(pattern: readonly string[], subject: readonly string[]): boolean {
  const n = pattern.length;
  for (let i = 0; i < n; i++) {
    const p = pattern[i];
    if (p === '>') return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== '*' && p !== subject[i]) return false;
  }
  return subject.length === n;
}

/**
 * Validates headers the way NATS does (name: printable ASCII without ':';
 * value: no CR or LF; values trimmed) and returns a frozen private copy, or
 * undefined when there are none.
 */
export function copyHeaders(headers: Record<string, string> | undefined): Headers | undefined {
  if (headers === undefined) return undefined;
  const out: Record<string, string> = {};
  let any = false;
  for (const name of Object.keys(headers)) {
    if (name.length === 0) throw new BadRequestError('header names must be non-empty');
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c <= 0x20 || c > 0x7e || c === 0x3a) {
        throw new BadRequestError(`header name '${name}' has an invalid character`);
      }
    }
    const value = headers[name];
    if (typeof value !== 'string') throw new BadRequestError(`header '${name}' must be a string`);
    if (/[\r\n]/.test(value)) throw new BadRequestError(`header '${name}' may not contain CR or LF`);
    out[name] = value.trim();
    any = true;
  }
  return any ? Object.freeze(out) : undefined;
}

const EMPTY = new Uint8Array(0);

/** A private copy of a body, so the sender may reuse its buffer at once. */
export function copyBody(data: Uint8Array | undefined): Uint8Array {
  if (data === undefined || data.length === 0) return EMPTY;
  if (!(data instanceof Uint8Array)) throw new BadRequestError('message body must be a Uint8Array');
  // A copy, so no two parties share bytes. Buffer.allocUnsafe takes small
  // bodies from Node's shared pool instead of giving each its own
  // ArrayBuffer, which is most of the cost of a copy on the hot path.
  const copy = Buffer.allocUnsafe(data.length);
  copy.set(data);
  return copy;
}

/** True for promises and other thenables (an async handler's result). */
export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** Default bound on how long `drain()` waits for in-flight handlers. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

/** Resolves true when `p` settles within `ms`, false when the time runs out first. */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<boolean>((resolve) => {
    timer = setTimeout(resolve, ms, false);
  });
  const done = p.then(
    () => true,
    () => true,
  );
  return Promise.race([done, expired]).finally(() => clearTimeout(timer));
}

/** The decimal number at `start` in `subject` (-1 if there is none); no string is allocated. */
export function parseSeq(subject: string, start: number): number {
  let n = 0;
  if (start >= subject.length) return -1;
  for (let i = start; i < subject.length; i++) {
    const d = subject.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Longest timeout Node timers accept (about 24.8 days). */
const MAX_TIMEOUT_MS = 2_147_483_647;

/** Throws `BadRequestError` unless `ms` is a usable request timeout. */
export function checkTimeout(ms: number): void {
  if (!(ms > 0 && ms <= MAX_TIMEOUT_MS)) {
    throw new BadRequestError(`timeoutMs must be a number of milliseconds in 1..${MAX_TIMEOUT_MS}`);
  }
}
