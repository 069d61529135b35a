/**
 * The whole service under injected file-system faults: a seeded campaign of
 * concurrent puts and deletes over the bus, with compactions and backups
 * asked for between them, while chosen calls of the table's file system fail.
 * The owner's file fails and the supervisor restarts it; requests meanwhile
 * must be answered (never a timeout), and after each round, once the faults
 * are healed and the table serves again, every key must hold what the
 * answers allow: an acknowledged write unless a later one replaced it, never
 * a write refused as not done, and a write whose error said it "may be
 * there" either way. Finally a restart on the real disk must find the same.
 */
import pino from 'pino';
import { decodeJson, encodeJson, jsonMemberSpan, type Bus } from '../../bus';
import { startService, type RunningService } from '../../cli';
import type { StoreFsOp } from '../../store';
import { loadConfig, type Config } from '../../supervisor';
import { FaultyFs, type Fault } from '../helpers/store-faulty-fs';
import { SeededRandom } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';
import { campaignTimeout, WAIT_MS } from '../helpers/wait';

const tmp = useTempDir('tk-svcfaults-');
const ROUNDS = Number(process.env.CAMPAIGN_ROUNDS ?? 40);
const KEYS = 24;
const FAULT_OPS: readonly StoreFsOp[] = ['write', 'write', 'fdatasync', 'fdatasync', 'truncate', 'rename', 'syncDir', 'read', 'readSync', 'open'];

type Outcome = 'acked' | 'refused' | 'unknown' | 'pending';

/** Per key, the writes issued and what their answers said. */
class Model {
  private readonly ops = new Map<string, { value: string | undefined; outcome: Outcome }[]>();

  /** Notes a write when it is sent (the order the owner applies them in); its answer fills in the outcome. */
  issue(key: string, value: string | undefined): { outcome: Outcome } {
    const op = { value, outcome: 'pending' as Outcome };
    const list = this.ops.get(key) ?? [];
    list.push(op);
    this.ops.set(key, list);
    return op;
  }

  /** Values the key may hold: that of its last acknowledged write, or of a write of unknown fate after it. */
  allowed(key: string): (string | undefined)[] {
    const list = this.ops.get(key) ?? [];
    const out: (string | undefined)[] = [];
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].outcome === 'acked') return [...out, list[i].value];
      if (list[i].outcome === 'unknown') out.push(list[i].value);
    }
    return [...out, undefined];
  }

  settle(key: string, value: string | undefined): void {
    this.ops.set(key, [{ value, outcome: 'acked' }]);
  }
}

function config(dir: string): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: dir, TABLEKEEPER_LOG_LEVEL: 'silent', TABLEKEEPER_HTTP_PORT: '0' } });
  return {
    ...base,
    tables: [{ name: 'fz', sync: 'always', maxValueBytes: 64 * 1024 }],
    // Restarts never give up here (every round heals its faults), and a short window keeps their backoff short.
    supervisor: { ...base.supervisor, maxRestarts: 1000, restartWindowMs: 500, requestTimeoutMs: 15_000 },
  };
}

/** What an error answer says of the write: refused (not done), or of unknown fate. */
function fateOf(reply: { error?: { code: string; message: string } }): Outcome {
  return reply.error?.message.includes('may be there') ? 'unknown' : 'refused';
}

const key = (i: number) => `key-${i}`;

/** The JSON text of the key's value, or undefined; throws when the table does not answer it. */
async function read(bus: Bus, k: string): Promise<string | undefined> {
  const reply = await bus.request('tables.fz.get', encodeJson({ key: k }), { timeoutMs: WAIT_MS });
  const body = decodeJson(reply.data) as { found?: boolean; error?: unknown };
  if (body.error !== undefined) throw new Error(`get ${k}: ${JSON.stringify(body.error)}`);
  if (body.found !== true) return undefined;
  const span = jsonMemberSpan(reply.data, 'value')!;
  return Buffer.from(reply.data).toString('utf8', span[0], span[1]);
}

/** Waits until the table answers reads again (its owner may be restarting or recovering). */
async function serving(bus: Bus, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      await read(bus, key(0));
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`gave up waiting for the table to serve (${what}): ${String(err)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

describe('service under file-system faults', () => {
  let service: RunningService | undefined;
  afterEach(async () => {
    await service?.stop();
    service = undefined;
  });

  test(`service faults - ${ROUNDS} seeded rounds: every request is answered, and the table holds what the answers allow, also after a restart`, async () => {
    const ffs = new FaultyFs();
    service = await startService(config(tmp.dir), pino({ level: 'silent' }), { fs: ffs });
    const bus = service.bus;
    await serving(bus, 'start');
    const model = new Model();
    let next = 0;
    const seen: Record<string, number> = {};
    for (let round = 0; round < ROUNDS; round++) {
      const r = new SeededRandom(Number(process.env.CAMPAIGN_SEED ?? 1) + round);
      // Every third round or so, a failed write whose rollback fails too (the owner's file fails then).
      if (r.int(3) === 0) ffs.failOn({ op: r.pick(['write', 'fdatasync'] as const), nth: 1 + r.int(10) }).failOn({ op: 'truncate', nth: 1, sticky: r.int(3) === 0 });
      for (let f = 0; f < 1 + r.int(2); f++) {
        const op = r.pick(FAULT_OPS);
        const fault: Fault = { op, nth: 1 + r.int(10), sticky: r.int(8) === 0 };
        if (op === 'write' && r.int(2) === 0) fault.partialBytes = r.int(300);
        ffs.failOn(fault);
      }
      for (let wave = 0; wave < 4; wave++) {
        const requests: Promise<void>[] = [];
        for (let i = 0; i < 12; i++) {
          const k = key(r.int(KEYS));
          const del = r.int(4) === 0;
          const value = del ? undefined : JSON.stringify(`v${next++}`);
          const body = del ? { key: k } : { key: k, value: JSON.parse(value!) as string };
          const op = model.issue(k, value);
          requests.push(
            bus.request(`tables.fz.${del ? 'delete' : 'put'}`, encodeJson(body), { timeoutMs: WAIT_MS }).then((m) => {
              const reply = decodeJson(m.data) as { ok?: boolean; deleted?: boolean; error?: { code: string; message: string } };
              // A delete of a missing key writes nothing.
              op.outcome = reply.ok === true || reply.deleted === true ? 'acked' : reply.deleted === false ? 'refused' : fateOf(reply);
              seen[reply.error?.code ?? op.outcome] = (seen[reply.error?.code ?? op.outcome] ?? 0) + 1;
            }),
          );
        }
        const admin = r.int(5);
        if (admin === 0) requests.push(bus.request('admin.compact.fz', encodeJson({ force: true }), { timeoutMs: WAIT_MS }).then(() => undefined));
        if (admin === 1) requests.push(bus.request('admin.backup.fz', encodeJson({}), { timeoutMs: WAIT_MS }).then(() => undefined));
        // A request left unanswered rejects with a timeout here and fails the test.
        await Promise.all(requests);
      }
      ffs.heal();
      await serving(bus, `round ${round}`);
      for (let i = 0; i < KEYS; i++) {
        const got = await read(bus, key(i));
        const allowed = model.allowed(key(i));
        if (!allowed.includes(got)) throw new Error(`round ${round}: ${key(i)} holds ${String(got)}, allowed ${allowed.map(String).join(' | ')} (faults ${JSON.stringify(ffs.fired)})`);
        model.settle(key(i), got);
      }
    }
    // The faults reached the answers: many writes went through, some failed
    // (internal), and the owner's file failed so that it was restarted (unavailable meanwhile).
    expect(seen.acked).toBeGreaterThan(ROUNDS * 10);
    expect({ internal: seen.internal > 0, unavailable: seen.unavailable > 0 }).toEqual({ internal: true, unavailable: true });

    // After a restart on the real disk, the same contents.
    const before = await Promise.all(Array.from({ length: KEYS }, (_, i) => read(bus, key(i))));
    await service.stop();
    service = await startService(config(tmp.dir), pino({ level: 'silent' }));
    await serving(service.bus, 'restart');
    const after = await Promise.all(Array.from({ length: KEYS }, (_, i) => read(service!.bus, key(i))));
    expect(after).toEqual(before);
  }, campaignTimeout(ROUNDS, 1000));
});
