/**
 * Bearer-token checks. The admin token grants every route; the optional
 * read token grants only the observing ones (admin health and history, the
 * event stream, metrics). Tokens are compared in constant time: both sides
 * are hashed to equal-length SHA-256 digests and compared with
 * `timingSafeEqual`, so neither the content nor the length leaks through
 * timing. The token itself is never logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { HttpError } from './error-status';

/** What a route needs: any valid token (`read`) or the admin token (`admin`). */
export type Access = 'read' | 'admin';

/** What a presented token turned out to grant. */
export type Grant = 'admin' | 'read' | 'none';

/** What a request presented: nothing, a bearer token, or an event-stream ticket. */
export type Credential = 'none' | 'token' | 'ticket';

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** True when `given` equals `expected`, in time independent of where they differ. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m === null ? undefined : m[1];
}

/** Checks tokens against the admin token and the optional read token. */
export class TokenAuth {
  private readonly admin: Buffer;
  private readonly read: Buffer | undefined;

  constructor(adminToken: string, readToken?: string) {
    if (adminToken === '') throw new Error('the admin token must not be empty');
    this.admin = digest(adminToken);
    this.read = readToken === undefined || readToken === '' ? undefined : digest(readToken);
  }

  /** What `token` grants. Both comparisons always run, so timing says nothing about which matched. */
  grantOf(token: string | undefined): Grant {
    const d = digest(token ?? '');
    const isAdmin = timingSafeEqual(d, this.admin);
    const isRead = this.read !== undefined && timingSafeEqual(d, this.read);
    if (token === undefined) return 'none';
    return isAdmin ? 'admin' : isRead ? 'read' : 'none';
  }

  /**
   * Throws `HttpError('UNAUTHORIZED')` unless `grant` allows `access`;
   * `presented` is what the request carried, which the message names.
   */
  static require(grant: Grant, access: Access, presented: Credential): void {
    if (grant === 'admin' || (grant === 'read' && access === 'read')) return;
    if (presented === 'none') throw new HttpError('UNAUTHORIZED', 'this route needs an Authorization: Bearer token');
    if (grant === 'read') throw new HttpError('UNAUTHORIZED', 'the read-only token does not grant this route');
    // A used or expired ticket is the usual case (an EventSource retrying with the ticket it had).
    if (presented === 'ticket') throw new HttpError('UNAUTHORIZED', 'the ticket is not valid: each works once, and only shortly; ask POST /api/events/ticket for a new one');
    throw new HttpError('UNAUTHORIZED', 'the bearer token is not valid');
  }
}
