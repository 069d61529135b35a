import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BadRequestError,
  CompactionStep,
  FILE_HEADER_BYTES,
  MaintenanceConflictError,
  recordBytes,
  scanFile,
  StoreIoError,
  SyncPolicy,
  TableClosedError,
  TableCorruptError,
  TableFile,
} from '../../store';
import { IndexTranslation, LiveOffsets, OffsetRemap } from '../../store/compaction-remap';
import { KeyIndex } from '../../store/key-index';
import { InternalError } from '../../store/errors';
import { WORKER_MIN_BYTES } from '../../store/record-check-worker';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';
import { contents, crashProblems, snapshotDir, Workload } from '../helpers/store-workload';

const tmp = useTempDir('tk-compact-');
const b = (s: string): Buffer => Buffer.from(s);
const dataDir = (): string => path.join(tmp.dir, 'data');
const file = (): string => path.join(dataDir(), 't.tkt');
const open = (opts: { sync?: SyncPolicy; fs?: FaultyFs; at?: string } = {}): Promise<TableFile> => {
  fs.mkdirSync(dataDir(), { recursive: true });
  return TableFile.open({ table: 't', path: opts.at ?? file(), sync: opts.sync, fs: opts.fs });
};
const settle = (ps: Promise<unknown>[]): Promise<unknown[]> => Promise.all(ps.map((p) => p.then(() => 'ok', (err: unknown) => err)));

/** Sequence numbers and kinds of the records of a file, checking that it has no damage. */
async function fileRecords(at: string): Promise<{ generation: number; records: { seq: number; kind: string; key: string; length: number }[] }> {
  let generation = 0;
  const records: { seq: number; kind: string; key: string; length: number }[] = [];
  for await (const item of scanFile(at)) {
    if (item.type === 'header') generation = item.header!.generation;
    else if (item.type === 'record') records.push({ seq: item.seq, kind: item.kind, key: item.key, length: item.length });
    else throw new Error(`damage in ${at}: ${item.reason}`);
  }
  return { generation, records };
}

function expectIncreasingSeqs(records: { seq: number }[]): void {
  for (let i = 1; i < records.length; i++) if (records[i].seq <= records[i - 1].seq) throw new Error(`seq ${records[i].seq} after ${records[i - 1].seq} at record ${i}`);
}

/** A promise with its resolve, for holding a compaction at a step. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('table file compaction', () => {
  test('compaction - keeps exactly the live records, in order, with a new generation and no fragmentation', async () => {
    const t = await open();
    const w = new Workload(t, { keys: 3000, valueBytes: 60 });
    await w.fill();
    // Non-ASCII keys take the string lookup in the copy: live, overwritten and deleted ones.
    for (const key of ['ключ', 'clé', '日本', '\u{1f600}', 'gone-é']) await w.put(key);
    await w.put('clé');
    await w.delete('gone-é');
    // End on a put: the highest sequence is then carried by a live record.
    await w.put(w.key(1));
    const before = t.stats();
    expect(before.deadBytes).toBeGreaterThan(0);
    const result = await t.compact();
    const after = t.stats();
    expect(result).toMatchObject({
      status: 'compacted',
      bytesBefore: before.fileBytes,
      bytesAfter: FILE_HEADER_BYTES + before.liveBytes,
      recordsCopied: before.records,
      tombstonesKept: 0,
      generation: before.generation + 1,
    });
    expect(after).toEqual({
      records: before.records,
      fileRecords: before.records,
      fileBytes: FILE_HEADER_BYTES + before.liveBytes,
      liveBytes: before.liveBytes,
      deadBytes: 0,
      fragmentation: 0,
      generation: before.generation + 1,
      seq: before.seq,
      // The switch empties the read cache: its offsets were those of the old file.
      readCache: { bytes: 0, entries: 0, hits: before.readCache.hits, misses: before.readCache.misses },
    });
    expect(t.generation).toBe(2);
    expect(contents(t)).toEqual(w.expected());
    expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
    expect(fs.statSync(file()).size).toBe(after.fileBytes);
    // Writes go on in the new file.
    await w.put(w.key(2));
    await w.delete(w.key(3));
    await t.close();

    const { generation, records } = await fileRecords(file());
    expect(generation).toBe(2);
    expectIncreasingSeqs(records);
    const r = await open();
    expect(contents(r)).toEqual(w.expected());
    expect(r.stats()).toMatchObject({ seq: before.seq + 2, generation: 2 });
    await r.close();
  });

  test('compaction - the highest sequence survives compaction and reopen when it is carried by a delete', async () => {
    const t = await open();
    await t.put('a', b('1'));
    await t.put('b', b('2'));
    await t.delete('b');
    const result = await t.compact();
    expect(result).toMatchObject({ recordsCopied: 2, tombstonesKept: 1 });
    expect(t.stats()).toMatchObject({ seq: 3, records: 1, deadBytes: recordBytes(1, 0) });
    await t.close();
    const r = await open();
    expect(r.stats().seq).toBe(3);
    await r.put('c', b('3'));
    expect(r.stats().seq).toBe(4);
    // Now a put carries the highest sequence: the tombstone goes.
    await r.compact();
    expect(r.stats()).toMatchObject({ seq: 4, records: 2, deadBytes: 0 });
    await r.close();
    const { records } = await fileRecords(file());
    expect(records.map((x) => [x.seq, x.kind, x.key])).toEqual([[1, 'put', 'a'], [4, 'put', 'c']]);
  });

  test('compaction - a delete after round one keeps its tombstone only when the new file holds a put of the key', async () => {
    const t = await open();
    for (let i = 0; i < 50; i++) await t.put(`k${i}`, b(`v${i}`));
    const result = await t.compact({
      onStep: async (step) => {
        // After round one: these are copied by the final round.
        if (step === 'caught-up') {
          await t.put('fresh', b('x'));
          await t.delete('fresh');
          await t.delete('k7');
          await t.put('k8', b('w'));
          await t.delete('k8');
          await t.put('k9', b('w'));
        }
      },
    });
    // k7 and k8 were copied by round one: without their deletes they would come back on reopen.
    // 'fresh' never reached the new file, so its delete is dropped.
    expect(result).toMatchObject({ tombstonesKept: 2 });
    await t.close();
    const { records } = await fileRecords(file());
    expect(records.filter((r) => r.kind === 'delete').map((r) => r.key)).toEqual(['k7', 'k8']);
    expect(records.some((r) => r.key === 'fresh')).toBe(false);
    const r = await open();
    const want = new Map([...Array(50).keys()].filter((i) => i !== 7 && i !== 8).map((i) => [`k${i}`, `v${i}`]));
    want.set('k9', 'w');
    expect(contents(r)).toEqual(want);
    await r.close();
  });

  test('compaction - keepTombstonesAbove keeps exactly the last delete of each absent key above it', async () => {
    const t = await open();
    for (const k of ['k1', 'k2', 'k3', 'k4', 'k5', 'k6']) await t.put(k, b(`v-${k}`)); // seq 1-6
    await t.delete('k1'); // 7
    await t.delete('k2'); // 8
    await t.put('k2', b('again')); // 9: k2 lives, its delete is not needed
    await t.delete('k3'); // 10: superseded by the delete at 12
    await t.put('k3', b('again')); // 11
    await t.delete('k3'); // 12
    await t.delete('k4'); // 13
    await t.put('x', b('last')); // 14
    const model = contents(t);
    const liveBytes = t.stats().liveBytes;
    await t.close();
    const variants: [number | undefined, number[]][] = [
      [undefined, []],
      [14, []],
      [8, [12, 13]],
      [7, [12, 13]],
      [6, [7, 12, 13]],
      [0, [7, 12, 13]],
    ];
    const original = fs.readFileSync(file());
    for (const [keep, seqs] of variants) {
      fs.writeFileSync(file(), original);
      const c = await open();
      const result = await c.compact({ keepTombstonesAbove: keep });
      const tombBytes = seqs.length * recordBytes(2, 0);
      expect({ keep, kept: result.tombstonesKept }).toEqual({ keep, kept: seqs.length });
      // Every dead byte is a kept tombstone.
      expect(c.stats()).toMatchObject({ deadBytes: tombBytes, liveBytes, fileBytes: FILE_HEADER_BYTES + liveBytes + tombBytes, seq: 14 });
      expect(contents(c)).toEqual(model);
      await c.close();
      const { records } = await fileRecords(file());
      expectIncreasingSeqs(records);
      expect({ keep, seqs: records.filter((r) => r.kind === 'delete').map((r) => r.seq) }).toEqual({ keep, seqs });
      const r = await open();
      expect(contents(r)).toEqual(model);
      await r.close();
    }
  });

  test.each<[string, SyncPolicy]>([
    ['always', 'always'],
    ['none', 'none'],
  ])('compaction - puts, overwrites and deletes during every phase are neither lost nor reordered (sync %s)', async (_name, sync) => {
    const t = await open({ sync });
    const w = new Workload(t, { keys: 12000, valueBytes: 110, seed: 11 });
    await w.fill();
    const before = t.stats();
    const steps: CompactionStep[] = [];
    const bursts = new Map<CompactionStep, Promise<unknown>[]>();
    const heldAtDirSync: string[] = [];
    let firstHeldId = Infinity;
    w.start(4);
    const result = await t.compact({
      onStep: async (step) => {
        // Reads see every write issued so far, in every phase.
        for (let i = 0; i < 100; i++) {
          const key = w.key(w.rand(12000));
          expect(t.get(key)?.toString()).toBe(w.visible(key));
        }
        if (step === 'dir-synced') {
          // Writes issued while paused are held: none is acknowledged before the switch.
          for (const op of [...w.history.values()].flat()) if (op.state === 'acked' && op.id >= firstHeldId) heldAtDirSync.push(`${op.id}`);
        }
        // A big burst at the first flush makes phase 2 run more than one round.
        const n = step === 'flushed' && !steps.includes('flushed') ? 700 : 30;
        steps.push(step);
        if (step === 'paused') firstHeldId = nextId(w);
        const ops: Promise<unknown>[] = [];
        for (let i = 0; i < n; i++) ops.push(i % 10 === 0 ? w.put(`new:${step}:${i}`) : w.randomOp());
        bursts.set(step, ops);
        await new Promise((resolve) => setImmediate(resolve));
      },
    });
    await w.stop();
    await settle([...bursts.values()].flat());
    expect(w.failed).toBe(0);
    expect(heldAtDirSync).toEqual([]);
    expect(steps.filter((s) => s !== 'flushed')).toEqual(['started', 'caught-up', 'paused', 'before-rename', 'renamed', 'dir-synced', 'switched']);
    expect(steps.filter((s) => s === 'flushed').length).toBeGreaterThanOrEqual(2);
    expect(result.rounds).toBeGreaterThanOrEqual(2);
    expect(result.generation).toBe(before.generation + 1);
    expect(t.generation).toBe(before.generation + 1);

    const expected = w.expected();
    expect(contents(t)).toEqual(expected);
    await t.close();
    expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
    const { generation, records } = await fileRecords(file());
    expect(generation).toBe(before.generation + 1);
    expectIncreasingSeqs(records);
    const r = await open({ sync });
    expect(contents(r)).toEqual(expected);
    expect(r.stats().seq).toBe(records[records.length - 1].seq);
    await r.close();
  });

  test.each<CompactionStep>(['started', 'flushed', 'caught-up', 'paused', 'before-rename', 'renamed', 'dir-synced', 'switched'])(
    'compaction - a crash at step %s leaves a table with every acknowledged write and no leftover',
    async (crashAt) => {
      const t = await open();
      const w = new Workload(t, { keys: 10000, valueBytes: 110, seed: 5 });
      await w.fill();
      const snap = path.join(tmp.dir, 'snap');
      let allowed: Map<string, Set<string | undefined>> | undefined;
      const burst: Promise<unknown>[] = [];
      w.start(3);
      await t.compact({
        onStep: async (step) => {
          if (step === 'paused') for (let i = 0; i < 40; i++) burst.push(w.randomOp());
          if (step === crashAt && allowed === undefined) {
            // The files as a kill -9 at this instant would leave them.
            snapshotDir(dataDir(), snap);
            allowed = w.allowedNow();
          }
          await new Promise((resolve) => setImmediate(resolve));
        },
      });
      await w.stop();
      await settle(burst);
      await t.close();
      expect(allowed).toBeDefined();
      const renamed = ['renamed', 'dir-synced', 'switched'].includes(crashAt);
      expect(fs.readdirSync(snap).sort()).toEqual(renamed ? ['t.tkt'] : ['t.tkt', 't.tkt.compact']);

      const r = await open({ at: path.join(snap, 't.tkt') });
      expect(r.openReport.tornTailBytes).toBe(0);
      expect(r.generation).toBe(renamed ? 2 : 1);
      expect(crashProblems(allowed!, contents(r))).toEqual([]);
      expect(fs.readdirSync(snap)).toEqual(['t.tkt']);
      await r.close();
    },
  );

  describe('writes rolled back, and keys made and removed, while a compaction runs', () => {
    test('compaction - a delete rolled back after the index walk started leaves its key readable from the new file', async () => {
      const ffs = new FaultyFs();
      const t = await open({ fs: ffs });
      await t.put('a', b('"A"'));
      await t.put('k', b('"K"'));
      await t.put('z', b('"Z"'));
      for (let i = 0; i < 20; i++) await t.put('a', b(`"A${i}"`));
      let deleted: Promise<unknown[]> | undefined;
      let releaseSync: (() => void) | undefined;
      const result = await t.compact({
        onStep: (step) => {
          if (step === 'started') {
            // The copy's first read comes once round one has noted its end,
            // so the delete lands above it; its fdatasync is held, then fails.
            const read = ffs.hold('read');
            void read.reached.then(() => {
              releaseSync = ffs.hold('fdatasync').release;
              ffs.failOn({ op: 'fdatasync', nth: 1 });
              deleted = settle([t.delete('k')]);
              read.release();
            });
          }
          // The index walk has run (and found no 'k'); now the delete is rolled back, putting 'k' back.
          if (step === 'caught-up') releaseSync!();
        },
      });
      expect(result.status).toBe('compacted');
      const [outcome] = await deleted!;
      expect(outcome).toBeInstanceOf(StoreIoError);
      expect(t.get('k')).toEqual(b('"K"'));
      expect(t.select({}).items.map((i) => [i.key, i.value.toString()])).toEqual([['a', '"A19"'], ['k', '"K"'], ['z', '"Z"']]);
      // The index holds only offsets of the new file: another compaction finds every live record.
      await expect(t.compact()).resolves.toMatchObject({ status: 'compacted', recordsCopied: 3 });
      await t.close();
      const r = await open();
      expect(r.get('k')).toEqual(b('"K"'));
      await r.close();
    });

    test('compaction - keys created and deleted while writes are held (the index outgrows its slots) do not stop the switch', async () => {
      const t = await open();
      const puts: Promise<void>[] = [];
      for (let i = 0; i < 1000; i++) puts.push(t.put(`job-${i}`, b(`{"n":${i}}`)));
      await Promise.all(puts);
      for (let i = 0; i < 1000; i += 2) await t.put(`job-${i}`, b(`{"n":${i},"v":2}`));
      let churn: Promise<unknown[]> | undefined;
      const result = await t.compact({
        onStep: (step) => {
          if (step !== 'before-rename') return;
          // Held until the switch: 3000 new keys take slots the index did not
          // have when the translation copied its offsets, and are freed again.
          const writes: Promise<unknown>[] = [];
          for (let j = 0; j < 3000; j++) writes.push(t.put(`tmp-${j}`, b('"x"')));
          for (let j = 0; j < 3000; j++) writes.push(t.delete(`tmp-${j}`));
          churn = settle(writes);
        },
      });
      expect(result.status).toBe('compacted');
      expect((await churn!).filter((o) => o !== 'ok')).toEqual([]);
      await t.put('after', b('1'));
      expect(t.stats()).toMatchObject({ records: 1001, generation: 2 });
      expect(t.get('job-2')).toEqual(b('{"n":2,"v":2}'));
      expect(t.get('tmp-0')).toBeUndefined();
      await t.close();
      const r = await open();
      expect(r.stats()).toMatchObject({ records: 1001, generation: 2 });
      expect(r.get('job-1')).toEqual(b('{"n":1}'));
      await r.close();
    });

    test('compaction - of a file holding only its header, with a write made meanwhile', async () => {
      const t = await open();
      const result = await t.compact({
        onStep: async (step) => {
          // Written (and acknowledged) before the pause: the last round has a range to copy, round one had none.
          if (step === 'caught-up') await t.put('a', b('"1"'));
        },
      });
      expect(result).toMatchObject({ status: 'compacted', recordsCopied: 1, generation: 2 });
      expect(t.get('a')).toEqual(b('"1"'));
      await t.close();
      const r = await open();
      expect(r.get('a')).toEqual(b('"1"'));
      await r.close();
    });
  });

  describe('failures leave the table on the old file', () => {
    /** A table of ~1.3 MB live data (so the copy takes two buffers), closed and reopened through `ffs`. */
    async function setup(ffs: FaultyFs): Promise<{ t: TableFile; w: Workload; original: Buffer }> {
      const t0 = await open();
      const w = new Workload(t0, { keys: 10000, valueBytes: 120 });
      await w.fill();
      await t0.close();
      w.table = await open({ fs: ffs });
      return { t: w.table, w, original: fs.readFileSync(file()) };
    }

    /** Compacts with one write held at the pause; checks the failure, then that the table works on the old file. */
    async function expectFailure(t: TableFile, w: Workload, original: Buffer, expectError: (err: unknown) => void): Promise<void> {
      let held: Promise<unknown> | undefined;
      const err = await t
        .compact({
          onStep: (step) => {
            if (step === 'paused') held = w.put('held');
          },
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expectError(err);
      if (held !== undefined) await held;
      expect(t.failed).toBeUndefined();
      expect(t.generation).toBe(1);
      expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
      // The old file only grew by the writes made since.
      expect(fs.readFileSync(file()).subarray(0, original.length).equals(original)).toBe(true);
      await w.put('after');
      await w.delete(w.key(3));
      expect(contents(t)).toEqual(w.expected());
      await t.close();
      const r = await open();
      expect(r.generation).toBe(1);
      expect(contents(r)).toEqual(w.expected());
      await r.close();
    }

    test.each<[string, { op: 'write' | 'fdatasync' | 'rename' | 'read' | 'open'; nth: number }]>([
      ['the new file cannot be created', { op: 'open', nth: 1 }],
      ['a write of the new file fails mid copy', { op: 'write', nth: 2 }],
      ['a read of the old file fails', { op: 'read', nth: 1 }],
      ['the fdatasync of the bulk fails', { op: 'fdatasync', nth: 1 }],
      ['the fdatasync in the pause fails', { op: 'fdatasync', nth: 2 }],
      ['the rename fails', { op: 'rename', nth: 1 }],
    ])('compaction - when %s it rejects with StoreIoError', async (_name, fault) => {
      const ffs = new FaultyFs();
      const { t, w, original } = await setup(ffs);
      ffs.failOn(fault);
      await expectFailure(t, w, original, (err) => {
        expect(err).toBeInstanceOf(StoreIoError);
        expect(err).toMatchObject({ code: 'IO_ERROR', details: { table: 't', operation: 'compact', step: fault.op } });
      });
      expect(ffs.fired).toHaveLength(1);
    });

    test('compaction - a record that fails its checksum aborts with TableCorruptError and nothing changes', async () => {
      const ffs = new FaultyFs();
      const { t, w } = await setup(ffs);
      // Damage a superseded record (key 3 was overwritten by fill) near the
      // start of the file: no read touches it, only the compaction does.
      const { records } = await fileRecords(file());
      expect(records[3].key).toBe(w.key(3));
      const offset = FILE_HEADER_BYTES + records.slice(0, 3).reduce((n, r) => n + r.length, 0);
      const fd = fs.openSync(file(), 'r+');
      fs.writeSync(fd, Buffer.from([0xff]), 0, 1, offset + 30);
      fs.closeSync(fd);
      const damaged = fs.readFileSync(file());
      const err = await t.compact().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TableCorruptError);
      expect(err).toMatchObject({ code: 'TABLE_CORRUPT', offset, reason: 'checksum mismatch' });
      expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
      expect(fs.readFileSync(file()).equals(damaged)).toBe(true);
      expect(t.generation).toBe(1);
      await w.put('after');
      expect(t.get('after')?.toString()).toBe(w.visible('after'));
      await t.close();
    });

    test('compaction - when the directory fsync after the rename fails, the table is on the new file and refuses writes', async () => {
      const ffs = new FaultyFs();
      const { t, w } = await setup(ffs);
      ffs.failOn({ op: 'syncDir', nth: 1 });
      let held: Promise<unknown> | undefined;
      await expect(
        t.compact({
          onStep: (step) => {
            if (step === 'paused') held = w.put('held').catch((err: unknown) => err);
          },
        }),
      ).rejects.toMatchObject({ name: 'StoreIoError', details: { step: 'syncDir' } });
      // The held write was never acknowledged.
      expect(await held).toBeInstanceOf(StoreIoError);
      expect(t.failed).toBeInstanceOf(StoreIoError);
      expect(t.generation).toBe(2);
      expect(contents(t)).toEqual(w.expected());
      await expect(t.put('x', b('1'))).rejects.toThrow(StoreIoError);
      await t.close();
      expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
      const r = await open();
      expect(r.generation).toBe(2);
      expect(contents(r)).toEqual(w.expected());
      await r.close();
    });

    test('compaction - a write below the start offset that is rolled back makes the round start again; nothing is lost', async () => {
      const ffs = new FaultyFs();
      const { t, w } = await setup(ffs);
      // Written, not yet fsynced, when round one notes its offset; then its fsync fails.
      const gate = ffs.hold('fdatasync');
      const doomed = w.put(w.key(7));
      // Right after the rollback a longer record reuses the doomed record's offset.
      const follower = doomed.catch(() => w.put('follower', 1000));
      await gate.reached;
      const result = await t.compact({
        onStep: (step) => {
          if (step !== 'started') return;
          // Released after round one has started (and noted the doomed record below its offset).
          setImmediate(() => {
            ffs.failOn({ op: 'fdatasync', nth: 1 });
            gate.release();
          });
        },
      });
      await expect(doomed).rejects.toThrow(StoreIoError);
      await follower;
      expect(result.generation).toBe(2);
      expect(contents(t)).toEqual(w.expected());
      await t.close();
      const r = await open();
      expect(contents(r)).toEqual(w.expected());
      await r.close();
    });
  });

  test('compaction - a write made during the copy and rolled back after the copy passed its key leaves the key as it was', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    const w = new Workload(t, { keys: 10000, valueBytes: 120 });
    await w.fill();
    // Key 9999's live record is the last of the file: the copy reaches it last.
    const key = w.key(9999);
    let doomed: Promise<unknown> | undefined;
    let gate: { reached: Promise<void>; release: () => void } | undefined;
    const result = await t.compact({
      onStep: async (step) => {
        if (step === 'flushed' && doomed === undefined) {
          // Mid copy: overwrite the key; its fsync is held, then fails (and is rolled back).
          gate = ffs.hold('fdatasync');
          doomed = w.put(key).catch((err: unknown) => err);
          await gate.reached;
        }
        if (step === 'caught-up') {
          // A held call is counted when released: this makes it fail.
          ffs.failOn({ op: 'fdatasync', nth: 1 });
          gate!.release();
          expect(await doomed).toBeInstanceOf(StoreIoError);
        }
      },
    });
    expect(result.generation).toBe(2);
    expect(t.get(key)?.toString()).toBe(w.visible(key));
    expect(contents(t)).toEqual(w.expected());
    await t.close();
    const r = await open();
    expect(contents(r)).toEqual(w.expected());
    await r.close();
  });

  test('compaction - writes held by the pause that then fail in the new file are undone to the compacted records', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    const w = new Workload(t, { keys: 2000, valueBytes: 50 });
    await w.fill();
    // Settled as they are made: they fail while the compaction still runs, and must not count as unhandled meanwhile.
    const held: Promise<unknown[]>[] = [];
    await t.compact({
      onStep: async (step) => {
        // Key 5's live record is then in the last tail, copied by the final round.
        if (step === 'caught-up') await w.put(w.key(5));
        if (step === 'paused') held.push(settle([w.put(w.key(1)), w.delete(w.key(2)), w.put('brand-new'), w.put(w.key(1)), w.put(w.key(5))]));
        // Every write of the compaction is done: the next write is the held batch, to the new file.
        if (step === 'dir-synced') ffs.failOn({ op: 'write', nth: 1 });
      },
    });
    const outcomes = (await Promise.all(held)).flat();
    expect(outcomes).toHaveLength(5);
    for (const err of outcomes) expect(err).toBeInstanceOf(StoreIoError);
    expect(t.failed).toBeUndefined();
    expect(t.get(w.key(1))?.toString()).toBe(w.visible(w.key(1)));
    expect(t.get(w.key(2))?.toString()).toBe(w.visible(w.key(2)));
    expect(t.get(w.key(5))?.toString()).toBe(w.visible(w.key(5)));
    expect(t.has('brand-new')).toBe(false);
    expect(contents(t)).toEqual(w.expected());
    // Dead: only key 5's round-one copy, superseded by its copy in the final round.
    expect(t.stats()).toMatchObject({ deadBytes: recordBytes(w.key(5).length, 50), fileRecords: w.expected().size + 1 });
    await w.put(w.key(2));
    await t.close();
    const r = await open();
    expect(contents(r)).toEqual(w.expected());
    await r.close();
  });

  test('compaction - a large table (checksums checked in a worker thread) keeps its live records, and a damaged dead record far into it aborts', async () => {
    const t = await open({ sync: 'none' });
    const value = (k: number, round: number): Buffer => Buffer.from(`${round}:${k}:`.padEnd(300, 'x'));
    // Well over WORKER_MIN_BYTES (4 MiB) of records, about half of them dead.
    const keys = 10000;
    for (let round = 0; round < 2; round++) {
      const puts: Promise<void>[] = [];
      for (let k = 0; k < keys; k++) puts.push(t.put(`key-${k}`, value(k, round)));
      await Promise.all(puts);
    }
    for (let k = 0; k < keys; k += 10) await t.delete(`key-${k}`);
    await t.sync();
    expect(t.durableLength).toBeGreaterThan(5 * 1024 * 1024);
    const before = await fileRecords(file());
    // Damage one dead record (a first-round put, overwritten) at about 45% of the file.
    const victim = before.records[Math.floor(keys * 0.9)];
    expect(victim.seq).toBeLessThanOrEqual(keys);
    const offset = FILE_HEADER_BYTES + before.records.slice(0, Math.floor(keys * 0.9)).reduce((n, r) => n + r.length, 0);
    const original = fs.readFileSync(file()).subarray(offset + 60, offset + 61);
    const damage = (byte: Buffer): void => {
      const fd = fs.openSync(file(), 'r+');
      fs.writeSync(fd, byte, 0, 1, offset + 60);
      fs.closeSync(fd);
    };
    damage(Buffer.from([original[0] ^ 0xff]));
    const damaged = fs.readFileSync(file());
    const err = await t.compact().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableCorruptError);
    expect(err).toMatchObject({ code: 'TABLE_CORRUPT', offset, reason: 'checksum mismatch' });
    expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
    expect(fs.readFileSync(file()).equals(damaged)).toBe(true);
    expect(t.generation).toBe(1);

    // Repaired, the same table compacts to exactly its live records, in log order.
    damage(original);
    const result = await t.compact();
    expect(result).toMatchObject({ status: 'compacted', generation: 2 });
    const after = await fileRecords(file());
    const live = new Map<string, (typeof before.records)[number]>();
    for (const r of before.records) {
      if (r.kind === 'put') live.set(r.key, r);
      else live.delete(r.key);
    }
    const expected = [...live.values()].sort((x, y) => x.seq - y.seq);
    // The delete that carries the highest sequence is kept, so that the sequence survives reopen.
    expected.push(before.records[before.records.length - 1]);
    expect(before.records[before.records.length - 1]).toMatchObject({ kind: 'delete', key: 'key-9990' });
    expect(after.records.map((r) => [r.seq, r.key])).toEqual(expected.map((r) => [r.seq, r.key]));
    for (let k = 1; k < keys; k += 997) expect(t.get(`key-${k}`)?.toString()).toBe(k % 10 === 0 ? undefined : value(k, 1).toString());
    await t.close();
  });

  test('compaction - puts and deletes made while round one walks a large index are neither lost nor resurrected', async () => {
    const t = await open({ sync: 'none' });
    // Enough keys that finding round one's live records from the index takes several time slices.
    const w = new Workload(t, { keys: 150000, valueBytes: 40, seed: 5 });
    await w.fill();
    w.start(4);
    const result = await t.compact();
    await w.stop();
    expect(w.failed).toBe(0);
    expect(result.generation).toBe(2);
    const expected = w.expected();
    expect(contents(t)).toEqual(expected);
    await t.close();
    const { records } = await fileRecords(file());
    expectIncreasingSeqs(records);
    const r = await open();
    expect(contents(r)).toEqual(expected);
    await r.close();
  });

  test('compaction - the live offset set holds exactly the offsets added in its range, each with the value noted for it', () => {
    const start = 1000;
    const end = start + 200000;
    const set = new LiveOffsets(start, end);
    // Record starts 21..90 bytes apart; every third one left out.
    const all: number[] = [];
    for (let at = start, i = 0; at < end; at += 21 + ((i * 37) % 70), i++) all.push(at);
    const added = all.filter((_, i) => i % 3 !== 1);
    for (const at of added) set.add(at);
    set.add(-1);
    set.add(start - 21);
    set.add(end);
    set.countWords(0, set.words);
    set.counted();
    added.forEach((at, i) => set.setValue(at, 7 * i + 0.5 * 2 ** 40));
    set.setValue(all[1], 99);
    expect(all.filter((at) => set.has(at))).toEqual(added);
    expect(added.map((at) => set.valueAt(at))).toEqual(added.map((_, i) => 7 * i + 0.5 * 2 ** 40));
    expect([all[1], start - 21, end, -1].map((at) => set.valueAt(at))).toEqual([-1, -1, -1, -1]);
  });

  test('compaction - the offset remap answers round one from its live set and later rounds from their sorted tail', () => {
    const bulk = new LiveOffsets(100, 10000);
    for (const at of [100, 150, 9979]) bulk.add(at);
    bulk.countWords(0, bulk.words);
    bulk.counted();
    const remap = new OffsetRemap();
    remap.useBulk(bulk);
    bulk.setValue(100, 16);
    bulk.setValue(150, 40);
    bulk.setValue(9979, 64);
    for (let i = 0; i < 50; i++) remap.addTail(10000 + 30 * i, 100 + 30 * i);
    expect([100, 150, 9979, 120, 10000, 10030, 11470, 10015, 11500, 50].map((at) => remap.lookup(at))).toEqual([16, 40, 64, -1, 100, 130, 1570, -1, -1, -1]);
    expect(() => remap.addTail(11470, 1)).toThrow(InternalError);
  });

  test('compaction - the index translation moves every live key to its copy, written keys and new slots included', async () => {
    const index = new KeyIndex();
    const n = 3000;
    const oldAt = (i: number) => 100 + 50 * i;
    const newAt = (i: number) => 16 + 50 * i;
    for (let i = 0; i < n; i++) index.set(`k${i}`, oldAt(i), 50);
    const bulk = new LiveOffsets(oldAt(0), oldAt(n));
    for (let i = 0; i < n; i++) bulk.add(oldAt(i));
    bulk.countWords(0, bulk.words);
    bulk.counted();
    const remap = new OffsetRemap();
    remap.useBulk(bulk);
    // Round one copied every record but the last 100, which the walk must leave for settle().
    for (let i = 0; i < n - 100; i++) bulk.setValue(oldAt(i), newAt(i));
    const translation = new IndexTranslation(index, remap);
    const expected = new Map<string, number>();
    for (let i = 0; i < n; i++) expected.set(`k${i}`, newAt(i));
    const write = (key: string, at: number | undefined) => {
      translation.noteWrite(key);
      if (at === undefined) {
        index.remove(key);
        expected.delete(key);
      } else index.set(key, at, 50);
    };
    await translation.walk(oldAt(n - 100), (slicer) => slicer.yield());
    for (let i = n - 100; i < n; i++) bulk.setValue(oldAt(i), newAt(i));
    // Written after the walk began: an overwrite, removals (their slots reused) and enough new keys to grow the index's arrays.
    let tail = oldAt(n);
    const copy = (key: string) => {
      write(key, tail);
      remap.addTail(tail, tail - 84);
      expected.set(key, tail - 84);
      tail += 50;
    };
    copy('k5');
    write('k6', undefined);
    write('k7', undefined);
    for (let i = 0; i < 2000; i++) copy(`new${i}`);
    const heldStart = tail;
    translation.settle(heldStart, 5000);
    // Held by the pause (at heldStart in the old file, at 5000 in the new one), after settle().
    write('k8', heldStart);
    expected.set('k8', 5000);
    write('new3', undefined);
    translation.settle(heldStart, 5000);
    index.adoptOffsets(translation.offsets());
    const got = new Map(index.keys().map((key) => [key, index.offsetOf(index.slotOf(key))]));
    expect(got).toEqual(expected);
    // An index entry below the held start whose record was never copied is refused.
    index.set('lost', tail + 10, 50);
    translation.noteWrite('lost');
    expect(() => translation.settle(tail + 1000, 5000)).toThrow(InternalError);
  });

  test('compaction - open deletes a leftover compaction file and never reads it', async () => {
    const t = await open();
    await t.put('a', b('1'));
    await t.close();
    fs.writeFileSync(`${file()}.compact`, 'garbage that is not a table file');
    const r = await open();
    expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
    expect(contents(r)).toEqual(new Map([['a', '1']]));
    await r.close();
  });

  test('compaction - one maintenance at a time: a second compaction or a backup is refused with MaintenanceConflictError', async () => {
    const t = await open();
    await t.put('a', b('1'));
    const gate = deferred();
    const first = t.compact({ onStep: (step) => (step === 'started' ? gate.promise : undefined) });
    await expect(t.compact()).rejects.toBeInstanceOf(MaintenanceConflictError);
    await expect(t.compact()).rejects.toMatchObject({ code: 'MAINTENANCE_CONFLICT', details: { table: 't', requested: 'compaction', running: 'compaction' } });
    await expect(t.runMaintenance('backup', async () => 'ran')).rejects.toMatchObject({ code: 'MAINTENANCE_CONFLICT', details: { running: 'compaction' } });
    gate.resolve();
    await first;
    // Free again.
    await expect(t.runMaintenance('backup', async () => 'ran')).resolves.toBe('ran');
    await t.compact();
    expect(t.generation).toBe(3);
    await t.close();
  });

  test('compaction - refused on a closed or failed table and for a bad keepTombstonesAbove', async () => {
    const ffs = new FaultyFs();
    const t = await open({ fs: ffs });
    await t.put('a', b('1'));
    await expect(t.compact({ keepTombstonesAbove: -1 })).rejects.toBeInstanceOf(BadRequestError);
    await expect(t.compact({ keepTombstonesAbove: 1.5 })).rejects.toBeInstanceOf(BadRequestError);
    ffs.failOn({ op: 'write', nth: 1, partialBytes: 3 }).failOn({ op: 'truncate', nth: 1 });
    await expect(t.put('b', b('2'))).rejects.toThrow(StoreIoError);
    expect(t.failed).toBeDefined();
    await expect(t.compact()).rejects.toMatchObject({ name: 'StoreIoError', details: { failed: true } });
    await t.close();
    await expect(t.compact()).rejects.toBeInstanceOf(TableClosedError);
  });

  test.each([
    ['in-process', 10000, 110, 0],
    // Over WORKER_MIN_BYTES: the checksums of round one are checked by a worker thread, which is stopped too.
    ['in a worker', 12000, 700, WORKER_MIN_BYTES],
  ])('compaction - close during a compaction stops it and leaves the old file (checksums checked %s)', async (_name, keys, valueBytes, minBytes) => {
    const t = await open();
    const w = new Workload(t, { keys, valueBytes });
    await w.fill();
    expect(t.stats().fileBytes).toBeGreaterThan(minBytes);
    let closing: Promise<void> | undefined;
    const compaction = t.compact({
      onStep: (step) => {
        if (step === 'flushed' && closing === undefined) closing = t.close();
      },
    });
    await expect(compaction).rejects.toBeInstanceOf(TableClosedError);
    await closing;
    expect(fs.readdirSync(dataDir())).toEqual(['t.tkt']);
    const r = await open();
    expect(r.generation).toBe(1);
    expect(contents(r)).toEqual(w.expected());
    await r.close();
  });
});

function nextId(w: Workload): number {
  // The id the next issued operation gets: one more than the highest so far.
  let max = -1;
  for (const ops of w.history.values()) for (const op of ops) if (op.id > max) max = op.id;
  return max + 1;
}
