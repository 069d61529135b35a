/**
 * kill -9 of the whole service, round after round: `tablekeeper serve` (over
 * NATS) takes concurrent puts and deletes while it backs the table up,
 * compacts and scrubs it every second, and is killed at a random moment or
 * in the middle of a backup, a compaction or a recovery cycle (of a file
 * reported damaged that is not: the recovery must lose nothing).
 * After each restart every key must hold what the answers allow (the last
 * acknowledged write, or one sent after it whose answer was lost with the
 * process), nothing the service left behind may be counted as data, and
 * every backup with a manifest must verify.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { decodeJson, encodeJson, jsonMemberSpan, NatsBus } from '../../bus';
import { listBackups, verifyBackup } from '../../store';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { rng } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';
import { campaignTimeout, WAIT_MS } from '../helpers/wait';

const tmp = useTempDir('tk-servecrash-');
const MAIN = path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js');
const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 8);
const KEYS = 40;
const WRITERS = 8;
const FILLER = 4000;

interface SentOp {
  value: string | undefined;
  acked: boolean;
  /** Answered with a refusal: certainly not written. */
  refused?: boolean;
}

/** What each round (by its number, modulo the length) is killed in the middle of; undefined: at a random moment. */
const KILL_DURING = [undefined, 'backup', 'compaction', 'recovery'] as const;

/** The values `key` may hold: its last acknowledged write's, or one sent after it whose answer was lost. */
function allowedValues(ops: SentOp[]): Set<string | undefined> {
  const last = ops.map((op) => op.acked).lastIndexOf(true);
  const allowed = new Set(ops.slice(Math.max(last, 0)).filter((op, i) => i === 0 && last >= 0 || !op.refused).map((op) => op.value));
  if (last < 0) allowed.add(undefined);
  return allowed;
}

/** Starts serve and resolves once it logged that it started. */
function startServe(env: Record<string, string>, children: Set<ChildProcess>): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MAIN, 'serve'], { env: { PATH: process.env.PATH ?? '', TABLEKEEPER_HTTP_PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('"tablekeeper started"')) resolve(child);
    });
    child.stderr!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('exit', (code, signal) => reject(new Error(`serve exited early (${code ?? signal}): ${out.slice(-2000)}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
}

describe('serve killed with -9 (end to end)', () => {
  let nats: NatsServer;
  let client: NatsBus;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    nats = await startNatsServer();
    client = await NatsBus.connect({ servers: nats.url, name: 'crash-client', logger: pino({ level: 'silent' }) });
  });
  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited(child);
      }
    }
    await client?.close();
    await nats?.stop();
  });

  /** The JSON text of the key's value (undefined when absent); retries while the table is not serving yet. */
  async function read(key: string): Promise<string | undefined> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const reply = await client.request('tables.crash.get', encodeJson({ key }), { timeoutMs: WAIT_MS }).catch((err: unknown) => err as Error);
      if (!(reply instanceof Error)) {
        const body = decodeJson(reply.data) as { found?: boolean; error?: { code: string } };
        if (body.error === undefined) {
          if (body.found !== true) return undefined;
          const span = jsonMemberSpan(reply.data, 'value')!;
          return Buffer.from(reply.data).toString('utf8', span[0], span[1]);
        }
        if (body.error.code !== 'unavailable') throw new Error(`get ${key}: ${JSON.stringify(body.error)}`);
      }
      if (Date.now() > deadline) throw new Error(`gave up reading ${key}: ${reply instanceof Error ? reply.message : 'unavailable'}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  test(`serve crash - every acknowledged write survives kill -9 of the service during writes, backups, compactions and recoveries (${ROUNDS} rounds)`, async () => {
    const dataDir = path.join(tmp.dir, 'data');
    const configFile = path.join(tmp.dir, 'config.json');
    fs.writeFileSync(
      configFile,
      JSON.stringify({
        tables: [{ name: 'crash', sync: 'always' }],
        backup: { every: '1s', keep: 2 },
        compaction: { every: '1s', threshold: 0 },
        scrub: { every: '1s' },
      }),
    );
    const env = { NATS_URL: nats.url, TABLEKEEPER_CONFIG: configFile, TABLEKEEPER_DATA_DIR: dataDir };
    const history = new Map<string, SentOp[]>();
    const rand = rng(424242);
    let next = 0;
    let caughtUnderWay = 0;

    for (let round = 1; round <= ROUNDS; round++) {
      const serve = await startServe(env, children);
      // Everything acknowledged before the kill must be there now.
      for (const [key, ops] of history) {
        const allowed = allowedValues(ops);
        const got = await read(key);
        if (!allowed.has(got)) throw new Error(`round ${round}: ${key} holds ${String(got)}, allowed ${[...allowed].map(String).join(' | ')}`);
        // What it holds is now certain.
        history.set(key, [{ value: got, acked: true }]);
      }

      if (round === 1) {
        // Bulk, so that a backup or a compaction takes long enough to be killed in: 4,000 keys of 4 KB, never changed.
        const filler = JSON.stringify('f'.repeat(4096));
        for (let i = 0; i < FILLER; i += 64) {
          await Promise.all(Array.from({ length: 64 }, (_, j) => client.request('tables.crash.put', Buffer.from(`{"key":"fill-${i + j}","value":${filler}}`), { timeoutMs: WAIT_MS })));
        }
      }

      // Writers until the kill: after a random number of acknowledgements, or
      // (three rounds in four) as soon as a backup, a compaction or a recovery
      // is seen under way, by the file it writes.
      const killAfter = 50 + rand(round % 8 === 0 ? 50 : 1500);
      const killDuring = KILL_DURING[round % KILL_DURING.length];
      const quarantined = () => (fs.existsSync(path.join(dataDir, 'quarantine')) ? fs.readdirSync(path.join(dataDir, 'quarantine')).length : 0);
      const quarantinedBefore = quarantined();
      let acks = 0;
      let killed = false;
      const kill = (): void => {
        if (killed) return;
        killed = true;
        process.kill(serve.pid!, 'SIGKILL');
      };
      const dead = exited(serve);
      const watcher = async (): Promise<void> => {
        if (killDuring === undefined) return;
        const backupDir = path.join(dataDir, 'backups', 'crash');
        const underWay = () =>
          killDuring === 'backup'
            ? fs.existsSync(backupDir) && fs.readdirSync(backupDir).some((n) => n.endsWith('.partial'))
            : killDuring === 'compaction'
              ? fs.existsSync(path.join(dataDir, 'crash.tkt.compact'))
              : // The table file moved into quarantine: the rebuild is under way.
                quarantined() > quarantinedBefore;
        const deadline = Date.now() + WAIT_MS;
        while (!killed) {
          // Asked for again and again until one is caught under way.
          // A recovery of a file that is not damaged at all: it must lose nothing.
          const [subject, body] = killDuring === 'backup' ? ['admin.backup.crash', {}] : killDuring === 'compaction' ? ['admin.compact.crash', { force: true }] : ['tables.crash.corruption', { reason: 'crash test' }];
          const asked = client.request(subject, encodeJson(body), { timeoutMs: WAIT_MS });
          const done = asked.then(() => true, () => true);
          let finished = false;
          void done.then(() => (finished = true));
          while (!finished && !killed) {
            if (underWay()) {
              kill();
              caughtUnderWay++;
            }
            await new Promise((r) => setImmediate(r));
          }
          if (Date.now() > deadline) throw new Error(`round ${round}: never saw a ${killDuring} under way`);
        }
      };
      const writer = async (): Promise<void> => {
        while (!killed) {
          const key = `k${rand(KEYS)}`;
          const del = rand(5) === 0;
          const value = del ? undefined : JSON.stringify(`${round}.${next++}:${'x'.repeat(rand(2000))}`);
          const op: SentOp = { value, acked: false };
          if (!history.has(key)) history.set(key, []);
          history.get(key)!.push(op);
          const body = del ? { key } : { key, value: JSON.parse(value!) as string };
          const reply = await client.request(`tables.crash.${del ? 'delete' : 'put'}`, encodeJson(body), { timeoutMs: 1000 }).catch(() => undefined);
          if (reply === undefined) continue; // lost with the process: of unknown fate
          const answer = decodeJson(reply.data) as { ok?: boolean; deleted?: boolean; error?: { code: string } };
          if (answer.ok === true || answer.deleted !== undefined) op.acked = true;
          // Refused while the table recovers: never written.
          else if (answer.error?.code === 'unavailable' && killDuring === 'recovery') op.refused = true;
          else if (!killed) throw new Error(`round ${round}: ${key} refused while serving: ${JSON.stringify(answer.error)}`);
          if (++acks === killAfter && killDuring === undefined) kill();
        }
      };
      await Promise.all([...Array.from({ length: WRITERS }, writer), watcher(), dead]);
      children.delete(serve);
      expect(serve.signalCode).toBe('SIGKILL');
    }

    // Last round: the backups that count all verify, and a clean stop.
    const serve = await startServe(env, children);
    for (const [key, ops] of history) {
      expect({ key, ok: allowedValues(ops).has(await read(key)) }).toEqual({ key, ok: true });
    }
    // Every round that was to be killed in a backup, a compaction or a recovery was.
    expect(caughtUnderWay).toBe(Array.from({ length: ROUNDS }, (_, i) => KILL_DURING[(i + 1) % KILL_DURING.length]).filter((k) => k !== undefined).length);
    for (let i = 0; i < FILLER; i += 97) expect({ i, len: (await read(`fill-${i}`))?.length }).toEqual({ i, len: 4096 + 2 });
    // One backup certain to finish (the kills may have cut every scheduled one short), then a clean stop.
    const asked = decodeJson((await client.request('admin.backup.crash', encodeJson({}), { timeoutMs: WAIT_MS })).data) as { results?: { status: string }[] };
    expect(asked.results?.map((r) => r.status)).toEqual(['ok']);
    serve.kill('SIGTERM');
    await exited(serve);
    children.delete(serve);
    expect(serve.exitCode).toBe(0);
    // Once it has stopped (it prunes them while it runs).
    const backups = await listBackups(path.join(dataDir, 'backups'), 'crash');
    expect(backups.length).toBeGreaterThan(0);
    for (const m of backups) expect({ backup: m.name, check: await verifyBackup(m, path.join(dataDir, 'backups')) }).toEqual({ backup: m.name, check: { ok: true, problems: [] } });
    // Nothing the kills left behind is still there: leftovers of a compaction, a create or a rebuild are gone.
    // (A write cut short by a kill leaves a torn tail, which the next open cuts and keeps in `.torn-` files, on purpose.)
    expect(fs.readdirSync(dataDir).filter((n) => n.startsWith('crash.tkt') && n !== 'crash.tkt' && !n.startsWith('crash.tkt.torn-'))).toEqual([]);
  }, campaignTimeout(ROUNDS, 6000));
});
