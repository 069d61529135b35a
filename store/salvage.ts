/**
 * Offline salvage: a new, valid table file from what is intact in a damaged
 * one (the CLI's `salvage`). The same merge as a rebuild without a backup
 * (rebuild-merge.ts): the newest intact record of each key by sequence
 * number, tombstones kept, records with one flipped bit repaired; a key whose
 * newest record is damaged but still names its key is left out (never an
 * older value in its place) and reported. The input is only read; the
 * output must not exist yet.
 */
import * as path from 'node:path';
import { BadRequestError } from './errors';
import { FileHeader } from './format';
import { isErrno, nodeStoreFs, StoreFs } from './file-system';
import { DamageSpan, RebuildMerge } from './rebuild-merge';
import { TableWriter } from './rebuild-output';

/** Suffix of the file salvageFile writes before renaming it to the output. */
export const SALVAGE_SUFFIX = '.partial';

/** Options of salvageFile. */
export interface SalvageOptions {
  fs?: StoreFs;
}

/** What salvageFile wrote and found. */
export interface SalvageReport {
  input: string;
  output: string;
  /** The input's header, or undefined when it is damaged. */
  header: FileHeader | undefined;
  /** Generation of the output: the input's plus one (1 when the input's header is damaged). */
  generation: number;
  /** Intact records read from the input. */
  intactRecords: number;
  /** Records written: puts plus tombstones. */
  records: number;
  liveKeys: number;
  /** Highest sequence number written. */
  maxSeq: number;
  damagedRanges: DamageSpan[];
  damagedBytes: number;
  /** Records with one flipped bit, repaired and kept. */
  repairedRecords: number;
  /** Damaged records that a newer intact record of the same key makes unnecessary. */
  coveredRecords: number;
  /** Identified damaged records not covered, plus one per stretch where nothing could be read. */
  lostRecords: number;
  /** Keys whose newest record was damaged; left out of the output. */
  lostKeys: string[];
  /** Damaged ranges with a stretch nothing could be read from. */
  unidentifiedRanges: number;
  durationMs: number;
}

/**
 * Writes the salvageable content of `input` to a new table file `output`.
 * Rejects BadRequestError when `output` exists or is `input`, and the file
 * system's error when `input` cannot be read (ENOENT when it is missing).
 */
export async function salvageFile(input: string, output: string, opts: SalvageOptions = {}): Promise<SalvageReport> {
  const started = performance.now();
  const sfs = opts.fs ?? nodeStoreFs;
  if (path.resolve(input) === path.resolve(output)) throw new BadRequestError('the output must not be the input');
  if (await exists(sfs, output)) throw new BadRequestError(`refusing to overwrite ${output}`);
  const merge = new RebuildMerge(sfs);
  let writer: TableWriter | undefined;
  try {
    if (!(await merge.loadDamaged(input))) throw Object.assign(new Error(`no such file: ${input}`), { code: 'ENOENT' });
    const header = merge.damagedHeader;
    const generation = header === undefined ? 1 : Math.min(header.generation + 1, 0xffffffff);
    writer = await TableWriter.create(sfs, output + SALVAGE_SUFFIX, output, generation);
    const result = await merge.finish(writer);
    await writer.commit();
    return {
      input,
      output,
      header,
      generation,
      intactRecords: result.damagedIntactRecords,
      records: result.records,
      liveKeys: result.liveKeys,
      maxSeq: result.maxSeq,
      damagedRanges: result.damagedRanges,
      damagedBytes: result.damagedBytes,
      repairedRecords: result.repairedRecords,
      coveredRecords: result.coveredRecords,
      lostRecords: result.lostRecords,
      lostKeys: result.lostKeys,
      unidentifiedRanges: result.unidentifiedRanges,
      durationMs: performance.now() - started,
    };
  } catch (err) {
    await writer?.abandon();
    throw err;
  } finally {
    await merge.close();
  }
}

async function exists(sfs: StoreFs, file: string): Promise<boolean> {
  try {
    await sfs.close(await sfs.open(file, 'r'));
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}
