/**
 * The table file engine: an append-only log of checksummed records with an
 * in-memory index. Everything other layers use is exported here; the rest of
 * store/ is internal.
 */
export {
  TableFile,
  DEFAULT_MAX_VALUE_BYTES,
  DEFAULT_READ_CACHE_BYTES,
  SELECT_DEFAULT_LIMIT,
  SELECT_DEFAULT_MAX_BYTES,
  SELECT_MAX_LIMIT,
} from './table-file';
export type { ReadCacheStats } from './read-cache';
export type { TableFileOptions, OpenReport, TableStats, SelectOptions, SelectResult, MaintenanceKind } from './table-file';
export { COMPACT_SUFFIX } from './compaction';
export { CUT_SUFFIX, keepCutMarkerWith, pendingCutOf } from './cut-marker';
export type { CompactOptions, CompactionResult, CompactionStep } from './compaction';
export { backupTable, backupName, listBackups, verifyBackup, pruneBackups } from './backup';
export type { BackupManifest, BackupOptions, BackupDirOptions, BackupCheck } from './backup';
export type { SyncPolicy } from './write-queue';
export { validateKey } from './key-rules';
export { tableLogger } from './table-logger';
export {
  FILE_MAGIC,
  FORMAT_VERSION,
  FILE_HEADER_BYTES,
  RECORD_HEADER_BYTES,
  MAX_KEY_BYTES,
  KIND_PUT,
  KIND_DELETE,
  encodeFileHeader,
  decodeFileHeader,
  encodeRecord,
  recordBytes,
} from './format';
export type { FileHeader, RecordKind } from './format';
export { NodeStoreFs, nodeStoreFs, readFully, writeFully, isErrno, parentDir } from './file-system';
export type { StoreFs, StoreFsOp, OpenMode, FileId } from './file-system';
export { RecordCursor, CHUNK_BYTES } from './record-cursor';
export { closeIdleSourceWorkers } from './source-worker';
export type { CursorStep, RecordView, DamageView, RecordCursorOptions } from './record-cursor';
export { scanRecords } from './record-scan';
export type { ScanItem, ScannedRecord, DamagedRange } from './record-scan';
export { countLiveKeys, scanFile, verifyFile } from './offline';
export type { FileScanItem, LiveKeyCount, ScannedHeader, VerifyReport } from './offline';
export { rebuildTable, chooseBackup, copyBackupTo, REBUILD_SUFFIX, RESTORE_SUFFIX } from './recovery';
export type { RebuildOptions, RebuildReport, BackupChoice, RecoveryFsOptions } from './recovery';
export type { DamageSpan } from './rebuild-merge';
export { salvageFile, SALVAGE_SUFFIX } from './salvage';
export type { SalvageOptions, SalvageReport } from './salvage';
export { scrubTable } from './scrub';
export type { ScrubOptions, ScrubReport } from './scrub';
export { repairRecord, findRecordHeaders, MAX_REPAIR_RECORD_BYTES } from './record-repair';
export type { IdentifiedRecord, SeqBounds } from './record-repair';
// Every error class and helper: the other layers import them from here.
export * from './errors';
