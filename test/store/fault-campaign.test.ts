/**
 * A seeded fault campaign against one table file: round after round of
 * concurrent puts and deletes, compactions and backups, under each sync
 * policy, with failures injected at random calls of the file system (failed
 * and torn writes, failed fsyncs, truncates, renames, directory fsyncs,
 * reads, opens...). After every round the table is closed and reopened on
 * the real disk, and every key must hold a value the outcomes allow:
 * - an acknowledged write is there unless a later one replaced it;
 * - a write rejected as undone is never seen, in memory or after reopen;
 * - a write rejected with `undone: false` (the engine could not cut it off
 *   the file) may or may not be there after reopen, never in memory.
 * Reads in between must see exactly the acknowledged state.
 *
 * The seeds are fixed, so a failure names a round that replays exactly.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { backupTable, listBackups, pruneBackups, StoreFsOp, SyncPolicy, verifyBackup, StoreIoError, TableFile, TablekeeperError } from '../../store';
import { Fault, FaultyFs } from '../helpers/store-faulty-fs';
import { SeededRandom } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';
import { campaignTimeout } from '../helpers/wait';

const tmp = useTempDir('tk-campaign-');
const silent = pino({ level: 'silent' });
const KEYS = 40;
const ROUNDS = Number(process.env.CAMPAIGN_ROUNDS ?? 150);

/** What became of one write. */
type Outcome = 'acked' | 'undone' | 'unknown' | 'pending';

interface Op {
  id: number;
  /** The value a put wrote; undefined for a delete. */
  value: string | undefined;
  outcome: Outcome;
}

const FAULT_OPS: readonly StoreFsOp[] = ['write', 'write', 'fdatasync', 'fdatasync', 'truncate', 'rename', 'syncDir', 'open', 'read', 'readSync', 'close', 'unlink', 'size'];

/** The operations issued per key, and the value each key must have now. */
class Model {
  readonly ops = new Map<string, Op[]>();
  private nextId = 0;

  issue(key: string, value: string | undefined): Op {
    const op: Op = { id: this.nextId++, value, outcome: 'pending' };
    const list = this.ops.get(key) ?? [];
    list.push(op);
    this.ops.set(key, list);
    return op;
  }

  /** The value in memory: that of the last acknowledged write (rejected ones were undone in memory). */
  expected(key: string): string | undefined {
    const list = this.ops.get(key) ?? [];
    for (let i = list.length - 1; i >= 0; i--) if (list[i].outcome === 'acked') return list[i].value;
    return undefined;
  }

  /** The values a reopen may find: the expected one, or that of any write of unknown fate after it. */
  allowedOnDisk(key: string): (string | undefined)[] {
    const list = this.ops.get(key) ?? [];
    const allowed: (string | undefined)[] = [];
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].outcome === 'acked') break;
      if (list[i].outcome === 'unknown') allowed.push(list[i].value);
    }
    allowed.push(this.expected(key));
    return allowed;
  }

  /** After a reopen: what the file holds is now the certain state of each key. */
  settle(key: string, value: string | undefined): void {
    this.ops.set(key, [{ id: this.nextId++, value, outcome: 'acked' }]);
  }
}

function keyName(i: number): string {
  return `k${String(i).padStart(2, '0')}`;
}

/** What a rejected write tells: undone, or of unknown fate. Anything but a StoreIoError is a bug. */
function rejection(err: unknown): Outcome {
  if (!(err instanceof StoreIoError)) throw new Error(`a write was rejected with ${String(err)}`, { cause: err });
  const outcome = err.details?.undone === false ? 'unknown' : 'undone';
  count(`write ${outcome}`);
  return outcome;
}

/** Issues `n` random puts and deletes in one tick; resolves when all have settled. */
async function burst(t: TableFile, model: Model, rand: SeededRandom, n: number): Promise<void> {
  const settled: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const key = keyName(rand.int(KEYS));
    if (rand.chance(0.7)) {
      const op = model.issue(key, '');
      op.value = `v${op.id}${'.'.repeat(rand.int(200))}`;
      settled.push(t.put(key, Buffer.from(op.value)).then(
        () => void (op.outcome = 'acked'),
        (err: unknown) => void (op.outcome = rejection(err)),
      ));
    } else {
      const op = model.issue(key, undefined);
      settled.push(t.delete(key).then(
        // A delete of a missing key writes nothing: it changes no state.
        (deleted) => void (op.outcome = deleted ? 'acked' : 'undone'),
        (err: unknown) => void (op.outcome = rejection(err)),
      ));
    }
  }
  await Promise.all(settled);
}

/** Every key read back from `t` must be the acknowledged state. */
function checkMemory(t: TableFile, model: Model, where: string): void {
  for (let i = 0; i < KEYS; i++) {
    const key = keyName(i);
    let got: string | undefined;
    try {
      got = t.get(key)?.toString();
    } catch (err) {
      // An injected read failure: the read fails, it never answers wrongly.
      if (err instanceof StoreIoError) continue;
      throw err;
    }
    if (got !== model.expected(key)) {
      throw new Error(`${where}: ${key} reads ${String(got)?.slice(0, 12)}, expected ${String(model.expected(key))?.slice(0, 12)}`);
    }
  }
}

/** How often each outcome came up, so the campaign can show it reached them all. */
const seen: Record<string, number> = {};
function count(what: string): void {
  seen[what] = (seen[what] ?? 0) + 1;
}

/** Maintenance may fail under injected faults, but only with the engine's own errors. */
async function tolerated(what: string, p: Promise<unknown>): Promise<void> {
  try {
    await p;
    count(`${what} done`);
  } catch (err) {
    if (!(err instanceof TablekeeperError)) throw err;
    count(`${what} failed`);
  }
}

describe('table file fault campaign', () => {
  test(`table file - ${ROUNDS} seeded rounds of writes, compactions and backups under injected I/O faults keep every outcome honest`, async () => {
    const file = path.join(tmp.dir, 'c.tkt');
    const backups = path.join(tmp.dir, 'backups');
    const model = new Model();
    // Files a failed backup could not delete because the delete was failed too.
    const leftovers = new Set<string>();
    await (await TableFile.open({ table: 'c', path: file, logger: silent })).close();
    for (let round = 0; round < ROUNDS; round++) {
      const rand = new SeededRandom(Number(process.env.CAMPAIGN_SEED ?? 1000) + round);
      const ffs = new FaultyFs();
      // Mostly 'always'; the others too, whose acknowledged writes must also survive (nothing here loses the page cache).
      const policy = rand.int(8);
      const sync: SyncPolicy = policy < 6 ? 'always' : policy === 6 ? 'none' : { intervalMs: 2 };
      const t = await TableFile.open({ table: 'c', path: file, fs: ffs, logger: silent, sync });
      const faults = 1 + rand.int(3);
      for (let f = 0; f < faults; f++) {
        const op = rand.pick(FAULT_OPS);
        const fault: Fault = { op, nth: 1 + rand.int(12), sticky: rand.chance(0.15) };
        if (op === 'write' && rand.chance(0.5)) fault.partialBytes = rand.int(600);
        ffs.failOn(fault);
      }
      const where = (step: number) => `round ${round} step ${step}, sync ${JSON.stringify(sync)} (faults ${JSON.stringify(ffs.fired)})`;
      const steps = 4 + rand.int(8);
      for (let step = 0; step < steps; step++) {
        const kind = rand.int(10);
        const writes = burst(t, model, rand, 1 + rand.int(24));
        if (kind === 0) await tolerated('compaction', t.compact());
        else if (kind === 1) await tolerated('backup', backupTable(t, backups, { logger: silent }));
        await writes;
        checkMemory(t, model, where(step));
      }
      await tolerated('close', t.close());

      // Reopen on the real disk: every key must hold a value its outcomes allow.
      const r = await TableFile.open({ table: 'c', path: file, logger: silent });
      for (let i = 0; i < KEYS; i++) {
        const key = keyName(i);
        const got = r.get(key)?.toString();
        const allowed = model.allowedOnDisk(key);
        if (!allowed.includes(got)) {
          throw new Error(`${where(steps)}: after reopen ${key} holds ${String(got).slice(0, 12)}, allowed ${allowed.map((v) => String(v).slice(0, 12)).join(' | ')}`);
        }
        model.settle(key, got);
      }
      await r.close();
      // No leftovers counted as data: only the table file, its backups and kept torn tails.
      const extra = fs.readdirSync(tmp.dir).filter((n) => n !== 'c.tkt' && n !== 'backups' && !n.startsWith('c.tkt.torn-'));
      if (extra.length > 0) throw new Error(`${where(steps)}: left behind ${extra.join(', ')}`);
      // Every backup that counts (has a manifest) verifies; a failed one left nothing, unless its clean-up was failed too.
      await pruneBackups(backups, 'c', 3);
      for (const manifest of await listBackups(backups, 'c')) {
        const check = await verifyBackup(manifest, backups);
        if (!check.ok) throw new Error(`${where(steps)}: backup ${manifest.name} does not verify: ${check.problems.join('; ')}`);
      }
      const partial = fs.existsSync(path.join(backups, 'c')) ? fs.readdirSync(path.join(backups, 'c')).filter((n) => !n.endsWith('.tkt') && !n.endsWith('.json')) : [];
      const unlinkFailed = ffs.fired.some((f) => f.op === 'unlink');
      for (const name of partial) {
        if (unlinkFailed) leftovers.add(name);
        else if (!leftovers.has(name)) throw new Error(`${where(steps)}: a backup left ${name}`);
      }
    }
    // The seeds reach every outcome: rejected writes of both kinds, maintenance done and failed.
    for (const what of ['write undone', 'write unknown', 'compaction done', 'compaction failed', 'backup done', 'backup failed']) {
      if (!((seen[what] ?? 0) > 0)) throw new Error(`the campaign never reached '${what}' (${JSON.stringify(seen)})`);
    }
  }, campaignTimeout(ROUNDS, 1000));
});
