import { RequestTimers, type TimedEntry, type TimerList } from '../../bus/request-timers';

class Entry implements TimedEntry {
  deadline = 0;
  timedPrev: TimedEntry | undefined;
  timedNext: TimedEntry | undefined;
  timedList: TimerList | undefined;
  constructor(
    readonly name: string,
    private readonly expired: string[],
  ) {}
  expire(): void {
    this.expired.push(this.name);
  }
}

describe('request timers', () => {
  let now: number;
  beforeEach(() => {
    jest.useFakeTimers();
    now = 0;
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  const advance = (ms: number): void => {
    now += ms;
    jest.advanceTimersByTime(ms);
  };

  test('request timers - entries expire in deadline order; removed ones never', () => {
    const expired: string[] = [];
    const timers = new RequestTimers(() => now);
    const [a, b, c] = ['a', 'b', 'c'].map((n) => new Entry(n, expired));
    timers.add(a, 100);
    advance(10);
    timers.add(b, 100);
    timers.add(c, 30);
    timers.remove(b);
    advance(40);
    expect(expired).toEqual(['c']);
    advance(60);
    expect(expired).toEqual(['c', 'a']);
    advance(1000);
    expect(expired).toEqual(['c', 'a']);
  });

  test('request timers - close cancels everything', () => {
    const expired: string[] = [];
    const timers = new RequestTimers(() => now);
    timers.add(new Entry('a', expired), 50);
    timers.close();
    advance(100);
    expect(expired).toEqual([]);
    expect(jest.getTimerCount()).toBe(0);
  });

  test('request timers - a list that empties does not lose later entries', () => {
    const expired: string[] = [];
    const timers = new RequestTimers(() => now);
    const a = new Entry('a', expired);
    timers.add(a, 50);
    timers.remove(a);
    advance(20);
    timers.add(new Entry('b', expired), 50);
    advance(49);
    expect(expired).toEqual([]);
    advance(2);
    expect(expired).toEqual(['b']);
  });
});
