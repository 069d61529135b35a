/**
 * The recovery journal: one small JSON file per table whose recovery (or
 * restore) has started and not finished, in `<dataDir>/.tablekeeper/recovery/`.
 * It is written (and fsynced) before anything is moved, and removed once the
 * rebuilt file has been verified and before the owner serves it, so a crash
 * at any step before that leaves it behind and the next start finishes the
 * run instead of opening a half-moved table, while a redo never runs over a
 * file that has served writes. Every step after it is idempotent: the damaged
 * file is only ever moved into quarantine under the unique name recorded here
 * (never modified, never over another file) and the rebuilt file replaces
 * the table path by an atomic rename.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import * as path from 'node:path';
import { tableFilePath } from '../actors';
import { isErrno } from '../store';

/** What a recovery in progress has to finish. */
export interface RecoveryJournal {
  table: string;
  /** `recover`: rebuild from the latest verified backup plus every intact record; `restore`: exact rollback to the backup. */
  mode: 'recover' | 'restore';
  trigger: 'auto' | 'manual';
  reason: string;
  /** Who noticed the damage (read, open, scrub, ...), for the event a resumed run publishes. */
  source?: string;
  /**
   * The exact path the table file is (or will be) kept at, never deleted. The
   * name is unique to this run (see quarantinePath): a file there is this
   * run's table file, so a redo knows its move happened.
   */
  quarantine: string;
  startedAt: string;
}

/** Folder of the journals. */
export function journalDir(dataDir: string): string {
  return path.join(dataDir, '.tablekeeper', 'recovery');
}

/** Folder where damaged (and rolled-back) table files are kept. */
export function quarantineDir(dataDir: string): string {
  return path.join(dataDir, 'quarantine');
}

function journalPath(dataDir: string, table: string): string {
  return path.join(journalDir(dataDir), `${table}.json`);
}

/** Writes the journal durably (temp file, fsync, rename, directory fsync). */
export async function writeJournal(dataDir: string, journal: RecoveryJournal): Promise<void> {
  const dir = journalDir(dataDir);
  await mkdir(dir, { recursive: true });
  const target = journalPath(dataDir, journal.table);
  const tmp = `${target}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(journal));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, target);
  await syncDir(dir);
}

/** Removes a table's journal (the run is over). */
export async function removeJournal(dataDir: string, table: string): Promise<void> {
  try {
    await unlink(journalPath(dataDir, table));
    await syncDir(journalDir(dataDir));
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

/**
 * The unfinished runs of the given tables, read synchronously at start (before
 * any owner opens its file). An unreadable journal is returned as a `recover`
 * run, the safe choice: it rebuilds from whatever exists, including the file
 * the run may already have moved into quarantine (see unreadableJournalRun).
 */
export function pendingJournals(dataDir: string, tables: readonly string[]): RecoveryJournal[] {
  const dir = journalDir(dataDir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
  const out: RecoveryJournal[] = [];
  for (const table of tables) {
    if (!names.includes(`${table}.json`)) continue;
    try {
      const parsed = JSON.parse(readFileSync(path.join(dir, `${table}.json`), 'utf8')) as RecoveryJournal;
      if (parsed.table === table && typeof parsed.quarantine === 'string') {
        out.push(parsed);
        continue;
      }
    } catch {
      // Falls through to the safe default below.
    }
    out.push(unreadableJournalRun(dataDir, table));
  }
  return out;
}

/**
 * The run for a journal that cannot be read. Its quarantine name is lost:
 * with the table file still in place the move had not happened, and a fresh
 * name does. With the table file gone the move may have happened, and a
 * fresh name would rebuild from the backups alone, dropping every record of
 * the moved file that no backup holds without counting one as lost: the
 * run takes the table's newest quarantined file instead (names sort by time).
 */
function unreadableJournalRun(dataDir: string, table: string): RecoveryJournal {
  const run = { table, mode: 'recover' as const, trigger: 'auto' as const, reason: 'unreadable recovery journal', startedAt: new Date().toISOString() };
  if (!existsSync(tableFilePath(dataDir, table))) {
    let names: string[] = [];
    try {
      names = readdirSync(quarantineDir(dataDir));
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    // Not another table's whose name starts with this one's.
    const ours = (n: string): boolean => n.startsWith(`${table}-`) && QUARANTINE_NAME_TAIL.test(n.slice(table.length + 1));
    const newest = names.filter(ours).sort().pop();
    if (newest !== undefined) return { ...run, quarantine: path.join(quarantineDir(dataDir), newest) };
  }
  return { ...run, quarantine: quarantinePath(dataDir, table, new Date()) };
}

/** What follows `<table>-` in the names quarantinePath gives: `<time>-<random>.tkt`. */
const QUARANTINE_NAME_TAIL = /^\d{8}T\d{9}Z-[0-9a-f]{12}\.tkt$/;

/**
 * A fresh quarantine path for `table`: named by time for people, with a
 * random part so that two runs never get the same name, even with a clock
 * that stands still (the move itself also refuses to replace a file).
 */
export function quarantinePath(dataDir: string, table: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:.]/g, '');
  return path.join(quarantineDir(dataDir), `${table}-${stamp}-${randomBytes(6).toString('hex')}.tkt`);
}

/** Makes sure the quarantine folder exists (synchronously: tiny, and done once per run). */
export function ensureQuarantineDir(dataDir: string): string {
  const dir = quarantineDir(dataDir);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** fsyncs a directory so renames and creations in it are durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
