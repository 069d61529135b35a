/**
 * Request timeouts without a Node timer per request.
 *
 * Entries are kept in one doubly linked list per timeout length. Within a
 * list every entry was added later than the one before it with the same
 * length, so deadlines never decrease from head to tail: only the head needs
 * a timer. Adding and removing are O(1) and allocate nothing; each list owns
 * one Node timer, re-armed when it fires and unref'd while the list is empty
 * (so an idle bus never keeps the process alive).
 */

/** Something with a deadline. The fields are owned by `RequestTimers`. */
export interface TimedEntry {
  deadline: number;
  timedPrev: TimedEntry | undefined;
  timedNext: TimedEntry | undefined;
  timedList: TimerList | undefined;
  /** Called once when the deadline passes; the entry is already removed. */
  expire(): void;
}

/** One list of entries that share a timeout length. */
export class TimerList {
  head: TimedEntry | undefined = undefined;
  tail: TimedEntry | undefined = undefined;
  timer: NodeJS.Timeout | undefined = undefined;
  /** When the timer will fire (clock time), if armed. */
  firesAt = 0;

  constructor(
    readonly ms: number,
    readonly owner: RequestTimers,
  ) {}
}

/** A monotonic clock in milliseconds. */
export type MonotonicClock = () => number;

/** Deadlines for in-flight requests; see the file comment. */
export class RequestTimers {
  private readonly lists = new Map<number, TimerList>();
  private closed = false;

  constructor(private readonly now: MonotonicClock = () => performance.now()) {}

  /** Starts timing `entry`; `expire()` runs after `ms` unless `remove` comes first. */
  add(entry: TimedEntry, ms: number): void {
    if (this.closed) return;
    let list = this.lists.get(ms);
    if (list === undefined) {
      list = new TimerList(ms, this);
      this.lists.set(ms, list);
    }
    entry.deadline = this.now() + ms;
    entry.timedList = list;
    entry.timedNext = undefined;
    entry.timedPrev = list.tail;
    if (list.tail === undefined) {
      list.head = entry;
      list.tail = entry;
      this.arm(list);
    } else {
      list.tail.timedNext = entry;
      list.tail = entry;
    }
  }

  /** Stops timing `entry`; harmless if it is not timed. */
  remove(entry: TimedEntry): void {
    const list = entry.timedList;
    if (list === undefined) return;
    const { timedPrev: prev, timedNext: next } = entry;
    if (prev === undefined) list.head = next;
    else prev.timedNext = next;
    if (next === undefined) list.tail = prev;
    else next.timedPrev = prev;
    entry.timedPrev = undefined;
    entry.timedNext = undefined;
    entry.timedList = undefined;
    // An empty list's timer may still fire (it then finds nothing), but it
    // must not hold the process open meanwhile.
    if (list.head === undefined && list.timer !== undefined) list.timer.unref();
  }

  /** Cancels every timer; pending entries never expire. */
  close(): void {
    this.closed = true;
    for (const list of this.lists.values()) {
      if (list.timer !== undefined) clearTimeout(list.timer);
      list.timer = undefined;
      let e = list.head;
      while (e !== undefined) {
        const next = e.timedNext;
        e.timedPrev = e.timedNext = e.timedList = undefined;
        e = next;
      }
      list.head = list.tail = undefined;
    }
    this.lists.clear();
  }

  /** Makes sure the list's timer fires no later than its head's deadline. */
  private arm(list: TimerList): void {
    const head = list.head;
    if (head === undefined) return;
    if (list.timer !== undefined && list.firesAt <= head.deadline) {
      list.timer.ref();
      return;
    }
    if (list.timer !== undefined) clearTimeout(list.timer);
    const delay = Math.max(0, head.deadline - this.now());
    list.firesAt = this.now() + delay;
    // +1: Node may fire a timer a fraction of a millisecond early.
    list.timer = setTimeout(RequestTimers.onFire, Math.ceil(delay) + 1, list);
  }

  private static onFire(this: void, list: TimerList): void {
    list.timer = undefined;
    list.owner.fire(list);
  }

  private fire(list: TimerList): void {
    const now = this.now();
    let e = list.head;
    while (e !== undefined && e.deadline <= now) {
      this.remove(e);
      e.expire();
      e = list.head;
    }
    if (!this.closed) this.arm(list);
  }
}
