import type { Logger } from 'pino';
import { backupTable, type BackupManifest, type CompactionResult, type TableFile } from '../store';

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
  | { kind: 'backup'; backupDir: string };

/** What a maintenance run did. */
export type MaintenanceOutcome =
  | { kind: 'compact'; status: 'compacted'; fragmentationBefore: number; result: CompactionResult }
  | { kind: 'compact'; status: 'skipped'; reason: string; fragmentation: number }
  | { kind: 'backup'; manifest: BackupManifest };

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
  if (request.kind === 'backup') {
    const manifest = await backupTable(file, request.backupDir, { logger });
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
