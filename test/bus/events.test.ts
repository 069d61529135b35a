import pino from 'pino';
import { BACKUP_EVENTS, checkEvent, decodeJson, InProcessBus, publishEvent, Subjects, type Message } from '../../bus';

const at = '2026-01-01T00:00:00.000Z';
const error = { code: 'BACKUP_FAILED', message: 'disk full' };

/** One body of each event, in the shape the supervisor publishes. */
const SAMPLES = {
  backup_complete: { event: 'backup_complete', at, trigger: 'scheduled', durationMs: 12, bytes: 100, tables: [{ table: 't', bytes: 100, durationMs: 12, records: 3, file: 't-1.tkb' }], failed: [] },
  backup_failed: { event: 'backup_failed', at, table: 't', trigger: 'manual', error },
  compaction_complete: { event: 'compaction_complete', at, trigger: 'scheduled', durationMs: 5, results: [{ table: 't', status: 'skipped', durationMs: 1, attempts: 1 }] },
  compaction_failed: { event: 'compaction_failed', at, trigger: 'manual', results: [{ table: 't', status: 'error', durationMs: 1, attempts: 2, error }] },
  corruption_detected: { event: 'corruption_detected', at, table: 't', source: 'read', reason: 'checksum mismatch', offset: 42 },
  recovery_complete: { event: 'recovery_complete', at, table: 't', mode: 'recover', trigger: 'auto', status: 'recovered', reason: 'r', durationMs: 3, backupUsed: null, recordsFromBackup: 0, recordsFromDamaged: 2, recordsLost: 0, lostKeys: [], quarantined: '/q/t' },
  recovery_failed: { event: 'recovery_failed', at, table: 't', trigger: 'auto', error, degraded: false },
} as const;

describe('backup events', () => {
  test('backup events - every event has a schema that accepts what the supervisor publishes', () => {
    expect(Object.keys(SAMPLES).sort()).toEqual([...BACKUP_EVENTS].sort());
    for (const event of BACKUP_EVENTS) expect({ event, problems: checkEvent(event, SAMPLES[event]) }).toEqual({ event, problems: null });
  });

  test('backup events - a body missing a required field or of another event is rejected, naming the field', () => {
    const { table: _table, ...noTable } = SAMPLES.backup_failed;
    expect(checkEvent('backup_failed', noTable)).toMatch(/table: is required/);
    expect(checkEvent('backup_failed', { ...SAMPLES.backup_failed, error: { code: 'X' } })).toMatch(/error\.message: is required/);
    expect(checkEvent('recovery_complete', SAMPLES.recovery_failed)).not.toBeNull();
    expect(checkEvent('compaction_failed', { ...SAMPLES.compaction_failed, results: [] })).not.toBeNull();
  });

  test('backup events - publishEvent sends a valid body on backups.<event> and refuses an invalid one', async () => {
    const bus = new InProcessBus({ logger: pino({ level: 'silent' }) });
    try {
      const seen: Message[] = [];
      bus.subscribe('acme.backups.>', (msg) => void seen.push(msg));
      const subjects = new Subjects('acme');
      publishEvent(bus, subjects, 'corruption_detected', SAMPLES.corruption_detected);
      expect(() => publishEvent(bus, subjects, 'corruption_detected', { event: 'corruption_detected', at })).toThrow(
        expect.objectContaining({ code: 'INTERNAL', message: expect.stringContaining('table: is required') }),
      );
      await bus.flush();
      expect(seen.map((m) => [m.subject, decodeJson(m.data)])).toEqual([['acme.backups.corruption_detected', SAMPLES.corruption_detected]]);
    } finally {
      await bus.close();
    }
  });
});
