/**
 * Offline salvage: a new, valid table file from what is intact in a damaged
 * one (the CLI's `salvage`). The same merge as a rebuild without a backup
 * (rebuild-merge.ts): the newest intact record of each key by sequence
 * number, tombstones kept, records with one flipped bit repaired; a key whose
 * newest record is damaged but still names its key is left out (never an
 * older value in its place) and reported. The input is only read; the
 * output and its temporary file must not exist yet, and must not be the input.
 */
import * as path from 'node:path';
import { BadRequestError } from './errors';
import { FileHeader } from './format';
import { fileIdOf, isErrno, nodeStoreFs, StoreFs, withFileIfExists, type FileId } from './file-system';
import { pendingCutOf } from './cut-marker';
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
 * Writes the salvageable content of `input` to a new table file `output`,
 * through `output + SALVAGE_SUFFIX`. Rejects BadRequestError when `output`
 * or that temporary file exists or is `input` (same path, or the same file
 * through another name), and the file system's error when `input` cannot be
 * read (ENOENT when it is missing). The input is never modified, and no
 * existing file is ever replaced: the temporary file is created exclusively
 * and the output gets its name by a link, which fails if it appeared meanwhile.
 */
export async function salvageFile(input: string, output: string, opts: SalvageOptions = {}): Promise<SalvageReport> {
  const started = performance.now();
  const sfs = opts.fs ?? nodeStoreFs;
  const tmp = output + SALVAGE_SUFFIX;
  const source = path.resolve(input);
  if (source === path.resolve(output)) throw new BadRequestError('the output must not be the input');
  if (source === path.resolve(tmp)) throw new BadRequestError(`the output's temporary file ${tmp} must not be the input`);
  const inputId = await fileIdAt(sfs, input);
  if (inputId === undefined) throw Object.assign(new Error(`no such file: ${input}`), { code: 'ENOENT' });
  for (const [file, what] of [[output, 'output'], [tmp, "output's temporary file"]] as const) {
    const id = await fileIdAt(sfs, file);
    if (id === undefined) continue;
    if (id.dev === inputId.dev && id.ino === inputId.ino) throw new BadRequestError(`the ${what} ${file} is the input under another name`);
    throw new BadRequestError(`refusing to overwrite ${file}`);
  }
  const merge = new RebuildMerge(sfs);
  let writer: TableWriter | undefined;
  try {
    // Writes rejected before the table failed (a pending cut marker names the input) are not salvaged.
    if (!(await merge.loadDamaged(input, await pendingCutOf(input, sfs)))) throw Object.assign(new Error(`no such file: ${input}`), { code: 'ENOENT' });
    const header = merge.damagedHeader;
    const generation = header === undefined ? 1 : Math.min(header.generation + 1, 0xffffffff);
    writer = await noReplace(output, () => TableWriter.create(sfs, tmp, output, generation, { noReplace: true }));
    const result = await merge.finish(writer);
    await noReplace(output, () => (writer as TableWriter).commit());
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

/** The identity of the file at `file` (symlinks followed), or undefined when there is none. */
function fileIdAt(sfs: StoreFs, file: string): Promise<FileId | undefined> {
  return withFileIfExists(sfs, file, fileIdOf);
}

/** Runs a step that creates a name; a file that appeared there meanwhile is a refusal, not an I/O failure. */
async function noReplace<T>(output: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (isErrno(err, 'EEXIST')) throw new BadRequestError(`refusing to overwrite ${output} (or its temporary file): it appeared while salvaging`, { cause: err });
    throw err;
  }
}
