/**
 * Moving a table file into quarantine for a recovery run, so that a redo
 * after a crash can tell from the disk alone how far the move got.
 *
 * The move is a hard link to the run's unique quarantine name (link never
 * replaces an existing file) followed by the removal of the table path, each
 * made durable. At a redo (same journal, same name) the states are:
 * - no quarantined file, a table file: the move has not happened; do it;
 * - no quarantined file, no table file: there was nothing to move;
 * - a quarantined file and a table file that is the same inode: the link was
 *   made, the unlink not; finish it;
 * - a quarantined file and another table file: the run had already renamed
 *   its rebuilt file into place (it never served: the journal goes before
 *   the owner serves). It is moved aside under a fresh quarantine name, never
 *   overwritten, and the run rebuilds from its quarantined file.
 * A cut marker of the table file (writes that were rejected but could not be
 * cut off it) is then copied beside the quarantined file, so that the
 * offline tools run on that file later leave those writes out as well.
 */
import { rename, link, lstat, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { isErrno, keepCutMarkerWith, nodeStoreFs } from '../store';
import { ensureQuarantineDir, quarantinePath, syncDir } from './recovery-journal';

/** What moveToQuarantine found and did. */
export type QuarantineStep = 'moved' | 'already-moved' | 'no-file';

async function statOrNull(file: string): Promise<Stats | null> {
  try {
    return await lstat(file);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/** Errors of link(2) that mean "this file system has no hard links", not "the target exists". */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Gives `from` the name `to` without ever replacing a file at `to` (EEXIST then). */
async function moveNoReplace(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    if (!(err instanceof Error && NO_LINKS.has((err as NodeJS.ErrnoException).code ?? ''))) throw err;
    // No hard links here: check, then rename. The name is unique to the run,
    // so nothing else creates it between the check and the rename.
    if ((await statOrNull(to)) !== null) throw Object.assign(new Error(`quarantine target exists: ${to}`), { code: 'EEXIST' });
    await rename(from, to);
    return;
  }
  await syncDir(path.dirname(to));
  await unlink(from);
}

/**
 * Moves the table file at `tablePath` to `target` (the journal's quarantine
 * path), or finishes or recognises an earlier attempt of the same run (see
 * the module doc). Never deletes or overwrites a file's only name.
 */
export async function moveToQuarantine(dataDir: string, tablePath: string, target: string, log: Logger): Promise<QuarantineStep> {
  const step = await moveFile(dataDir, tablePath, target, log);
  if (step === 'no-file') return step;
  try {
    if (await keepCutMarkerWith(nodeStoreFs, path.basename(tablePath, '.tkt'), tablePath, target)) {
      log.info({ quarantine: target }, 'kept the cut marker beside the quarantined file: the writes it names were rejected');
    }
  } catch (err) {
    // Only the offline tools read that copy (the rebuild reads the table path's marker): the run goes on.
    log.warn({ err, quarantine: target }, 'could not copy the cut marker beside the quarantined file; offline tools run on it would read the rejected writes');
  }
  return step;
}

async function moveFile(dataDir: string, tablePath: string, target: string, log: Logger): Promise<QuarantineStep> {
  const [here, there] = await Promise.all([statOrNull(tablePath), statOrNull(target)]);
  const dir = ensureQuarantineDir(dataDir);
  if (there === null) {
    if (here === null) return 'no-file';
    await moveNoReplace(tablePath, target);
    await syncDir(dir);
    await syncDir(path.dirname(tablePath));
    return 'moved';
  }
  if (here !== null) {
    if (here.dev === there.dev && here.ino === there.ino) {
      await unlink(tablePath);
    } else {
      const aside = quarantinePath(dataDir, path.basename(tablePath, '.tkt'), new Date());
      log.warn({ file: tablePath, aside, quarantine: target }, 'an earlier attempt of this run left a rebuilt file in place; keeping it aside');
      await moveNoReplace(tablePath, aside);
      await syncDir(dir);
    }
    await syncDir(path.dirname(tablePath));
  }
  return 'already-moved';
}
