/**
 * A token bucket per client address for admin mutations (compact, backup,
 * restore): each client may make `burst` of them at once, refilled at
 * `perMinute`. The clock is injected so that tests move time themselves.
 */

/** Settings of `TokenBucketLimiter`. */
export interface RateLimitOptions {
  burst: number;
  perMinute: number;
  /** Milliseconds; default `Date.now`. */
  now?: () => number;
  /** Clients remembered at most; full buckets are forgotten first. Default 10 000. */
  maxClients?: number;
}

/** The outcome of `take`: allowed, or the seconds until a token is back. */
export type RateDecision = { allowed: true } | { allowed: false; retryAfterS: number };

interface Bucket {
  tokens: number;
  at: number;
}

/** Per-client token buckets. */
export class TokenBucketLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly burst: number;
  private readonly perMs: number;
  private readonly now: () => number;
  private readonly maxClients: number;

  constructor(opts: RateLimitOptions) {
    if (!(opts.burst >= 1) || !(opts.perMinute > 0)) throw new RangeError('rate limit: burst >= 1 and perMinute > 0');
    this.burst = opts.burst;
    this.perMs = opts.perMinute / 60_000;
    this.now = opts.now ?? Date.now;
    this.maxClients = opts.maxClients ?? 10_000;
  }

  /** Takes one token for `client` if it has one. */
  take(client: string): RateDecision {
    const now = this.now();
    const bucket = this.refilled(client, now);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true };
    }
    return { allowed: false, retryAfterS: Math.max(1, Math.ceil((1 - bucket.tokens) / this.perMs / 1000)) };
  }

  private refilled(client: string, now: number): Bucket {
    let bucket = this.buckets.get(client);
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxClients) this.forgetFull(now);
      bucket = { tokens: this.burst, at: now };
      this.buckets.set(client, bucket);
      return bucket;
    }
    // A clock that steps back adds nothing.
    const elapsed = Math.max(0, now - bucket.at);
    bucket.tokens = Math.min(this.burst, bucket.tokens + elapsed * this.perMs);
    bucket.at = now;
    return bucket;
  }

  /** Drops buckets that have refilled completely: forgetting them changes nothing. */
  private forgetFull(now: number): void {
    for (const [client, b] of this.buckets) {
      if (b.tokens + Math.max(0, now - b.at) * this.perMs >= this.burst) this.buckets.delete(client);
    }
    // Still full of busy clients: drop the oldest, which only ever gives one of them more room.
    while (this.buckets.size >= this.maxClients) {
      const oldest = this.buckets.keys().next();
      if (oldest.done === true) break;
      this.buckets.delete(oldest.value);
    }
  }
}
