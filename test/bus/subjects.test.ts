import { Subjects } from '../../bus/subjects';
import { BadRequestError } from '../../store/errors';

describe('subjects', () => {
  test('subjects - builders without a prefix', () => {
    const s = new Subjects();
    expect(s.table('task_queue', 'get')).toBe('tables.task_queue.get');
    expect(s.tableWildcard('task_queue')).toBe('tables.task_queue.>');
    expect(s.allTables()).toBe('tables.*.>');
    expect(s.admin('compact')).toBe('admin.compact');
    expect(s.admin('backup', 't')).toBe('admin.backup.t');
    expect(s.admin('restore', 't')).toBe('admin.restore.t');
    expect(s.backupEvent('backup_complete')).toBe('backups.backup_complete');
    expect(s.allBackupEvents()).toBe('backups.>');
  });

  test('subjects - a prefix stands before every subject', () => {
    const s = new Subjects('acme');
    expect(s.table('t', 'get')).toBe('acme.tables.t.get');
    expect(s.admin('health')).toBe('acme.admin.health');
    expect(s.backupEvent('recovery_failed')).toBe('acme.backups.recovery_failed');
    expect(new Subjects('acme.prod').tableWildcard('t')).toBe('acme.prod.tables.t.>');
  });

  test('subjects - parseTable finds the table and operation', () => {
    const s = new Subjects('acme');
    expect(s.parseTable('acme.tables.t.get')).toEqual({ table: 't', operation: 'get', known: true });
    expect(s.parseTable('acme.tables.t.frobnicate')).toEqual({ table: 't', operation: 'frobnicate', known: false });
    expect(s.parseTable('acme.tables.t.get.extra')).toEqual({ table: 't', operation: 'get.extra', known: false });
    expect(s.parseTable('tables.t.get')).toBeUndefined();
    expect(s.parseTable('acme.admin.compact')).toBeUndefined();
    expect(s.parseTable('acme.tables.t')).toBeUndefined();
  });

  test('subjects - table names and prefixes must be valid tokens', () => {
    const s = new Subjects();
    for (const bad of ['', 'a.b', 'a b', '*', '>', 'x*']) expect(() => s.table(bad, 'get')).toThrow(BadRequestError);
    expect(() => new Subjects('a..b')).toThrow(BadRequestError);
    expect(() => new Subjects('a.*')).toThrow(BadRequestError);
  });
});
