/**
 * The supervisor: one owner per table, restarted with backoff, and the
 * maintenance around them (schedules, backups, compaction, recoveries,
 * history, admin requests); and the service's configuration. Everything
 * other layers use is exported here; the rest of supervisor/ is internal.
 */
export { supervisorMachine, allTablesSettled } from './supervisor';
export type { SupervisorInput, SupervisorRef } from './supervisor';
export { DEFAULT_MAX_EVENT_STREAMS, loadConfig, parseDuration, TABLE_NAME_PATTERN } from './config';
export type {
  Config,
  ConfigSources,
  TableConfig,
  SyncSetting,
  ScheduleSetting,
  NotifyConfig,
  NotifyEvent,
  HttpConfig,
} from './config';
export { systemClock } from './schedule';
export { HISTORY_TABLE } from './history';
export { acquireDataDirLock, DataDirLockedError, LOCK_DIR_NAME } from './data-dir-lock';
export type { DataDirLock, DataDirLockOptions, LockOwner } from './data-dir-lock';
export type { Clock } from './schedule';
export type { TableDispatch } from './tables-gateway';
