/**
 * Online compaction of a table file: copy the live records into a new file
 * while the table keeps serving, then swap. See TableFile.compact.
 *
 * Phases:
 * 1. No pause. Note O = the end of every record appended so far, wait until
 *    everything below O is stable (written, and fsynced under `always`: a
 *    failed write or fsync cuts the file back and reuses offsets), then copy
 *    the records that are live as of O into `<path>.compact` (generation+1),
 *    reading the old file sequentially and checking every checksum (for a
 *    large range, in a worker thread while the copy goes on; the round
 *    counts only once the worker found every record intact).
 * 2. No pause. Repeat for the records appended after the previous round's end
 *    (puts and deletes, in log order) until the tail is small; fdatasync the
 *    bulk of the new file outside the pause. Translate the live index's
 *    offsets to the new file (compaction-remap.ts), in time slices, and catch
 *    up again with what was written meanwhile.
 * 3. Pause writes (they are accepted into the held batch, readable, not
 *    written), wait for the write in flight, copy the last tail, fdatasync,
 *    rename over the table path, fsync the directory, then switch the
 *    descriptor, the index's offsets and the generation and resume: the held
 *    batch is written to the new file.
 *
 * "Live as of O" while writes go on: an append observer, set for the whole
 * compaction, keeps per round and key the location before the key's first
 * append after the round noted O (`since`); a key's location as of O is
 * that, or else its location in the live index. The final round, paused,
 * reads the same from the held batch's undo log. A record is copied when it is its key's location as of the
 * round's end, so superseded records are never copied, and the new file keeps
 * the old file's order (sequence numbers stay increasing).
 *
 * Tombstones. A delete record is written to the new file only when it is the
 * last record of its key in the round (a later put or delete of the key in
 * the same round makes it redundant) and
 * - the new file holds an earlier put of the key (without the tombstone that
 *   put would come back on reopen): the key was live as of the round's start,
 *   which the previous round's `since` tells, or
 * - its sequence number is above `keepTombstonesAbove` (a later merge with a
 *   backup taken at that sequence needs it), or
 * - it carries the highest sequence number of the old file (so that the
 *   sequence never goes backwards on reopen).
 * Whether a later delete follows in the round is found by a quick pre-pass
 * over the round's range; it is skipped in round one when no record can
 * qualify for keepTombstonesAbove.
 *
 * Crash safety: the old file is never written. Until the rename a crash
 * leaves the old file whole at the table path (the leftover `.compact` is
 * deleted on open); the new file is fdatasynced before the rename, so after
 * it either name resolves to a whole file holding the same records up to the
 * switch. Writes held during the pause are acknowledged only after the
 * directory fsync, from the new file.
 */
import type { Logger } from 'pino';
import { StoreIoError, TableClosedError, TablekeeperError } from './errors';
import { encodeFileHeader, FILE_HEADER_BYTES } from './format';
import { parentDir, StoreFs } from './file-system';
import { KeyIndex } from './key-index';
import { CopyContext, RecordCopier } from './compaction-copy';
import { IndexTranslation, type LiveOffsets } from './compaction-remap';
import { CompactionOutput } from './compaction-output';
import { TimeSlicer } from './time-slicer';
import { WriteQueue } from './write-queue';

/** Suffix of the file a compaction builds next to the table file; a leftover is deleted on open. */
export const COMPACT_SUFFIX = '.compact';

/** Points of a compaction where `onStep` is called (and awaited). */
export type CompactionStep =
  /** The new file exists with its header; nothing copied yet. */
  | 'started'
  /** A buffer of copied records reached the new file (called after each write). */
  | 'flushed'
  /** The bulk copy is done and fdatasynced; writes are about to be paused. */
  | 'caught-up'
  /** Writes are held; the last tail is not copied yet. */
  | 'paused'
  /** The new file is complete and fdatasynced, not yet renamed. */
  | 'before-rename'
  /** Renamed over the table path; the directory is not fsynced yet. */
  | 'renamed'
  /** The directory is fsynced; the table still uses the old descriptor. */
  | 'dir-synced'
  /** The table uses the new file and writes have resumed. */
  | 'switched';

/** Options of TableFile.compact. */
export interface CompactOptions {
  /**
   * Delete records with a sequence number above this are kept even though
   * their key is absent (pass the latest verified backup's maxSeq, so that a
   * merge of that backup with this file by sequence cannot resurrect a
   * deleted key). Default: drop every tombstone that is not needed to keep a
   * copied put dead, except the one carrying the table's highest sequence.
   */
  keepTombstonesAbove?: number;
  /**
   * Called at each step, awaited; for crash tests and tracing. An error
   * before the rename aborts the compaction; at 'renamed' or 'dir-synced' it
   * counts as a failed directory fsync; at 'switched' it is logged.
   */
  onStep?: (step: CompactionStep) => void | Promise<void>;
}

/** What a compaction did. */
export interface CompactionResult {
  status: 'compacted';
  /** Length of the old file when it was replaced (writes held at the switch not included). */
  bytesBefore: number;
  /** Length of the new file at the switch. */
  bytesAfter: number;
  /** Records written to the new file, tombstones included. */
  recordsCopied: number;
  /** Delete records written to the new file. */
  tombstonesKept: number;
  /** Generation of the new file. */
  generation: number;
  /** Copy rounds before the pause (phase 1 is round one). */
  rounds: number;
  durationMs: number;
  /** How long writes were held (phase 3). */
  pausedMs: number;
}

/**
 * Called on every append while set, before the index changes: the key, its
 * previous record offset (-1 = absent) and the new record's offset.
 */
export type AppendObserver = (key: string, prevOffset: number, offset: number) => void;

/**
 * Called for every key a rolled-back batch puts back into the index (or takes
 * out of it) after a failed write or fsync: the key's location changed
 * without an append.
 */
export type UndoObserver = (key: string) => void;

/** The new state a compaction installs in its table file. */
export interface CompactionSwitch {
  fd: number;
  generation: number;
  /** The table's index, its offsets now in the new file. */
  index: KeyIndex;
  /** Records in the new file plus those in the held batch. */
  fileRecords: number;
}

/** What compaction needs from its table file (internal to store/). */
export interface CompactionHost {
  readonly table: string;
  readonly path: string;
  readonly sfs: StoreFs;
  readonly logger: Logger;
  readonly queue: WriteQueue;
  readonly fd: number;
  readonly generation: number;
  /** Highest sequence number written so far. */
  readonly seq: number;
  /** The live index (changes with every write). */
  readonly index: KeyIndex;
  /** Aborted when the table is about to close: give up unless already renamed (its reason is the error). */
  readonly signal: AbortSignal;
  /** Sets or clears the append observer, and the observer of keys changed by a rollback. */
  observe(observer: AppendObserver | undefined, onUndo?: UndoObserver): void;
  /** Switches the table to the new file (synchronously; the queue is already switched). */
  install(next: CompactionSwitch): void;
}

// Below this many bytes appended since the last round, stop catching up and pause.
const SMALL_TAIL_BYTES = 64 * 1024;
// Catch-up rounds before pausing anyway (writers faster than the copy).
const MAX_ROUNDS = 16;

/** Runs one compaction of the host's table. The caller holds the table's maintenance slot. */
export function compactTable(host: CompactionHost, opts: CompactOptions): Promise<CompactionResult> {
  return new Compaction(host, opts).run();
}

/** One compaction: the phases, the pause and the swap. */
class Compaction implements CopyContext {
  private readonly tmp: string;
  private readonly generation: number;
  private out: CompactionOutput | undefined;
  private copier: RecordCopier | undefined;
  private translation: IndexTranslation | undefined;
  private rounds = 0;
  // Per key, its location before its first append since the current round
  // noted its target; and the same since the previous round's target (the
  // current range's start). Kept by the append observer.
  private since = new Map<string, number>();
  private sincePrev: Map<string, number> | undefined;

  constructor(
    readonly host: CompactionHost,
    private readonly opts: CompactOptions,
  ) {
    this.tmp = host.path + COMPACT_SUFFIX;
    this.generation = host.generation + 1;
  }

  get output(): CompactionOutput {
    return this.out!;
  }

  async run(): Promise<CompactionResult> {
    const { host } = this;
    const { queue } = host;
    const started = performance.now();
    const oldFd = host.fd;
    let paused = false;
    let pausedAt = 0;
    try {
      const fd = await this.io('open', () => host.sfs.open(this.tmp, 'w+'));
      const out = (this.out = new CompactionOutput(host.sfs, fd, (op, fn) => this.io(op, fn), () => this.step('flushed')));
      const copier = (this.copier = new RecordCopier(this, FILE_HEADER_BYTES, this.opts.keepTombstonesAbove ?? Infinity));
      await out.writeHeader(encodeFileHeader(this.generation));
      await this.step('started');
      host.observe(
        (key, prevOffset) => {
          if (!this.since.has(key)) this.since.set(key, prevOffset);
          if (this.sincePrev !== undefined && !this.sincePrev.has(key)) this.sincePrev.set(key, prevOffset);
          this.translation?.noteWrite(key);
        },
        // A rolled-back delete puts its key back at its earlier location,
        // maybe in a slot the translation walk has passed: translate it again
        // at the end, like a written key. (`since` needs nothing: it already
        // holds that location, noted by the append being undone.)
        (key) => this.translation?.noteWrite(key),
      );

      // Phases 1 and 2: catch up with the writers without stopping them.
      let synced = out.end;
      const tailIsLarge = () => this.rounds < MAX_ROUNDS && queue.fileEnd - copier.copied > SMALL_TAIL_BYTES;
      // What is copied goes to disk outside the pause, so the fdatasync in it is short.
      const syncCopied = async () => {
        if (out.end - synced <= SMALL_TAIL_BYTES) return;
        const end = out.end;
        await out.sync();
        synced = end;
      };
      await this.round();
      while (tailIsLarge()) {
        await syncCopied();
        await this.round();
      }
      // Most of the index's offsets translated outside the pause, while the
      // copy so far goes to disk (the walk only reads and writes memory);
      // then what was written meanwhile is copied.
      const translation = (this.translation = new IndexTranslation(host.index, copier.remap));
      await both(syncCopied(), translation.walk(copier.copied, (slicer) => this.yield(slicer)));
      while (tailIsLarge()) {
        await this.round();
        await syncCopied();
      }
      await out.flush(true);
      await this.step('caught-up');

      // Phase 3: hold writes, copy the last tail, swap.
      pausedAt = performance.now();
      paused = true;
      await queue.pause();
      await this.step('paused');
      this.checkLive();
      await this.finalRound();
      // Throws (and the compaction gives up) if a live record was not copied.
      translation.settle(queue.writtenEnd, out.end);
      await out.sync();
      await this.step('before-rename');
      await this.io('rename', () => host.sfs.rename(this.tmp, host.path));
    } catch (err) {
      host.observe(undefined);
      await this.discard();
      if (paused) queue.resume();
      host.logger.warn({ err, op: 'compact', ms: Math.round(performance.now() - started) }, 'compaction failed; the table stays on the old file');
      throw err;
    }

    // Renamed: the new file is the table now, whatever happens next.
    let dirError: unknown;
    try {
      await this.step('renamed');
      await host.sfs.syncDir(parentDir(host.path));
      await this.step('dir-synced');
    } catch (err) {
      dirError = err;
    }
    const bytesBefore = queue.writtenEnd;
    try {
      this.switchFile();
    } catch (err) {
      // Only a bug gets here, after the rename: the table path names the new
      // file while the table still uses the old one. Fail the table closed
      // (the held writes are rejected; a reopen reads the new file, which
      // holds every acknowledged write) rather than leave the writes paused.
      host.observe(undefined);
      const error = new StoreIoError(host.table, 'compact', { cause: err, details: { step: 'switch' } });
      host.logger.error({ err, op: 'compact' }, 'compaction could not switch to the new file; the table must be reopened');
      queue.failWith(error);
      queue.resume();
      await host.sfs.close(this.output.fd).catch(() => undefined);
      throw error;
    }
    if (dirError !== undefined) {
      // The rename may not survive a crash, so nothing may be acknowledged
      // from the new file: fail the table (the held writes are rejected).
      const error = new StoreIoError(host.table, 'compact', { cause: dirError, details: { step: 'syncDir' } });
      queue.failWith(error);
      queue.resume();
      await host.sfs.close(oldFd).catch(() => undefined);
      throw error;
    }
    queue.resume();
    const pausedMs = performance.now() - pausedAt;
    // Not waited for: the last close of the replaced file frees its blocks,
    // which takes a while (~80 ms for 330 MB on ext4) and concerns nothing
    // the table still uses.
    host.sfs.close(oldFd).catch((err: unknown) => host.logger.warn({ err, op: 'compact' }, 'could not close the replaced table file'));
    const copier = this.copier!;
    const result: CompactionResult = {
      status: 'compacted',
      bytesBefore,
      bytesAfter: this.output.end,
      recordsCopied: copier.records,
      tombstonesKept: copier.tombstones,
      generation: this.generation,
      rounds: this.rounds,
      durationMs: performance.now() - started,
      pausedMs,
    };
    host.logger.info(
      { op: 'compact', bytesBefore, bytesAfter: result.bytesAfter, records: result.recordsCopied, tombstones: result.tombstonesKept, rounds: result.rounds, ms: Math.round(result.durationMs), pausedMs: Math.round(pausedMs * 10) / 10 },
      'compaction done',
    );
    // The compaction is done whatever the hook does.
    await this.step('switched').catch((err: unknown) => host.logger.warn({ err, op: 'compact' }, 'compaction step hook failed'));
    return result;
  }

  /** One catch-up round: the records in [copied, end of log now), live as of that end. */
  private async round(): Promise<void> {
    const { host } = this;
    const first = this.rounds === 0;
    this.rounds++;
    // The range starts at the previous round's target, where its `since` started.
    const atStart = (this.sincePrev = first ? undefined : this.since);
    for (let attempt = 1; ; attempt++) {
      const target = host.queue.fileEnd;
      const firstPrev = (this.since = new Map<string, number>());
      try {
        // Below target everything must be stable before it is read (see the module doc).
        await host.queue.settledAll();
      } catch (err) {
        // A write failed and was rolled back (never below `copied`: the
        // previous round waited for it to be stable). Start the round again.
        if (host.queue.failed !== undefined || attempt === 3) throw err;
        continue;
      }
      this.checkLive();
      const live = host.index;
      // Round one covers most of the file: find its live records from the index, so that the dead ones cost no lookup.
      let liveAt: LiveOffsets | undefined;
      if (first) {
        // The worker checks the range's checksums while its live records are found.
        this.copier!.startCheck(target);
        try {
          liveAt = await this.copier!.liveOffsets(target, firstPrev);
        } catch (err) {
          await this.copier!.dropCheck();
          throw err;
        }
      }
      await this.copier!.copyRange(target, first, (key) => firstPrev.get(key) ?? locationOf(live, key), liveAt, atStart);
      return;
    }
  }

  /** The last round, with writes paused and nothing in flight: up to the held batch. */
  private async finalRound(): Promise<void> {
    const { queue } = this.host;
    const live = this.host.index;
    const target = queue.writtenEnd;
    const firstPrev = new Map<string, number>();
    // The range starts at the last round's target, where the current `since` started.
    const atStart = (this.sincePrev = this.since);
    let seen = 0;
    await this.copier!.copyRange(target, false, (key) => {
      // Writes made while paused all go to the held batch (at target); its
      // undo log has each key's location before its first record there.
      const held = queue.heldBatch;
      if (held !== undefined) {
        for (; seen < held.count; seen++) {
          const k = held.keys[seen];
          if (!firstPrev.has(k)) firstPrev.set(k, held.prevOffsets[seen]);
        }
      }
      return firstPrev.get(key) ?? locationOf(live, key);
    }, undefined, atStart);
    await this.copier!.keepMaxSeq();
    await this.output.flush(true);
  }

  /** Installs the new file in the queue and the table, in one synchronous step. */
  private switchFile(): void {
    const { host } = this;
    const { queue } = host;
    const copier = this.copier!;
    const translation = this.translation!;
    const index = host.index;
    const end = this.output.end;
    // The held batch goes to the new file's end instead of the old one's.
    const heldStart = queue.writtenEnd;
    // Everything that can throw comes first, before anything changes.
    // Keys written since settle() are all in the held batch (or deleted).
    translation.settle(heldStart, end);
    const held = queue.heldBatch;
    // Its undo log in new-file offsets: a failed write of it must restore those (lengths are the same).
    const heldPrev = held?.prevOffsets.slice(0, held.count).map((prev) => (prev >= 0 ? translation.offsetIn(prev, heldStart, end) : prev));
    const offsets = translation.offsets();
    if (heldPrev !== undefined) for (let i = 0; i < heldPrev.length; i++) held!.prevOffsets[i] = heldPrev[i];
    index.adoptOffsets(offsets);
    host.observe(undefined);
    queue.switchFile(this.output.fd, end);
    host.install({ fd: this.output.fd, generation: this.generation, index, fileRecords: copier.records + (held?.count ?? 0) });
  }

  /** After a failure before the rename: closes and deletes the new file (best effort; open deletes a leftover). */
  private async discard(): Promise<void> {
    if (this.out !== undefined) {
      await this.out.settle();
      await this.host.sfs.close(this.out.fd).catch(() => undefined);
    }
    await this.host.sfs.unlink(this.tmp).catch(() => undefined);
  }

  private async step(step: CompactionStep): Promise<void> {
    if (this.opts.onStep !== undefined) await this.opts.onStep(step);
  }

  /** See CopyContext. */
  async yield(slicer: TimeSlicer): Promise<void> {
    await slicer.yield();
    this.checkLive();
  }

  /** Gives up when the table is closing or its writes have failed. */
  private checkLive(): void {
    const { signal } = this.host;
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new TableClosedError(this.host.table, { details: { during: 'compaction' } });
    const failed = this.host.queue.failed;
    if (failed !== undefined) throw failed;
  }

  /** Runs one file operation, turning an I/O failure into StoreIoError. */
  async io<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TablekeeperError) throw err;
      throw new StoreIoError(this.host.table, 'compact', { cause: err, details: { step: operation } });
    }
  }
}

/** Waits for both; then rejects with the first one's failure, if any (neither is left running). */
async function both(a: Promise<void>, b: Promise<void>): Promise<void> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
}

/** The record offset of `key` in `index`, or -1. */
function locationOf(index: KeyIndex, key: string): number {
  const slot = index.slotOf(key);
  return slot < 0 ? -1 : index.offsetOf(slot);
}
