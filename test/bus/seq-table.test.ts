import { InflightHandlers, SeqTable } from '../../bus/seq-table';

/** A small deterministic generator, so a failure can be replayed. */
function lcg(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
}

describe('SeqTable', () => {
  it('agrees with a Map through random adds and removes, across growing and shrinking', () => {
    const rand = lcg(7);
    const table = new SeqTable<string>();
    const model = new Map<number, string>();
    const live: number[] = [];
    // Collected, and checked with one expect each time: an expect per entry is most of the run time.
    const missing: number[] = [];
    const differ = (): number[] => [...model].filter(([k, v]) => table.get(k) !== v).map(([k]) => k);
    let next = 1;
    for (let step = 0; step < 200_000; step++) {
      // Phases: grow to thousands in flight, then drain to a few, so both resizes run many times.
      const phase = Math.floor(step / 20_000) % 2 === 0;
      if (live.length === 0 || rand(100) < (phase ? 70 : 30)) {
        // Mostly the next number; sometimes one far ahead (as after a long run), which collides with others.
        const seq = rand(10) === 0 ? next + 1024 * (1 + rand(8)) : next;
        next = Math.max(next, seq) + 1;
        table.set(seq, `v${seq}`);
        model.set(seq, `v${seq}`);
        live.push(seq);
      } else {
        const at = rand(live.length);
        const seq = live[at];
        live[at] = live[live.length - 1];
        live.pop();
        if (!table.delete(seq)) missing.push(seq);
        model.delete(seq);
      }
      if (step % 9973 === 0) {
        expect(table.size).toBe(model.size);
        expect(differ()).toEqual([]);
        expect(table.valuesArray().sort()).toEqual([...model.values()].sort());
      }
    }
    expect(missing).toEqual([]);
    expect(table.size).toBe(model.size);
    expect(differ()).toEqual([]);
  });

  it('answers undefined and false for numbers it does not hold, and replaces a value set twice', () => {
    const table = new SeqTable<string>();
    expect(table.get(5)).toBeUndefined();
    expect(table.delete(5)).toBe(false);
    table.set(5, 'a');
    table.set(5 + 64, 'b'); // the same home slot
    table.set(5, 'c');
    expect(table.size).toBe(2);
    expect(table.get(5)).toBe('c');
    expect(table.delete(5)).toBe(true);
    expect(table.get(5 + 64)).toBe('b');
    expect(table.get(Number.NaN)).toBeUndefined();
  });

  it('keeps numbers above 2^32 apart from those with the same low bits', () => {
    const table = new SeqTable<string>();
    const big = 2 ** 40 + 3;
    table.set(3, 'small');
    table.set(big, 'big');
    expect(table.get(3)).toBe('small');
    expect(table.get(big)).toBe('big');
    table.delete(3);
    expect(table.get(big)).toBe('big');
    expect(table.get(3)).toBeUndefined();
  });

  it('refuses a number that is not a positive integer', () => {
    const table = new SeqTable<string>();
    expect(() => table.set(0, 'x')).toThrow(RangeError);
    expect(() => table.set(1.5, 'x')).toThrow(RangeError);
    expect(table.size).toBe(0);
  });
});

describe('InflightHandlers', () => {
  it('is idle at once with nothing tracked, and once every tracked promise has settled', async () => {
    const inflight = new InflightHandlers();
    await inflight.idle();
    let resolveA!: () => void;
    let rejectB!: (err: Error) => void;
    const rejected: unknown[] = [];
    inflight.track(new Promise<void>((r) => (resolveA = r)), (err) => rejected.push(err));
    inflight.track(new Promise<void>((_, j) => (rejectB = j)), (err) => rejected.push(err));
    expect(inflight.size).toBe(2);
    let idle = false;
    const waiting = inflight.idle().then(() => {
      idle = true;
    });
    resolveA();
    await new Promise((r) => setImmediate(r));
    expect(idle).toBe(false);
    expect(inflight.size).toBe(1);
    const boom = new Error('boom');
    rejectB(boom);
    await waiting;
    expect(idle).toBe(true);
    expect(inflight.size).toBe(0);
    expect(rejected).toEqual([boom]);
  });
});
