import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { startService } from '../../cli/serve';
import { acquireDataDirLock, DataDirLock, DataDirLockedError, LOCK_DIR_NAME, LockOwner } from '../../supervisor';
import { claim } from '../../supervisor/data-dir-lock';
import { useTempDir } from '../helpers/store-temp';
import { captureLogger, testConfig, until } from '../http/http-helpers';

const tmp = useTempDir('tk-lock-');
const silent = pino({ level: 'silent' });
const lockDir = (): string => path.join(fs.realpathSync(tmp.dir), LOCK_DIR_NAME);
const bootId = (): string => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const readOwner = (): LockOwner => JSON.parse(fs.readFileSync(path.join(lockDir(), 'owner.json'), 'utf8')) as LockOwner;

/** Leaves a lock as a service that is no longer running would have, touched `ageMs` ago. */
function leaveLock(owner: Partial<LockOwner> | undefined, ageMs = 0): void {
  fs.mkdirSync(lockDir());
  if (owner !== undefined) {
    const full = { pid: 1, hostname: os.hostname(), bootId: bootId(), startedAt: '2026-01-01T00:00:00.000Z', token: 'left-behind', ...owner };
    fs.writeFileSync(path.join(lockDir(), 'owner.json'), JSON.stringify(full));
  }
  const at = new Date(Date.now() - ageMs);
  fs.utimesSync(lockDir(), at, at);
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '0']);
  return child.pid!;
}

describe('data directory lock', () => {
  const held: DataDirLock[] = [];
  afterEach(() => {
    for (const lock of held.splice(0)) lock.release();
  });
  // Without waiting, unless a test asks: a lock that is not stale is refused at once.
  const acquire = async (opts: Partial<Parameters<typeof acquireDataDirLock>[1]> = {}): Promise<DataDirLock> => {
    const lock = await acquireDataDirLock(tmp.dir, { logger: silent, wait: false, ...opts });
    held.push(lock);
    return lock;
  };

  test('lock - holds the directory with this process as its owner; a second taker is refused until it is released', async () => {
    const lock = await acquire();
    expect(readOwner()).toMatchObject({ pid: process.pid, hostname: os.hostname(), token: lock.owner.token });
    // Refused at once even when willing to wait: this process holds it.
    const refused = await acquire({ wait: true }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect((refused as Error).message).toContain(`pid ${process.pid} on ${os.hostname()}`);
    expect((refused as Error).message).toContain(LOCK_DIR_NAME);
    lock.release();
    expect(fs.existsSync(lockDir())).toBe(false);
    expect((await acquire()).owner.token).not.toBe(lock.owner.token);
  });

  test('lock - a lock left by a process of this host and boot that has exited is taken over at once, and nothing is left of it', async () => {
    leaveLock({ pid: deadPid() });
    const lock = await acquire();
    expect(readOwner().token).toBe(lock.owner.token);
    expect(fs.existsSync(path.join(lockDir(), 'takeover'))).toBe(false);
    expect(fs.readdirSync(tmp.dir)).toEqual([LOCK_DIR_NAME]);
  });

  test("lock - a lock naming this process's own pid that this process does not hold (a restarted container's pid 1) is taken over", async () => {
    leaveLock({ pid: process.pid });
    expect(readOwner().token).toBe('left-behind');
    expect((await acquire()).owner.pid).toBe(process.pid);
    expect(readOwner().token).not.toBe('left-behind');
  });

  test('lock - an owner on this host whose pid still runs the same process is refused at once; a pid since reused by another process is taken over at once', async () => {
    const stat = fs.readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    const parentStart = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    leaveLock({ pid: process.ppid, procStart: parentStart });
    // Willing to wait, but there is nothing to wait for.
    await expect(acquire({ wait: true, staleMs: 60_000 })).rejects.toBeInstanceOf(DataDirLockedError);
    fs.rmSync(lockDir(), { recursive: true });
    leaveLock({ pid: process.ppid, procStart: String(Number(parentStart) + 1) });
    const lock = await acquire({ staleMs: 60_000 });
    expect(readOwner()).toMatchObject({ token: lock.owner.token, procStart: expect.stringMatching(/^[0-9]+$/) });
  });

  test('lock - a lock whose owner was killed but not yet reaped by its parent (a zombie) is taken over at once', async () => {
    // `sh` starts `sleep` in the background and then becomes a `sleep` of its own that never reaps it.
    const parent = spawn('sh', ['-c', 'sleep 60 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (c: Buffer) => resolve(Number(c.toString().trim()))));
      const stat = (): string[] => {
        const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return text.slice(text.lastIndexOf(')') + 2).split(' ');
      };
      const procStart = stat()[19];
      // Killed while the parent is still the shell, the child would be reaped by it at once: wait for the exec.
      await until(() => fs.readFileSync(`/proc/${parent.pid}/comm`, 'utf8').trim() === 'sleep', 'the shell to become sleep');
      process.kill(pid, 'SIGKILL');
      await until(() => stat()[0] === 'Z', 'the killed process to be a zombie');
      leaveLock({ pid, procStart });
      const lock = await acquire({ staleMs: 60_000 });
      expect(readOwner().token).toBe(lock.owner.token);
    } finally {
      parent.kill('SIGKILL');
    }
  });

  test('lock - a fresh lock of a live process, or of another host, or with no owner file, is refused; once untouched for staleMs it is taken over', async () => {
    // process.ppid: the jest worker's parent, alive for the whole test.
    for (const owner of [{ pid: process.ppid }, { hostname: 'some-other-host' }, { bootId: 'an-earlier-boot', pid: deadPid() }, undefined]) {
      leaveLock(owner, 5_000);
      await expect(acquire({ staleMs: 60_000 })).rejects.toBeInstanceOf(DataDirLockedError);
      // Still the one left behind.
      expect(fs.existsSync(lockDir())).toBe(true);
      fs.rmSync(lockDir(), { recursive: true });
      leaveLock(owner, 120_000);
      const lock = await acquire({ staleMs: 60_000 });
      expect(readOwner().token).toBe(lock.owner.token);
      lock.release();
    }
  });

  test('lock - the owner keeps the lock fresh, and reports it lost when another owner replaces it', async () => {
    let lost: string | undefined;
    // Touched every 100 ms.
    await acquire({ staleMs: 600, onLost: (reason) => (lost = reason) });
    const old = new Date(Date.now() - 3_600_000);
    fs.utimesSync(lockDir(), old, old);
    await until(() => fs.statSync(lockDir()).mtimeMs > old.getTime() + 1_000, 'the lock to be touched');
    expect(lost).toBeUndefined();
    fs.writeFileSync(path.join(lockDir(), 'owner.json'), JSON.stringify({ ...readOwner(), pid: 4242, hostname: 'elsewhere', token: 'theirs' }));
    await until(() => lost !== undefined, 'the loss to be reported');
    expect(lost).toBe('taken over by pid 4242 on elsewhere');
  });

  test('lock - an owner file that cannot be read for a moment (not missing, not replaced) does not count as lost', async () => {
    const { logger, text } = captureLogger('warn');
    let lost: string | undefined;
    const lock = await acquire({ staleMs: 600, logger, onLost: (reason) => (lost = reason) });
    const file = path.join(lockDir(), 'owner.json');
    const content = fs.readFileSync(file);
    // Swapped atomically (renames over it), so the file is never missing: a
    // symlink to a directory, whose read fails with EISDIR, as a read can with
    // EMFILE or EIO; then the same content again.
    fs.symlinkSync(tmp.dir, path.join(tmp.dir, 'link'));
    fs.renameSync(path.join(tmp.dir, 'link'), file);
    await until(() => text().includes('could not read the data directory lock'), 'a failed read');
    fs.writeFileSync(path.join(tmp.dir, 'again'), content);
    fs.renameSync(path.join(tmp.dir, 'again'), file);
    expect(lost).toBeUndefined();
    lock.release();
    expect(fs.existsSync(lockDir())).toBe(false);
  });

  test('lock - a start waits for a lock that is not touched, and takes it over once it is stale', async () => {
    const { logger, text } = captureLogger('warn');
    leaveLock({ hostname: 'some-other-host' }, 700);
    const lock = await acquire({ staleMs: 1_000, wait: true, logger });
    expect(readOwner().token).toBe(lock.owner.token);
    expect(text()).toContain('waiting to see whether its owner is still alive');
    expect(text()).toContain('took over the data directory lock');
  });

  test('lock - a start that waits fails as soon as the lock is touched (its owner is alive), or when aborted', async () => {
    const { logger, text } = captureLogger('warn');
    leaveLock({ hostname: 'some-other-host' });
    // Looks every 250 ms; stale only after 3 s.
    const waiting = acquire({ staleMs: 3_000, wait: true, logger }).catch((err: unknown) => err);
    await until(() => text().includes('waiting to see'), 'the start to wait');
    const now = new Date(Date.now() + 1_000);
    fs.utimesSync(lockDir(), now, now);
    expect(await waiting).toBeInstanceOf(DataDirLockedError);
    expect(readOwner().token).toBe('left-behind');

    const abort = new AbortController();
    const aborted = acquire({ staleMs: 3_000, wait: true, logger, abort: abort.signal }).catch((err: unknown) => err);
    abort.abort(new Error('stop requested'));
    expect(await aborted).toMatchObject({ message: 'stop requested' });
    expect(readOwner().token).toBe('left-behind');
  });

  test('lock - of two starts that judged the same lock stale, only one takes it over, and the other leaves the winner\'s fresh lock alone', async () => {
    leaveLock({ hostname: 'some-other-host' }, 120_000);
    // Both looked at the stale lock before either acted.
    const judged = { ino: fs.statSync(lockDir()).ino, owner: readOwner() };
    // The first claims it (and moves it aside); the second, acting on the same judgement, finds its claim marker taken.
    fs.mkdirSync(path.join(lockDir(), 'takeover'));
    expect(claim(lockDir(), judged.ino, judged.owner)).toBeUndefined();
    expect(readOwner().token).toBe('left-behind');
    fs.rmdirSync(path.join(lockDir(), 'takeover'));
    const aside = claim(lockDir(), judged.ino, judged.owner);
    expect(aside).toBeDefined();
    expect(fs.existsSync(lockDir())).toBe(false);
    fs.rmSync(aside!, { recursive: true });
    // The winner's fresh lock under the same name, then the loser's claim, late, on its old judgement.
    const winner = await acquire();
    expect(claim(lockDir(), judged.ino, judged.owner)).toBeUndefined();
    expect(readOwner().token).toBe(winner.owner.token);
    expect(fs.existsSync(path.join(lockDir(), 'takeover'))).toBe(false);
    expect(fs.readdirSync(tmp.dir)).toEqual([LOCK_DIR_NAME]);
  });

  test('lock - a second service on the same data directory fails to start, and starts once the first has stopped', async () => {
    const config = testConfig(tmp.dir);
    const { logger } = captureLogger('warn');
    const first = await startService(config, logger);
    try {
      await expect(startService(config, logger)).rejects.toBeInstanceOf(DataDirLockedError);
      // The refused start changed nothing: the first still serves.
      const reply = await first.bus.request('tables.orders.put', new TextEncoder().encode(JSON.stringify({ key: 'k', value: 1 })));
      expect(JSON.parse(new TextDecoder().decode(reply.data))).toEqual({ ok: true });
    } finally {
      await first.stop();
    }
    expect(fs.existsSync(lockDir())).toBe(false);
    const second = await startService(config, logger);
    await second.stop();
  });
});
