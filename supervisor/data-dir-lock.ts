/**
 * One service per data directory. Two processes appending to the same table
 * file would write records over each other's at offsets each computed for
 * itself, and one's compaction would rename a file over the other's open
 * one: the tables would be lost. So the service holds a lock on its data
 * directory from before the first table opens until the last one is closed.
 *
 * The lock is a directory, `<dataDir>/.tablekeeper.lock` (mkdir is atomic on
 * every file system, network ones included), holding `owner.json` (pid, host,
 * boot id, process start time, a random token). The owner touches the
 * directory every sixth of `staleMs` and checks that `owner.json` is still
 * its own.
 *
 * A lock left behind by a process that is gone is taken over at start:
 * - at once when its owner ran on this host in this boot (same boot id) and
 *   its pid is not alive, or is now another process (another start time in
 *   /proc), or is this process's own pid (a container's pid 1 restarted with
 *   the volume) without this process holding it;
 * - otherwise (another host or container, a pid alive again under another
 *   program, an unreadable owner) once the directory has not been touched
 *   for `staleMs`. The start waits for that, watching the lock: if it is
 *   touched meanwhile, its owner is alive and the start fails at once.
 * An owner on this host and boot whose pid is the same process (same start
 * time) is alive: the start fails at once, without waiting.
 * A takeover first claims the stale directory by making `takeover` inside
 * it (of two processes that judged the same lock stale, only one mkdir
 * succeeds), then checks it is still the directory it judged (same inode,
 * same owner token: not a fresh lock made meanwhile under the same name),
 * and renames it away; the new lock is made before the old one is deleted,
 * so the two never share an inode. Whoever loses starts over and finds the
 * winner's fresh lock.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';

/** Name of the lock directory inside the data directory. */
export const LOCK_DIR_NAME = '.tablekeeper.lock';
const OWNER_FILE = 'owner.json';

/** What owner.json holds. */
export interface LockOwner {
  pid: number;
  hostname: string;
  /** Linux's boot id (empty where there is none): a pid means something only within one boot. */
  bootId: string;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat; empty where there is none): tells a reused pid from the owner. */
  procStart: string;
  startedAt: string;
  token: string;
}

/** The data directory is locked by another live service (a start failure: never sent over the bus). */
export class DataDirLockedError extends Error {
  readonly code = 'DATA_DIR_LOCKED';
  readonly details: { dataDir: string; owner: LockOwner | undefined; ageMs: number };

  constructor(dataDir: string, owner: LockOwner | undefined, ageMs: number) {
    const who = owner === undefined ? 'a process whose owner file cannot be read' : `pid ${owner.pid} on ${owner.hostname}, started ${owner.startedAt}`;
    super(
      `data directory ${dataDir} is in use by another Tablekeeper service (${who}; lock touched ${Math.round(ageMs / 1000)} s ago). ` +
        `Stop that service first. If it is certainly gone (for example it ran on another host that is down), remove ${path.join(dataDir, LOCK_DIR_NAME)}.`,
    );
    this.name = 'DataDirLockedError';
    this.details = { dataDir, owner, ageMs };
  }
}

export interface DataDirLockOptions {
  logger: Logger;
  /** A lock untouched this long is stale; default 60 s. The owner touches it every sixth of this. */
  staleMs?: number;
  /** False: fail at once on a lock that is not yet stale, instead of waiting to see whether it goes stale. Default true. */
  wait?: boolean;
  /** Ends a wait (rejecting with the signal's reason). */
  abort?: AbortSignal;
  /** Called once if the lock stops being ours (removed or taken over): the service must stop. */
  onLost?: (reason: string) => void;
}

/** A held lock. */
export interface DataDirLock {
  readonly owner: LockOwner;
  /** Stops refreshing and removes the lock (if it is still ours). Never throws. */
  release(): void;
}

// Lock directories this process holds, by real path: a second service in the same process is refused too.
const heldHere = new Set<string>();

/** Takes the lock of `dataDir` (which must exist), or rejects with DataDirLockedError. */
export async function acquireDataDirLock(dataDir: string, opts: DataDirLockOptions): Promise<DataDirLock> {
  const staleMs = opts.staleMs ?? 60_000;
  const refreshMs = Math.max(100, Math.floor(staleMs / 6));
  // While waiting: the lock as first seen; any change means its owner is alive.
  let watched: { ino: number; mtimeMs: number; token: string | undefined } | undefined;
  const lockDir = path.join(fs.realpathSync(dataDir), LOCK_DIR_NAME);
  const owner: LockOwner = {
    pid: process.pid,
    hostname: os.hostname(),
    bootId: bootId(),
    procStart: procStart(process.pid) ?? '',
    startedAt: new Date().toISOString(),
    token: randomBytes(16).toString('hex'),
  };
  let staleAside: string | undefined;
  for (let claims = 0; ; ) {
    try {
      fs.mkdirSync(lockDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const seen = statOrUndefined(lockDir);
      // Gone meanwhile (released): try again.
      if (seen === undefined) continue;
      const found = readOwner(lockDir);
      const ageMs = Date.now() - seen.mtimeMs;
      if (heldHere.has(lockDir) || claims >= 3) throw new DataDirLockedError(dataDir, found, ageMs);
      if (ownerIsRunning(found)) throw new DataDirLockedError(dataDir, found, ageMs);
      if (!ownerIsGone(found) && ageMs <= staleMs) {
        const now = { ino: seen.ino, mtimeMs: seen.mtimeMs, token: found?.token };
        if (watched !== undefined && (now.ino !== watched.ino || now.mtimeMs !== watched.mtimeMs || now.token !== watched.token)) {
          throw new DataDirLockedError(dataDir, found, ageMs);
        }
        if (opts.wait === false) throw new DataDirLockedError(dataDir, found, ageMs);
        if (watched === undefined) {
          opts.logger.warn(
            { op: 'lock', lockDir, owner: found, ageMs: Math.round(ageMs), staleMs },
            'the data directory is locked; waiting to see whether its owner is still alive (it touches the lock while it runs)',
          );
        }
        watched = now;
        await pause(Math.min(refreshMs / 2, staleMs - ageMs + 1), opts.abort);
        continue;
      }
      claims++;
      const aside = claim(lockDir, seen.ino, found);
      if (aside !== undefined) {
        opts.logger.warn({ op: 'lock', lockDir, staleOwner: found, ageMs: Math.round(ageMs) }, 'took over the data directory lock of a service that is gone');
        staleAside = aside;
      }
      continue;
    }
    break;
  }
  try {
    writeOwner(lockDir, owner);
  } catch (err) {
    // An empty lock would hold the next start for lockStale.
    fs.rmSync(lockDir, { recursive: true, force: true });
    throw err;
  } finally {
    if (staleAside !== undefined) fs.rmSync(staleAside, { recursive: true, force: true });
  }
  heldHere.add(lockDir);
  const timer = setInterval(() => {
    let current: LockOwner | undefined;
    try {
      current = parseOwner(fs.readFileSync(path.join(lockDir, OWNER_FILE), 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        // EMFILE, EIO, ...: not a sign that someone else has the lock. Look again next time.
        opts.logger.warn({ err, op: 'lock', lockDir }, 'could not read the data directory lock');
        return;
      }
    }
    if (current?.token !== owner.token) {
      // Reported once: the timer stops here.
      clearInterval(timer);
      const reason = current === undefined ? 'the lock directory or its owner file was removed or replaced' : `taken over by pid ${current.pid} on ${current.hostname}`;
      opts.logger.fatal({ op: 'lock', lockDir, reason }, 'the data directory lock is no longer ours');
      opts.onLost?.(reason);
      return;
    }
    try {
      const now = new Date();
      fs.utimesSync(lockDir, now, now);
    } catch (err) {
      opts.logger.warn({ err, op: 'lock', lockDir }, 'could not touch the data directory lock');
    }
  }, refreshMs);
  timer.unref();
  return {
    owner,
    release() {
      clearInterval(timer);
      heldHere.delete(lockDir);
      if (readOwner(lockDir)?.token !== owner.token) return;
      try {
        fs.rmSync(lockDir, { recursive: true, force: true });
      } catch (err) {
        opts.logger.warn({ err, op: 'lock', lockDir }, 'could not remove the data directory lock');
      }
    },
  };
}

/** True when `owner` ran on this host in this boot, so that its pid can be checked here. */
function sameBoot(owner: LockOwner | undefined): owner is LockOwner {
  return owner !== undefined && owner.hostname === os.hostname() && owner.bootId !== '' && owner.bootId === bootId();
}

/**
 * True when `owner` certainly no longer runs: this host and boot, and its
 * pid dead (also a zombie its parent has not reaped yet: signal 0 still
 * reaches that), our own, or now another process (a different start time).
 */
function ownerIsGone(owner: LockOwner | undefined): boolean {
  if (!sameBoot(owner)) return false;
  if (owner.pid === process.pid) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: alive, under another user.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  const stat = procStat(owner.pid);
  if (stat !== undefined && exited(stat)) return true;
  return owner.procStart !== '' && stat !== undefined && stat.start !== owner.procStart;
}

/** True when `owner` certainly still runs: this host and boot, and its pid is the same process (same start time), not exited. */
function ownerIsRunning(owner: LockOwner | undefined): boolean {
  if (!sameBoot(owner) || owner.pid === process.pid || owner.procStart === '') return false;
  const stat = procStat(owner.pid);
  return stat !== undefined && !exited(stat) && stat.start === owner.procStart;
}

/** A process that has exited and waits only to be reaped (zombie), or is being torn down. */
function exited(stat: { state: string }): boolean {
  return stat.state === 'Z' || stat.state === 'X';
}

/** Field 22 of /proc/<pid>/stat (start time since boot), or undefined when it cannot be read. */
function procStart(pid: number): string | undefined {
  return procStat(pid)?.start;
}

/** Fields 3 (state) and 22 (start time since boot) of /proc/<pid>/stat, or undefined when it cannot be read. */
function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold anything: count from after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], start: fields[19] };
  } catch {
    return undefined;
  }
}

/**
 * Claims the stale lock directory judged at inode `ino` with owner `found`
 * and renames it aside; returns where, or undefined when another process
 * claimed it first or it is no longer the one judged (the caller starts over).
 * Exported for the tests of that race; not part of the supervisor's API.
 */
export function claim(lockDir: string, ino: number, found: LockOwner | undefined): string | undefined {
  const marker = path.join(lockDir, 'takeover');
  try {
    fs.mkdirSync(marker);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOENT') return undefined;
    throw err;
  }
  const now = statOrUndefined(lockDir);
  if (now?.ino !== ino || readOwner(lockDir)?.token !== found?.token) {
    // A fresh lock under the same name: not ours to take.
    fs.rmSync(marker, { recursive: true, force: true });
    return undefined;
  }
  const aside = `${lockDir}.stale-${randomBytes(6).toString('hex')}`;
  fs.renameSync(lockDir, aside);
  return aside;
}

function writeOwner(lockDir: string, owner: LockOwner): void {
  const tmp = path.join(lockDir, `${OWNER_FILE}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, `${JSON.stringify(owner)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path.join(lockDir, OWNER_FILE));
}

function readOwner(lockDir: string): LockOwner | undefined {
  try {
    return parseOwner(fs.readFileSync(path.join(lockDir, OWNER_FILE), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The owner in `text`, or undefined when it is not one (someone else's file). */
function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.pid !== 'number' || typeof o.hostname !== 'string' || typeof o.token !== 'string') return undefined;
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    return { pid: o.pid, hostname: o.hostname, bootId: str(o.bootId), procStart: str(o.procStart), startedAt: String(o.startedAt), token: o.token };
  } catch {
    return undefined;
  }
}

function statOrUndefined(dir: string): fs.Stats | undefined {
  try {
    return fs.statSync(dir);
  } catch {
    return undefined;
  }
}

/** Waits `ms`, or rejects with the signal's reason once it aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(1, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

let cachedBootId: string | undefined;
function bootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      cachedBootId = '';
    }
  }
  return cachedBootId;
}
