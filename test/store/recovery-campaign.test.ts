/**
 * A damage campaign against rebuildTable: many tables with a known, seeded
 * history (puts, overwrites, deletes, backups, sometimes compactions), each
 * damaged one way, rebuilt, and checked against an oracle computed from the
 * history and from which bytes the damage actually changed.
 *
 * Ground truth per case:
 * - the records of the undamaged file (offsets, lengths, keys, sequences);
 * - a record is damaged when any of its bytes changed or was cut off;
 *   identifiable when its kind, flags, lengths, sequence and key bytes
 *   (bytes 4 .. 20 + key length) are unchanged. A record with exactly one
 *   changed bit is repaired for sure when the search reaches its start (the
 *   record before it is intact, repaired for sure or identifiable, or its
 *   own header reads), and may be repaired otherwise;
 * - the backup used is the newest one the case did not damage;
 * - a key's newest available record is its highest-sequence record that is
 *   intact in the file (or repaired) or in the backup used; a key is at risk
 *   when a damaged, unrepaired record of it is newer than that.
 * Checked, with the seed in every test name:
 * - never a wrong value: a key present in the rebuilt table has exactly the
 *   value of its newest available record (so never a superseded value and
 *   never a deleted key brought back), and no unknown key appears;
 * - a key not at risk has exactly its final state from the history;
 * - a key at risk whose newest damaged record is identifiable is absent and
 *   listed in lostKeys; lostKeys lists nothing else, except a key read from
 *   the damaged bytes of a record whose key bytes were hit (the documented
 *   limit);
 * - no loss is reported when every damaged record is covered (unless a
 *   damaged header still reads as a header), the loss counts are exact when
 *   every damaged record is identifiable, and an uncovered record whose
 *   header cannot be read is counted as an unidentified stretch;
 * - the rebuilt file opens, with as many records and live keys as reported.
 *
 * Every case is reproducible from its name. To explore other seeds:
 * SEED_FROM=5000 SEED_MUL=10 npx jest test/store/recovery-campaign.test.ts
 * (CAMPAIGN_DEBUG=1 also prints the damaged records of a failing case).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { backupTable, BackupManifest, rebuildTable, RebuildReport, ScannedRecord, TableFile } from '../../store';
import { useTempDir } from '../helpers/store-temp';
import { contentsOf, recordsOf } from './recovery-helpers';

const tmp = useTempDir('tk-campaign-');
const at = (ms: number): Date => new Date(Date.UTC(2024, 0, 2, 3, 4, 5) + ms);

type DamageKind = 'bit flip' | 'random bytes' | 'zeroed bytes' | 'two ranges' | 'truncation' | 'zeroed header' | 'deleted file' | 'damaged backup';

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n: number): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

/** One write of the history. */
interface Op {
  key: string;
  seq: number;
  value: string | undefined;
}

interface Built {
  history: Op[];
  backups: BackupManifest[];
  /** Records of the undamaged table file. */
  records: ScannedRecord[];
  generation: number;
}

/** Builds a table with a seeded history, one or two backups and sometimes compactions; closes it. */
async function build(rand: (n: number) => number, file: string, backupDir: string): Promise<Built> {
  const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
  const keyCount = 6 + rand(20);
  const keys = Array.from({ length: keyCount }, (_, i) => (rand(7) === 0 ? `ключ-${i}` : `key:${String(i).padStart(3, '0')}`));
  const state = new Map<string, string>();
  const history: Op[] = [];
  let n = 0;
  const run = async (ops: number): Promise<void> => {
    for (let i = 0; i < ops; i++) {
      const key = keys[rand(keys.length)];
      if (state.has(key) && rand(5) === 0) {
        await t.delete(key);
        state.delete(key);
        history.push({ key, seq: t.stats().seq, value: undefined });
      } else {
        const value = JSON.stringify({ n: n++, note: 'é'.repeat(rand(3)) + 'x'.repeat(rand(60)) });
        await t.put(key, Buffer.from(value));
        state.set(key, value);
        history.push({ key, seq: t.stats().seq, value });
      }
    }
  };
  const backups: BackupManifest[] = [];
  const keepAbove = (): number | undefined => (backups.length === 0 ? undefined : Math.min(...backups.map((m) => m.maxSeq)));
  const maybeCompact = async (): Promise<void> => {
    if (rand(3) === 0) await t.compact({ keepTombstonesAbove: keepAbove() });
  };
  await run(20 + rand(80));
  await maybeCompact();
  backups.push(await backupTable(t, backupDir, { now: at(0) }));
  await run(5 + rand(40));
  await maybeCompact();
  if (rand(2) === 0) {
    backups.push(await backupTable(t, backupDir, { now: at(1000) }));
    await run(rand(30));
    await maybeCompact();
  }
  const generation = t.generation;
  await t.close();
  return { history, backups: backups.reverse(), records: await recordsOf(file), generation };
}

/** What a damage did. */
interface Damage {
  /** The damaged file's bytes; undefined when the file was deleted. */
  bytes: Buffer | undefined;
  /** Set when the damage is one flipped bit (it must be repaired). */
  flippedBit: number | undefined;
  /** Name of the backup the case damaged, if any. */
  damagedBackup: string | undefined;
}

/** Overwrites a range; half the time in the last quarter of the file, where records are newer than a backup. */
function overwrite(rand: (n: number) => number, bytes: Buffer, zeros: boolean): void {
  const len = rand(4) === 0 ? 1 + rand(3) : 1 + rand(300);
  const from = rand(2) === 0 ? 16 : Math.max(16, Math.floor(bytes.length * 0.75));
  const start = from + rand(bytes.length - from);
  for (let i = start; i < Math.min(bytes.length, start + len); i++) bytes[i] = zeros ? 0 : rand(256);
}

function damage(kind: DamageKind, rand: (n: number) => number, original: Buffer, built: Built, backupDir: string): Damage {
  const bytes = Buffer.from(original);
  const out: Damage = { bytes, flippedBit: undefined, damagedBackup: undefined };
  switch (kind) {
    case 'bit flip': {
      const bit = rand(bytes.length * 8);
      bytes[bit >> 3] ^= 1 << (bit & 7);
      out.flippedBit = bit;
      break;
    }
    case 'random bytes':
      overwrite(rand, bytes, false);
      break;
    case 'zeroed bytes':
      overwrite(rand, bytes, true);
      break;
    case 'two ranges':
      overwrite(rand, bytes, rand(2) === 0);
      overwrite(rand, bytes, rand(2) === 0);
      break;
    case 'truncation':
      out.bytes = bytes.subarray(0, Math.max(17, bytes.length - 1 - rand(400)));
      break;
    case 'zeroed header':
      bytes.fill(0, 0, 16);
      break;
    case 'deleted file':
      out.bytes = undefined;
      break;
    case 'damaged backup': {
      const newest = built.backups[0];
      const file = path.join(backupDir, 't', `${newest.name}.tkt`);
      const copy = fs.readFileSync(file);
      copy[rand(copy.length)] ^= 1 << rand(8);
      fs.writeFileSync(file, copy);
      out.damagedBackup = newest.name;
      overwrite(rand, bytes, rand(2) === 0);
      break;
    }
  }
  return out;
}

/** The oracle's view of one record of the undamaged file. */
interface Truth {
  rec: ScannedRecord;
  damaged: boolean;
  identifiable: boolean;
  /** Exactly one bit of it changed: the rebuild may repair it. */
  single: boolean;
  /** ...and the rebuild must repair it. */
  sureRepair: boolean;
}

function classify(built: Built, original: Buffer, d: Damage): Truth[] {
  const changed = (from: number, to: number): boolean => {
    if (d.bytes === undefined) return true;
    for (let i = from; i < to; i++) if (i >= d.bytes.length || d.bytes[i] !== original[i]) return true;
    return false;
  };
  /** Bits that differ in [from, to); Infinity when bytes were cut off. */
  const bitsChanged = (from: number, to: number): number => {
    if (d.bytes === undefined || to > d.bytes.length) return Infinity;
    let bits = 0;
    for (let i = from; i < to; i++) for (let x = d.bytes[i] ^ original[i]; x !== 0; x &= x - 1) bits++;
    return bits;
  };
  const out: Truth[] = [];
  for (const rec of built.records) {
    const keyEnd = rec.offset + 20 + Buffer.byteLength(rec.key);
    const damaged = changed(rec.offset, rec.offset + rec.length);
    const single = damaged && bitsChanged(rec.offset, rec.offset + rec.length) === 1;
    const headerReads = damaged && !changed(rec.offset + 4, keyEnd);
    const prev = out[out.length - 1];
    const reached = prev === undefined || !prev.damaged || prev.sureRepair || prev.identifiable;
    out.push({ rec, damaged, identifiable: headerReads && !single, single, sureRepair: single && (reached || headerReads) });
  }
  return out;
}

/** Keys read from the damaged bytes at the start of each damaged record (what a misread header would name). */
function misreadKeys(truths: Truth[], d: Damage): Set<string> {
  const out = new Set<string>();
  const bytes = d.bytes;
  if (bytes === undefined) return out;
  for (const t of truths) {
    const o = t.rec.offset;
    if (!t.damaged || o + 20 > bytes.length) continue;
    const keyEnd = o + 20 + bytes.readUInt16LE(o + 6);
    if (keyEnd <= bytes.length) out.add(bytes.toString('utf8', o + 20, keyEnd));
  }
  return out;
}

async function runCase(kind: DamageKind, seed: number): Promise<void> {
  const rand = prng(seed * 7919 + kind.length);
  const file = path.join(tmp.dir, 't.tkt');
  const backupDir = path.join(tmp.dir, 'backups');
  const built = await build(rand, file, backupDir);
  const original = fs.readFileSync(file);
  const d = damage(kind, rand, original, built, backupDir);
  const damagedPath = path.join(tmp.dir, 'quarantine.tkt');
  if (d.bytes !== undefined) fs.writeFileSync(damagedPath, d.bytes);
  const outPath = path.join(tmp.dir, 'rebuilt.tkt');
  const report = await rebuildTable({ table: 't', damagedPath, backupDir, outPath });
  const got = await contentsOf(outPath);
  const problems: string[] = [];
  const check = (ok: boolean, what: string): void => {
    if (!ok) problems.push(what);
  };

  const used = built.backups.find((m) => m.name !== d.damagedBackup);
  check(report.backupUsed === (used?.name ?? null), `backup used ${report.backupUsed}, expected ${used?.name}`);
  const backupRecs = used === undefined ? [] : await recordsOf(path.join(backupDir, 't', `${used.name}.tkt`));
  const truths = classify(built, original, d);
  const misread = misreadKeys(truths, d);

  // Newest available record per key: intact (or repaired) in the file, or in the backup used; at least
  // (records repaired for sure) and at most (every record with one changed bit repaired).
  const availability = (maybe: boolean): Map<string, ScannedRecord> => {
    const avail = new Map<string, ScannedRecord>();
    const offer = (r: ScannedRecord): void => {
      const cur = avail.get(r.key);
      if (cur === undefined || r.seq > cur.seq) avail.set(r.key, r);
    };
    for (const t of truths) if (!t.damaged || t.sureRepair || (maybe && t.single)) offer(t.rec);
    for (const r of backupRecs) offer(r);
    return avail;
  };
  const availMin = availability(false);
  const availMax = availability(true);
  const newer = (t: Truth, avail: Map<string, ScannedRecord>): boolean => t.rec.seq > (avail.get(t.rec.key)?.seq ?? 0);
  // At risk: some repair we cannot count on would be needed. Must lose: even every possible repair does not cover it.
  const uncovered = truths.filter((t) => t.damaged && !t.sureRepair && newer(t, availMin));
  const atRisk = new Set(uncovered.map((t) => t.rec.key));
  const surelyUncovered = truths.filter((t) => t.damaged && !t.single && newer(t, availMax));
  const mustLose = new Set(surelyUncovered.filter((t) => t.identifiable).map((t) => t.rec.key));
  const maybeRepaired = truths.filter((t) => t.single && !t.sureRepair);
  const unidentifiable = truths.filter((t) => t.damaged && !t.sureRepair && !t.identifiable);
  // A damaged record whose header still reads as one may be taken for another key or sequence number.
  const plausibleHeader = (t: Truth): boolean => {
    const bytes = d.bytes;
    const o = t.rec.offset;
    if (bytes === undefined || o + 20 > bytes.length || (bytes[o + 4] !== 1 && bytes[o + 4] !== 2) || bytes[o + 5] !== 0) return false;
    const keyBytes = bytes.readUInt16LE(o + 6);
    return keyBytes >= 1 && keyBytes <= 1024 && o + 20 + keyBytes <= bytes.length;
  };
  const misreadPossible = unidentifiable.some(plausibleHeader);

  // Final state per key from the history.
  const final = new Map<string, string | undefined>();
  for (const op of built.history) final.set(op.key, op.value);
  const lost = new Set(report.lostKeys);

  for (const [key, value] of got.entries) {
    check(final.has(key), `unknown key ${key} in the rebuilt table`);
    const ok = [availMin.get(key), availMax.get(key)].some((a) => a !== undefined && a.kind === 'put' && a.value?.toString() === value);
    const a = availMin.get(key);
    check(ok, `${key} = ${value}, but its newest available record is ${a?.kind} ${a?.value?.toString()} (seq ${a?.seq})`);
  }
  for (const [key, value] of final) {
    const has = got.entries.get(key);
    if (!atRisk.has(key)) {
      const misattributed = has === undefined && lost.has(key) && misread.has(key);
      check(has === value || misattributed, `${key} is not at risk: expected ${value}, got ${has}`);
    }
    if (mustLose.has(key)) check(has === undefined && lost.has(key), `${key}: its newest record is damaged but identifiable; expected absent and listed lost (got ${has}, listed ${lost.has(key)})`);
  }
  for (const key of lost) {
    check(!got.entries.has(key), `lost key ${key} is still in the table`);
    check(atRisk.has(key) || misread.has(key), `lost key ${key} was not at risk`);
  }

  // Loss counts.
  const mustLoseRecords = surelyUncovered.filter((t) => t.identifiable).length;
  check(report.lostRecords >= mustLoseRecords, `lostRecords ${report.lostRecords} < ${mustLoseRecords} records that must be lost`);
  // An uncovered record still (partly) in the file whose damaged header cannot even be read as one (bad kind or
  // flags, or cut short) is a lost, unattributed stretch. (Records wholly cut off the end leave no trace to count.)
  const unread = surelyUncovered.filter((t) => {
    const o = t.rec.offset;
    return d.bytes !== undefined && o < d.bytes.length && (o + 20 > d.bytes.length || (d.bytes[o + 4] !== 1 && d.bytes[o + 4] !== 2) || d.bytes[o + 5] !== 0);
  });
  // (Unless a damaged header still reads as one: its stated length may then cover the records after it.)
  if (unread.length > 0 && !misreadPossible) {
    check(report.lostRecords > mustLoseRecords && report.unidentifiedRanges >= 1, `an unreadable uncovered record at ${unread[0].rec.offset}: lostRecords ${report.lostRecords}, unidentifiedRanges ${report.unidentifiedRanges}`);
  }
  if (uncovered.length === 0 && !misreadPossible && unidentifiable.every((t) => used !== undefined && t.rec.seq <= used.maxSeq)) {
    check(report.lostKeys.length === 0, `nothing uncovered, yet lostKeys ${report.lostKeys.join(',')}`);
    check(got.entries.size === [...final.values()].filter((v) => v !== undefined).length, 'nothing uncovered, yet the table is not exact');
  }
  if (unidentifiable.length === 0 && d.bytes !== undefined) {
    check(report.lostRecords === uncovered.length, `every damaged record identifiable: lostRecords ${report.lostRecords}, expected ${uncovered.length}`);
    check(report.unidentifiedRanges === 0, `every damaged record identifiable, yet ${report.unidentifiedRanges} unidentified ranges`);
  } else {
    check(report.lostRecords <= uncovered.length + 2 * unidentifiable.length, `lostRecords ${report.lostRecords} exceeds what the damage can explain`);
  }
  const sure = truths.filter((t) => t.sureRepair).length;
  check(report.repairedRecords >= sure && report.repairedRecords <= sure + maybeRepaired.length, `repaired ${report.repairedRecords}, expected ${sure} to ${sure + maybeRepaired.length}`);
  if (d.flippedBit !== undefined && d.flippedBit >= 16 * 8) check(report.repairedRecords === 1 && report.lostRecords === 0, `one flipped bit, repaired ${report.repairedRecords}`);

  // Reported ranges: each starts at a damaged record, and every damaged record still in the file lies in one.
  if (d.bytes !== undefined) {
    const size = d.bytes.length;
    const ranges = report.damagedRanges.filter((r) => r.start >= 16);
    for (const r of ranges) check(truths.some((t) => t.damaged && t.rec.offset === r.start), `range [${r.start}, ${r.end}) does not start at a damaged record`);
    for (const t of truths) {
      if (t.damaged && t.rec.offset < size) check(ranges.some((r) => r.start <= t.rec.offset && t.rec.offset < r.end), `damaged record at ${t.rec.offset} is in no reported range`);
    }
  }
  if (kind === 'deleted file') check(report.damagedFileMissing && report.lostRecords === 0, 'a deleted file: only the backup');

  // The rebuilt file opens with what the report says.
  check(got.entries.size === report.liveKeys, `rebuilt table has ${got.entries.size} keys, report says ${report.liveKeys}`);
  check(got.fileRecords === report.records, `rebuilt file has ${got.fileRecords} records, report says ${report.records}`);
  const headerOk = d.bytes !== undefined && d.bytes.length >= 16 && d.bytes.subarray(0, 16).equals(original.subarray(0, 16));
  // Above every backup's, the damaged one's too (see rebuildTable).
  const generation = Math.max(headerOk ? built.generation : 0, ...built.backups.map((m) => m.generation)) + 1;
  check(got.generation === generation && report.generation === generation, `generation ${got.generation} (reported ${report.generation}), expected ${generation}`);

  if (problems.length > 0 && process.env.CAMPAIGN_DEBUG) {
    for (const t of truths) if (t.damaged) console.log('damaged', t.rec.offset, t.rec.length, t.rec.seq, t.rec.key, t.rec.kind, 'ident', t.identifiable, 'single', t.single, 'sure', t.sureRepair);
    console.log('records', built.records.map((r) => `${r.offset}:${r.seq}:${r.key}`).join(' '));
    console.log('backup', used?.maxSeq, backupRecs.map((r) => `${r.seq}:${r.key}`).join(' '));
  }
  if (problems.length > 0) throw new Error(`${kind}, seed ${seed}:\n  ${problems.join('\n  ')}\n${summary(report)}`);
}

function summary(r: RebuildReport): string {
  const { durationMs, ...rest } = r;
  return JSON.stringify(rest);
}

const seeds = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

describe('recovery campaign', () => {
  const plan: [DamageKind, number][] = [
    ['bit flip', 40],
    ['random bytes', 40],
    ['zeroed bytes', 35],
    ['two ranges', 25],
    ['truncation', 25],
    ['zeroed header', 10],
    ['deleted file', 10],
    ['damaged backup', 25],
  ];
  for (const [kind, count] of plan) {
    test.each(seeds(Number(process.env.SEED_FROM ?? 1), count * Number(process.env.SEED_MUL ?? 1)))(`recovery campaign - ${kind}, seed %i`, (seed) => runCase(kind, seed));
  }
});
