import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { tableFilePath, type TableOwnerState } from '../../actors/table-owner';
import { backupTable, nodeStoreFs, pendingCutOf, salvageFile, TableFile } from '../../store';
import { finishRecovery, startRecovery, type RecoveryDeps } from '../../supervisor/recovery';
import { moveToQuarantine } from '../../supervisor/quarantine';
import { journalDir, pendingJournals, quarantineDir, quarantinePath, writeJournal } from '../../supervisor/recovery-journal';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { contentsOf, sha256Of } from '../store/recovery-helpers';

const silent = pino({ level: process.env.TK_TEST_LOG ?? 'silent' });
const b = (s: string): Buffer => Buffer.from(s);

describe('recovery run', () => {
  const tmp = useTempDir('tk-recovery-run-');

  function setup(onStart: (table: string) => Promise<TableOwnerState> = async () => 'serving') {
    const dataDir = path.join(tmp.dir, 'data');
    const backupDir = path.join(tmp.dir, 'backups');
    mkdirSync(dataDir, { recursive: true });
    const starts: string[] = [];
    const deps: RecoveryDeps = {
      dataDir,
      backupDir,
      logger: silent,
      // A clock that stands still: nothing may depend on it for names.
      now: () => 0,
      owners: {
        stop: async () => undefined,
        start: async (table) => {
          starts.push(table);
          return onStart(table);
        },
      },
    };
    return { deps, dataDir, starts, file: tableFilePath(dataDir, 'alpha') };
  }

  async function write(file: string, entries: [string, string][]): Promise<void> {
    const t = await TableFile.open({ table: 'alpha', path: file, sync: 'always' });
    for (const [k, v] of entries) await t.put(k, b(v));
    await t.close();
  }

  test('recovery run - the built file is verified and the journal removed before the owner serves, so writes served next are never rebuilt over', async () => {
    let journalsAtStart: unknown[] | undefined;
    const ctx = setup(async (table) => {
      journalsAtStart = pendingJournals(ctx.dataDir, [table]);
      // The owner serves a write the moment it is up.
      await write(ctx.file, [['after', 'served']]);
      return 'serving';
    });
    await write(ctx.file, [['k1', 'v1'], ['k2', 'v2']]);
    const outcome = await startRecovery(ctx.deps, { table: 'alpha', mode: 'recover', trigger: 'manual', reason: 'test' }, 0);
    expect(outcome).toMatchObject({ status: 'recovered', liveKeys: 2, verified: true });
    expect(journalsAtStart).toEqual([]);
    // The next start finds nothing to redo: the served write stays.
    expect(pendingJournals(ctx.dataDir, ['alpha'])).toEqual([]);
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k1', 'v1'], ['k2', 'v2'], ['after', 'served']]));
  });

  test('recovery run - writes rejected before the file failed, left in it by a failed cut, are not rebuilt into the table', async () => {
    const ctx = setup();
    await write(ctx.file, [['k1', 'v1']]);
    // A failed fsync whose rollback cut fails, at once and again at close: the rejected records stay in the file, with a cut marker.
    const ffs = new FaultyFs();
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, fs: ffs, sync: 'always' });
    ffs.failOn({ op: 'fdatasync', nth: 1 }).failOn({ op: 'truncate', nth: 1, sticky: true });
    await expect(t.put('rejected', b('x'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    await t.close();
    expect(existsSync(`${ctx.file}.cut`)).toBe(true);
    const outcome = await startRecovery(ctx.deps, { table: 'alpha', mode: 'recover', trigger: 'manual', reason: 'test' }, 0);
    expect(outcome).toMatchObject({ status: 'recovered', liveKeys: 1, verified: true });
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k1', 'v1']]));
    // The marker named the quarantined file: the rebuilt one opens without it, and it is gone then.
    await (await TableFile.open({ table: 'alpha', path: ctx.file })).close();
    expect(existsSync(`${ctx.file}.cut`)).toBe(false);
    // The quarantined file keeps the marker beside it: the rejected write is still in its bytes, and a salvage of it later leaves it out.
    const [quarantined] = readdirSync(quarantineDir(ctx.dataDir)).filter((f) => f.endsWith('.tkt'));
    const qfile = path.join(quarantineDir(ctx.dataDir), quarantined);
    expect(readFileSync(qfile).includes(b('rejected'))).toBe(true);
    expect(await pendingCutOf(qfile, nodeStoreFs)).toBeGreaterThan(0);
    const out = path.join(tmp.dir, 'salvaged.tkt');
    await salvageFile(qfile, out);
    expect((await contentsOf(out, 'alpha')).entries).toEqual(new Map([['k1', 'v1']]));
  });

  test('recovery run - a restore too is verified and finished before the owner serves', async () => {
    let journalsAtStart: unknown[] | undefined;
    const ctx = setup(async (table) => {
      journalsAtStart = pendingJournals(ctx.dataDir, [table]);
      await write(ctx.file, [['after', 'served']]);
      return 'serving';
    });
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await t.put('k1', b('v1'));
    await backupTable(t, ctx.deps.backupDir);
    await t.put('k2', b('rolled back'));
    await t.close();
    const outcome = await startRecovery(ctx.deps, { table: 'alpha', mode: 'restore', trigger: 'manual', reason: 'test' }, 0);
    expect(outcome).toMatchObject({ status: 'restored', liveKeys: 1, verified: true });
    expect(journalsAtStart).toEqual([]);
    expect(pendingJournals(ctx.dataDir, ['alpha'])).toEqual([]);
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k1', 'v1'], ['after', 'served']]));
  });

  test('recovery run - runs at the same clock time each get their own quarantine file, and each keeps its own table file', async () => {
    const ctx = setup();
    const kept: string[] = [];
    for (let round = 0; round < 3; round++) {
      await write(ctx.file, [[`r${round}`, 'x']]);
      const sha = sha256Of(ctx.file);
      const outcome = await startRecovery(ctx.deps, { table: 'alpha', mode: 'recover', trigger: 'manual', reason: `round ${round}` }, 0);
      expect(outcome.quarantined).not.toBeNull();
      expect(kept).not.toContain(outcome.quarantined);
      expect(sha256Of(outcome.quarantined as string)).toBe(sha);
      kept.push(outcome.quarantined as string);
      expect(outcome.liveKeys).toBe(round + 1);
    }
    expect(readdirSync(quarantineDir(ctx.dataDir)).sort()).toEqual(kept.map((f) => path.basename(f)).sort());
  });

  test('recovery run - a redo after the quarantine link was made but not the unlink finishes the move', async () => {
    const ctx = setup();
    await write(ctx.file, [['k1', 'v1']]);
    const quarantine = path.join(quarantineDir(ctx.dataDir), 'alpha-linked.tkt');
    mkdirSync(quarantineDir(ctx.dataDir));
    linkSync(ctx.file, quarantine);
    const journal = { table: 'alpha', mode: 'recover' as const, trigger: 'auto' as const, reason: 'test', quarantine, startedAt: new Date(0).toISOString() };
    await writeJournal(ctx.dataDir, journal);
    const outcome = await finishRecovery(ctx.deps, journal, 0);
    expect(outcome).toMatchObject({ liveKeys: 1, recordsLost: 0, quarantined: quarantine });
    expect(readdirSync(quarantineDir(ctx.dataDir))).toEqual(['alpha-linked.tkt']);
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k1', 'v1']]));
  });

  test('recovery run - a redo never overwrites a file found at the table path: it is kept aside in quarantine', async () => {
    const ctx = setup();
    await write(ctx.file, [['k1', 'v1']]);
    const quarantine = path.join(quarantineDir(ctx.dataDir), 'alpha-moved.tkt');
    mkdirSync(quarantineDir(ctx.dataDir));
    writeFileSync(quarantine, readFileSync(ctx.file));
    await write(ctx.file, [['k2', 'v2']]);
    const present = sha256Of(ctx.file);
    const journal = { table: 'alpha', mode: 'recover' as const, trigger: 'auto' as const, reason: 'test', quarantine, startedAt: new Date(0).toISOString() };
    await writeJournal(ctx.dataDir, journal);
    await finishRecovery(ctx.deps, journal, 0);
    const names = readdirSync(quarantineDir(ctx.dataDir));
    expect(names).toHaveLength(2);
    const aside = names.find((n) => n !== 'alpha-moved.tkt') as string;
    expect(sha256Of(path.join(quarantineDir(ctx.dataDir), aside))).toBe(present);
    expect(existsSync(quarantine)).toBe(true);
  });

  test('recovery run - a journal that cannot be read after the move still rebuilds from the moved file, not from the backups alone', async () => {
    const ctx = setup();
    const backupDir = ctx.deps.backupDir;
    await write(ctx.file, [['k1', 'backed-up']]);
    const t = await TableFile.open({ table: 'alpha', path: ctx.file, sync: 'always' });
    await backupTable(t, backupDir);
    await t.close();
    await write(ctx.file, [['k2', 'in no backup']]);
    // An earlier run of another table's name that starts with this one's: not taken for this table's.
    mkdirSync(quarantineDir(ctx.dataDir), { recursive: true });
    writeFileSync(quarantinePath(ctx.dataDir, 'alpha-b', new Date(Date.UTC(2030, 0, 1))), 'other');
    const journal = { table: 'alpha', mode: 'recover' as const, trigger: 'auto' as const, reason: 'test', quarantine: quarantinePath(ctx.dataDir, 'alpha', new Date(0)), startedAt: new Date(0).toISOString() };
    await writeJournal(ctx.dataDir, journal);
    await moveToQuarantine(ctx.dataDir, ctx.file, journal.quarantine, silent);
    // The run stops here, and its journal is damaged before the next start.
    writeFileSync(path.join(journalDir(ctx.dataDir), 'alpha.json'), '{"table":"alpha","mo');
    const [pending] = pendingJournals(ctx.dataDir, ['alpha']);
    expect(pending).toMatchObject({ table: 'alpha', mode: 'recover', reason: 'unreadable recovery journal', quarantine: journal.quarantine });
    const outcome = await finishRecovery(ctx.deps, pending, 0);
    expect(outcome).toMatchObject({ status: 'recovered', liveKeys: 2, recordsLost: 0, quarantined: journal.quarantine });
    expect((await contentsOf(ctx.file, 'alpha')).entries).toEqual(new Map([['k1', 'backed-up'], ['k2', 'in no backup']]));
  });
});
