/**
 * The notifier: subscribes to `backups.>`, turns the selected events into
 * notifications (see notification.ts) and hands each to its channels: one
 * delivery queue per webhook URL (in order) and one for the Web Push
 * subscribers. Handling an event only queues work, so the bus handler
 * returns at once whatever the receivers do. `notifierMachine` drives it:
 * `running` (subscribed) -> `flushing` (unsubscribed, queues delivered
 * within a bound) -> `stopped`.
 */
import type { Logger } from 'pino';
import { fromCallback, fromPromise, setup } from 'xstate';
import { decodeJson, type Bus, type Subjects } from '../bus';
import type { Clock, NotifyConfig, NotifyEvent } from '../supervisor';
import { DeliveryQueue, type DeliveryOutcome } from './delivery-queue';
import { toNotification, withoutData, type Notification } from './notification';
import { MAX_PUSH_SUBSCRIPTIONS, type PushSubscriptions } from './push-subscriptions';

/** At most this many Web Push deliveries wait at once (about 100 notifications to 1000 subscribers). */
const PUSH_QUEUE_MAX_ITEMS = 100_000;
/**
 * Bytes of payload one webhook's queue holds at most, besides its
 * `queueSize` notifications. The service's own events are a few KiB (a
 * recovery's at most ~100 KiB, with 100 lost keys), but the notifier takes
 * whatever is published on `backups.>`, up to the server's `max_payload`.
 */
export const WEBHOOK_QUEUE_MAX_BYTES = 16 * 1024 * 1024;
import { loggableEndpoint, sendWebPush, webPushSend, type SendPush, type VapidKeys, type WebPushItem } from './web-push';
import { loggableUrl, postWebhook, undiciPost, webhookItem, type HttpPost, type WebhookItem } from './webhook';

/** A notification channel, as counted in metrics. */
export type NotifyChannel = 'webhook' | 'webpush';

/** Told of every settled delivery. */
export type NotifyOutcomeListener = (channel: NotifyChannel, outcome: DeliveryOutcome) => void;

/** What a `Notifier` needs; `post` and `webPush.send` default to undici and web-push. */
export interface NotifierOptions {
  config: NotifyConfig;
  subjects: Subjects;
  logger: Logger;
  clock: Clock;
  post?: HttpPost;
  /** Absent when Web Push is disabled. */
  webPush?: { keys: VapidKeys; subject: string; subscriptions: PushSubscriptions; send?: SendPush };
  /** Backoff before the second attempt, doubling after; default 1000 ms, at most 60 s. */
  baseBackoffMs?: number;
}

/** See the module comment. */
export class Notifier {
  private readonly opts: NotifierOptions;
  private readonly enabled: ReadonlySet<NotifyEvent>;
  private readonly webhooks: DeliveryQueue<WebhookItem>[];
  private readonly pushes: DeliveryQueue<WebPushItem> | undefined;
  private readonly listeners = new Set<NotifyOutcomeListener>();
  // Removals of gone push subscriptions still being written (see close).
  private readonly removals = new Set<Promise<void>>();
  private readonly log: Logger;

  constructor(opts: NotifierOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.enabled = new Set(opts.config.events);
    const { config, clock } = opts;
    const common = { clock, logger: this.log, capacity: config.queueSize, maxAttempts: config.maxAttempts, timeoutMs: config.timeoutMs, baseBackoffMs: opts.baseBackoffMs };
    const post = opts.post ?? undiciPost;
    this.webhooks = config.webhooks.map(
      (target) =>
        new DeliveryQueue<WebhookItem>({
          ...common,
          channel: 'webhook',
          target: loggableUrl(target.url),
          maxBytes: WEBHOOK_QUEUE_MAX_BYTES,
          sizeOf: (item) => item.payload.length,
          attempt: (item, _n, signal) => postWebhook(post, target, item, clock.now(), signal),
          onOutcome: (_item, outcome) => this.emit('webhook', outcome),
          describe: (item) => ({ event: item.notification.event, table: item.notification.table, delivery: item.delivery }),
        }),
    );
    const wp = opts.webPush;
    if (wp !== undefined) {
      const send = wp.send ?? webPushSend;
      this.pushes = new DeliveryQueue<WebPushItem>({
        ...common,
        // One item per subscriber of each notification: room for `queueSize`
        // notifications to every subscriber, so that a second notification
        // does not push the first one's deliveries out (within a hard bound).
        capacity: Math.min(config.queueSize * MAX_PUSH_SUBSCRIPTIONS, PUSH_QUEUE_MAX_ITEMS),
        channel: 'webpush',
        target: 'subscribers',
        // Subscribers are independent: one slow push service must not hold up the others.
        concurrency: 4,
        attempt: (item) => sendWebPush(send, item, { subject: wp.subject, keys: wp.keys }, config.timeoutMs),
        onOutcome: (item, outcome) => {
          if (outcome === 'gone') {
            const removal = wp.subscriptions.remove(item.subscription.endpoint).then(
              () => undefined,
              (err: unknown) =>
                this.log.error({ op: 'notify', channel: 'webpush', endpoint: loggableEndpoint(item.subscription.endpoint), err }, 'could not remove a gone push subscription'),
            );
            // close() waits for it: the process may exit right after.
            this.removals.add(removal);
            void removal.finally(() => this.removals.delete(removal));
          }
          this.emit('webpush', outcome);
        },
        describe: (item) => ({ event: item.notification.event, table: item.notification.table, endpoint: loggableEndpoint(item.subscription.endpoint) }),
      });
    }
  }

  /** Adds a listener of settled deliveries (metrics); returns its removal. */
  onOutcome(listener: NotifyOutcomeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Handles one `backups.*` message: decodes, selects, queues. Never throws. */
  handleMessage(subject: string, data: Uint8Array): void {
    const root = this.opts.subjects.allBackupEvents().slice(0, -1);
    const name = subject.startsWith(root) ? subject.slice(root.length) : subject;
    let body: unknown;
    try {
      body = decodeJson(data);
    } catch (err) {
      this.log.warn({ op: 'notify', event: name, err }, 'unreadable event; not notified');
      return;
    }
    const record = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
    const n = toNotification(name, subject, record, this.enabled, new Date(this.opts.clock.now()).toISOString());
    if (n !== undefined) this.notify(n);
  }

  /** Queues `n` on every channel. */
  notify(n: Notification): void {
    this.log.info({ op: 'notify', event: n.event, table: n.table, webhooks: this.webhooks.length }, 'notifying');
    for (const q of this.webhooks) q.push(webhookItem(n));
    if (this.pushes !== undefined && this.opts.webPush !== undefined) {
      // A push carries the title and text, never the event body: the queued items (one per subscriber) do not keep it.
      const notification = withoutData(n);
      for (const subscription of this.opts.webPush.subscriptions.list()) this.pushes.push({ notification, subscription });
    }
  }

  /** Delivers what is queued within `deadlineMs` (all channels at once), then drops the rest. */
  async close(deadlineMs: number): Promise<void> {
    const queues: { close(ms: number): Promise<number> }[] = [...this.webhooks, ...(this.pushes ? [this.pushes] : [])];
    const dropped = (await Promise.all(queues.map((q) => q.close(deadlineMs)))).reduce((a, b) => a + b, 0);
    if (dropped > 0) this.log.warn({ op: 'notify', dropped, deadlineMs }, 'notifier stopped with undelivered notifications');
    // Removals of gone subscriptions, durable before the process may exit (the queues are closed: no new ones).
    await Promise.all([...this.removals]);
  }

  private emit(channel: NotifyChannel, outcome: DeliveryOutcome): void {
    for (const l of this.listeners) {
      try {
        l(channel, outcome);
      } catch (err) {
        this.log.error({ op: 'notify', err }, 'notification listener failed');
      }
    }
  }
}

/** What `notifierMachine` runs. */
export interface NotifierMachineInput {
  notifier: Notifier;
  bus: Bus;
  subjects: Subjects;
  /** Bound on the shutdown flush; default 5000 ms. */
  flushMs?: number;
}

/** `running` (subscribed to `backups.>`) until `STOP`; then `flushing` the queues; then `stopped` (final). */
export const notifierMachine = setup({
  types: { input: {} as NotifierMachineInput, context: {} as NotifierMachineInput, events: {} as { type: 'STOP' } },
  actors: {
    subscribe: fromCallback<{ type: 'STOP' }, NotifierMachineInput>(({ input }) => {
      const sub = input.bus.subscribe(input.subjects.allBackupEvents(), (msg) => input.notifier.handleMessage(msg.subject, msg.data));
      return () => sub.unsubscribe();
    }),
    flush: fromPromise<void, NotifierMachineInput>(({ input }) => input.notifier.close(input.flushMs ?? 5000)),
  },
}).createMachine({
  id: 'notifier',
  context: ({ input }) => input,
  initial: 'running',
  states: {
    running: {
      invoke: { src: 'subscribe', input: ({ context }) => context },
      on: { STOP: 'flushing' },
    },
    flushing: {
      invoke: {
        src: 'flush',
        input: ({ context }) => context,
        onDone: 'stopped',
        // close() does not reject; should it, stopping must still finish.
        onError: 'stopped',
      },
    },
    stopped: { type: 'final' },
  },
});
