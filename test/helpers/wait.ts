/**
 * Waits with a deadline of their own, well before jest's timeout, that say
 * what they waited for: a hang then fails naming its step instead of as a
 * bare test timeout. Deadlines, not counts of polls: on a loaded machine a
 * 5 ms timer can take far longer.
 */
export const WAIT_MS = 20_000;

/** Polls `cond` until it holds; fails naming `what` after `maxMs`. */
export async function until(cond: () => boolean, what: string, maxMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (!cond()) throw new Error(`gave up waiting for ${what}`);
}

/** `p`, or a failure naming `what` once `maxMs` have passed. */
export async function within<T>(p: Promise<T>, what: string, maxMs = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), maxMs);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Jest's timeout for a campaign of `rounds` rounds: the default test timeout
 * (jest.config.js) or `msPerRound` per round, whichever is longer, so that a
 * soak run with more rounds than the default (CAMPAIGN_ROUNDS=...) is not
 * cut short by a timeout sized for the default.
 */
export function campaignTimeout(rounds: number, msPerRound: number): number {
  return Math.max(60_000, rounds * msPerRound);
}
