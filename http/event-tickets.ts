/**
 * One-time tickets for the event stream. A browser's EventSource cannot send
 * an `Authorization` header, so the dashboard first asks
 * `POST /api/events/ticket` (with its token) for a ticket and opens
 * `/api/events?ticket=...`. A ticket is random, valid for a short while,
 * and used at most once, so the long-lived token never appears in a URL.
 */
import { randomBytes } from 'node:crypto';
import type { Grant } from './auth';

/** Settings of `EventTickets`. */
export interface EventTicketsOptions {
  /** Milliseconds a ticket stays valid; default 30 000. */
  ttlMs?: number;
  now?: () => number;
  /** Outstanding tickets at most; the oldest are dropped first. Default 1000. */
  max?: number;
}

/** Issues and redeems one-time tickets. */
export class EventTickets {
  private readonly tickets = new Map<string, { grant: Grant; expiresAt: number }>();
  readonly ttlMs: number;
  private readonly now: () => number;
  private readonly max: number;

  constructor(opts: EventTicketsOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.now = opts.now ?? Date.now;
    this.max = opts.max ?? 1000;
  }

  /** A new ticket carrying `grant`. */
  issue(grant: Grant): string {
    this.prune();
    while (this.tickets.size >= this.max) {
      const oldest = this.tickets.keys().next();
      if (oldest.done === true) break;
      this.tickets.delete(oldest.value);
    }
    const ticket = randomBytes(24).toString('base64url');
    this.tickets.set(ticket, { grant, expiresAt: this.now() + this.ttlMs });
    return ticket;
  }

  /** The grant of a valid ticket, which is used up; `none` for an unknown, used or expired one. */
  redeem(ticket: string): Grant {
    const entry = this.tickets.get(ticket);
    if (entry === undefined) return 'none';
    this.tickets.delete(ticket);
    return entry.expiresAt > this.now() ? entry.grant : 'none';
  }

  private prune(): void {
    const now = this.now();
    for (const [ticket, entry] of this.tickets) if (entry.expiresAt <= now) this.tickets.delete(ticket);
  }
}
