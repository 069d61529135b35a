import type { Logger } from 'pino';
import { backupTable, scrubTable, TableCorruptError, type BackupManifest, type CompactionResult, type ScrubReport, type TableFile } from '../store';

/** Maintenance the supervisor asks an owner to run on its table file. */
export type MaintenanceRequest =
  | {
      kind: 'compact';
      /** Compact even below the threshold. */
      force: boolean;
      /** Fragmentation (dead / file bytes) below which the table is skipped. */
      threshold: number;
      /** Tombstones above this sequence number are kept (see CompactOptions). */
      keepTombstonesAbove?: number;
    }
  | {
      kind: 'backup';
      backupDir: string;
      /** The backup's time (its name and createdAt), from the supervisor's clock, ms since the epoch. */
      at: number;
    }
  /** Verify every record's checksum, throttled; damage is reported, not repaired. */
  | { kind: 'scrub' };

/** What a maintenance run did. */
export type MaintenanceOutcome =
  | { kind: 'compact'; status: 'compacted'; fragmentationBefore: number; result: CompactionResult }
  | { kind: 'compact'; status: 'skipped'; reason: string; fragmentation: number }
  | { kind: 'backup'; manifest: BackupManifest }
  /** `damage` is set when the scrub found anything wrong (the owner then stops serving the file). */
  | { kind: 'scrub'; report: ScrubReport; damage: TableCorruptError | null };

/** A request plus the way to answer it; travels in an event from supervisor to owner. */
export interface MaintenanceJob {
  request: MaintenanceRequest;
  resolve(outcome: MaintenanceOutcome): void;
  reject(err: unknown): void;
}

/**
 * Runs one maintenance request against a serving table. Compaction and backup
 * are online: the table keeps answering while they run. The threshold is
 * checked here, next to the compaction, so the decision uses current stats.
 */
export async function runMaintenance(
  file: TableFile,
  request: MaintenanceRequest,
  logger: Logger,
): Promise<MaintenanceOutcome> {
  if (request.kind === 'scrub') {
    const report = await scrubTable(file, {});
    return { kind: 'scrub', report, damage: scrubDamage(file.table, report) };
  }
  if (request.kind === 'backup') {
    const manifest = await backupTable(file, request.backupDir, { logger, now: new Date(request.at) });
    return { kind: 'backup', manifest };
  }
  const { fragmentation } = file.stats();
  if (!request.force && fragmentation < request.threshold) {
    return {
      kind: 'compact',
      status: 'skipped',
      reason: `fragmentation ${(fragmentation * 100).toFixed(1)}% is below the ${(request.threshold * 100).toFixed(1)}% threshold`,
      fragmentation,
    };
  }
  const result = await file.compact({ keepTombstonesAbove: request.keepTombstonesAbove });
  return { kind: 'compact', status: 'compacted', fragmentationBefore: fragmentation, result };
}

/** The first problem a scrub found, as a corruption error, or null for a clean table. */
function scrubDamage(table: string, report: ScrubReport): TableCorruptError | null {
  if (report.fileMissing) return new TableCorruptError(table, 0, 'the table file is missing or was replaced while open', { details: { scrub: true } });
  if (report.headerDamage !== undefined) return new TableCorruptError(table, 0, report.headerDamage, { details: { scrub: true } });
  const first = report.damaged[0];
  if (first === undefined) return null;
  return new TableCorruptError(table, first.start, first.reason, { details: { scrub: true, ranges: report.damaged.length } });
}
