/**
 * The Web Push subscriptions, kept in `<dataDir>/.tablekeeper/push-subscriptions.json`.
 * Every change is written durably before it is acknowledged (temp file,
 * fsync, rename, directory fsync), so an acknowledged subscription survives
 * a crash. Changes are serialised; a subscription is keyed by its endpoint.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import * as path from 'node:path';
import { BadRequestError, ConfigInvalidError, InternalError, nodeStoreFs } from '../store';

/** A browser's PushSubscription, as `PushSubscription.toJSON()` gives it. */
export interface PushSubscriptionRecord {
  endpoint: string;
  expirationTime?: number | null;
  keys: { p256dh: string; auth: string };
}

/** Most subscriptions kept; one more is refused rather than growing the file without bound. */
export const MAX_PUSH_SUBSCRIPTIONS = 1000;

/** The subscriptions file under a data directory. */
export function pushSubscriptionsPath(dataDir: string): string {
  return path.join(dataDir, '.tablekeeper', 'push-subscriptions.json');
}

/** See the module comment. */
export class PushSubscriptions {
  private readonly file: string;
  private readonly byEndpoint = new Map<string, PushSubscriptionRecord>();
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(file: string) {
    this.file = file;
  }

  /** Loads the file (none yet is an empty list). Throws `ConfigInvalidError` for an unreadable one. */
  static async open(dataDir: string): Promise<PushSubscriptions> {
    const store = new PushSubscriptions(pushSubscriptionsPath(dataDir));
    let text: string;
    try {
      text = await readFile(store.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return store;
      throw new ConfigInvalidError(`cannot read ${store.file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigInvalidError(`${store.file} is not valid JSON; fix or delete it: ${(err as Error).message}`, { cause: err });
    }
    const list = typeof parsed === 'object' && parsed !== null && Array.isArray((parsed as { subscriptions?: unknown }).subscriptions) ? (parsed as { subscriptions: unknown[] }).subscriptions : undefined;
    if (list === undefined) throw new ConfigInvalidError(`${store.file} has no subscriptions list; fix or delete it`);
    for (const s of list) {
      if (isRecord(s)) store.byEndpoint.set(s.endpoint, s);
    }
    return store;
  }

  /** The current subscriptions. */
  list(): PushSubscriptionRecord[] {
    return [...this.byEndpoint.values()];
  }

  /** Adds (or replaces, by endpoint) a subscription; resolves once it is durable. */
  add(sub: PushSubscriptionRecord): Promise<{ created: boolean }> {
    return this.change(() => {
      const created = !this.byEndpoint.has(sub.endpoint);
      if (created && this.byEndpoint.size >= MAX_PUSH_SUBSCRIPTIONS) {
        throw new BadRequestError(`at most ${MAX_PUSH_SUBSCRIPTIONS} push subscriptions are kept; unsubscribe one first`);
      }
      const record: PushSubscriptionRecord = { endpoint: sub.endpoint, keys: { p256dh: sub.keys.p256dh, auth: sub.keys.auth } };
      if (sub.expirationTime !== undefined) record.expirationTime = sub.expirationTime;
      this.byEndpoint.set(sub.endpoint, record);
      return { created };
    });
  }

  /** Removes the subscription with `endpoint`; resolves once that is durable. */
  remove(endpoint: string): Promise<{ removed: boolean }> {
    return this.change(() => ({ removed: this.byEndpoint.delete(endpoint) }));
  }

  private change<R>(apply: () => R): Promise<R> {
    const run = this.chain.then(async () => {
      const before = new Map(this.byEndpoint);
      const result = apply();
      try {
        await this.write();
      } catch (err) {
        // Not durable, so not applied: memory goes back to what the file holds.
        this.byEndpoint.clear();
        for (const [k, v] of before) this.byEndpoint.set(k, v);
        throw new InternalError(`could not save the push subscriptions: ${(err as Error).message}`, { cause: err });
      }
      return result;
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async write(): Promise<void> {
    const dir = path.dirname(this.file);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    // A leftover of a crashed write goes first: opened afresh with `wx`, the
    // file gets mode 0600 whatever mode the leftover had.
    await unlink(tmp).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(JSON.stringify({ subscriptions: this.list() }));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.file);
    await nodeStoreFs.syncDir(dir);
  }
}

function isRecord(v: unknown): v is PushSubscriptionRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  const keys = r.keys as Record<string, unknown> | undefined;
  return typeof r.endpoint === 'string' && typeof keys === 'object' && keys !== null && typeof keys.p256dh === 'string' && typeof keys.auth === 'string';
}
