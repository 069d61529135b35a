import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, linkSync, openSync, readFileSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { offlineCommand } from '../../cli/offline';
import { salvageFile, scanFile, TableFile } from '../../store';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

/** Runs a command with captured output. */
async function run(command: 'verify' | 'salvage' | 'dump', argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await offlineCommand(command, {
    argv,
    env: {},
    stdout: { write: (t: string) => ((out += t), true) },
    stderr: { write: (t: string) => ((err += t), true) },
  });
  return { code, out, err };
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** A table with 20 keys (k0..k19), k0..k4 overwritten, k5 deleted. */
async function makeTable(file: string): Promise<void> {
  const t = await TableFile.open({ table: 't', path: file });
  for (let i = 0; i < 20; i++) await t.put(`k${i}`, Buffer.from(JSON.stringify({ i })));
  for (let i = 0; i < 5; i++) await t.put(`k${i}`, Buffer.from(JSON.stringify({ i, v: 2 })));
  await t.delete('k5');
  await t.close();
}

/** Flips a byte inside the value of the newest record of `key`. */
async function damageValueOf(file: string, key: string): Promise<{ offset: number; length: number }> {
  let rec: { offset: number; length: number } | undefined;
  for await (const item of scanFile(file)) if (item.type === 'record' && item.key === key) rec = item;
  if (!rec) throw new Error(`no record of ${key}`);
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from([0xee, 0xee]), 0, 2, rec.offset + rec.length - 3);
  closeSync(fd);
  return rec;
}

describe('offline tools', () => {
  const tmp = useTempDir('tk-cli-offline-');

  test('offline tools - a pending cut marker beside the file: verify and dump name its offset, salvage leaves the rejected writes out, and none of them changes anything', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await makeTable(file);
    // A failed fsync whose rollback cut fails, at once and at close: the rejected put stays in the file, with a marker.
    const ffs = new FaultyFs();
    const t = await TableFile.open({ table: 't', path: file, fs: ffs });
    const good = t.durableLength;
    ffs.failOn({ op: 'fdatasync', nth: 1 }).failOn({ op: 'truncate', nth: 1, sticky: true });
    await expect(t.put('rejected', Buffer.from('1'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    await t.close();
    const before = [sha(file), readFileSync(`${file}.cut`, 'utf8')];

    const v = await run('verify', [file]);
    expect(v.code).toBe(0);
    expect(v.out).toContain(`a cut marker is pending: the bytes from ${good} on are writes that were rejected; opening the table cuts them`);
    const vj = await run('verify', [file, '--json']);
    expect(JSON.parse(vj.out)).toMatchObject({ ok: true, pendingCut: good });
    const d = await run('dump', [file]);
    expect(JSON.parse(d.out.split('\n')[0])).toMatchObject({ pendingCut: good });
    // The dump still shows every record, the rejected one too.
    expect(d.out).toContain('"key":"rejected"');
    const out = path.join(tmp.dir, 'salvaged.tkt');
    const sv = await run('salvage', [file, '--out', out]);
    expect(sv.code).toBe(0);
    const salvaged = await TableFile.open({ table: 't', path: out });
    expect(salvaged.has('rejected')).toBe(false);
    expect(salvaged.get('k19')?.toString()).toBe('{"i":19}');
    await salvaged.close();
    expect([sha(file), readFileSync(`${file}.cut`, 'utf8')]).toEqual(before);
  });

  test('offline tools - verify reports a clean file with exit 0, and every damaged range with exit 1, never modifying it', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await makeTable(file);
    const clean = await run('verify', [file]);
    expect(clean).toMatchObject({ code: 0, err: '' });
    expect(clean.out).toContain('26 intact records (25 puts, 1 deletes)');
    expect(clean.out).toContain('ok: no damage');

    const a = await damageValueOf(file, 'k10');
    const b = await damageValueOf(file, 'k15');
    const before = sha(file);
    const bad = await run('verify', [file]);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain('DAMAGED: 2 range(s)');
    expect(bad.out).toContain(`bytes ${a.offset}-${a.offset + a.length}`);
    const json = await run('verify', [file, '--json']);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.out);
    expect(report.damaged.map((d: { start: number }) => d.start)).toEqual([a.offset, b.offset]);
    expect(report).toMatchObject({ ok: false, records: 24 });
    expect(sha(file)).toBe(before);
  });

  test('offline tools - salvage writes the intact records to a new file that opens, and refuses to overwrite', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const out = path.join(tmp.dir, 'saved.tkt');
    await makeTable(file);
    await damageValueOf(file, 'k12');
    const before = sha(file);
    const r = await run('salvage', [file, '--out', out, '--json']);
    expect(r.code).toBe(1); // the input had damage
    const report = JSON.parse(r.out);
    expect(report).toMatchObject({ liveKeys: 18, lostKeys: ['k12'] });
    expect(sha(file)).toBe(before);
    const t = await TableFile.open({ table: 't', path: out });
    try {
      expect(t.stats().records).toBe(18);
      expect(JSON.parse(t.get('k3')!.toString())).toEqual({ i: 3, v: 2 });
      expect(t.get('k5')).toBeUndefined();
      expect(t.get('k12')).toBeUndefined(); // lost, never an older or wrong value
    } finally {
      await t.close();
    }
    const again = await run('salvage', [file, '--out', out]);
    expect(again.code).toBe(2);
    expect(again.err).toContain('refusing to overwrite');
    const self = await run('salvage', [file, '--out', file]);
    expect(self.code).toBe(2);
    expect(sha(file)).toBe(before);

    const cleanOut = path.join(tmp.dir, 'clean.tkt');
    const source = path.join(tmp.dir, 'clean-source.tkt');
    await makeTable(source);
    const clean = await run('salvage', [source, `--out=${cleanOut}`]);
    expect(clean.code).toBe(0);
    expect(clean.out).toContain('19 live keys');
  });

  test('offline tools - salvage never modifies its input: not as the temporary file, nor under another name', async () => {
    const partial = path.join(tmp.dir, 'foo.tkt.partial');
    await makeTable(partial);
    const before = sha(partial);
    // The output's temporary file would be the input itself.
    const viaTmp = await run('salvage', [partial, '--out', path.join(tmp.dir, 'foo.tkt')]);
    expect(viaTmp.code).toBe(2);
    expect(viaTmp.err).toContain('temporary file');
    expect(sha(partial)).toBe(before);
    expect(existsSync(path.join(tmp.dir, 'foo.tkt'))).toBe(false);
    // The output is the input through a hard link or a symlink.
    linkSync(partial, path.join(tmp.dir, 'hard.tkt'));
    symlinkSync(partial, path.join(tmp.dir, 'soft.tkt'));
    for (const name of ['hard.tkt', 'soft.tkt']) {
      const r = await run('salvage', [partial, '--out', path.join(tmp.dir, name)]);
      expect(r.code).toBe(2);
      expect(r.err).toContain('the input under another name');
    }
    // A leftover temporary file of another run is neither truncated nor removed.
    writeFileSync(path.join(tmp.dir, 'new.tkt.partial'), 'someone else');
    const leftover = await run('salvage', [partial, '--out', path.join(tmp.dir, 'new.tkt')]);
    expect(leftover.code).toBe(2);
    expect(readFileSync(path.join(tmp.dir, 'new.tkt.partial'), 'utf8')).toBe('someone else');
    // An output folder that does not exist is named as such, not as a missing temporary file.
    const nowhere = await run('salvage', [partial, '--out', path.join(tmp.dir, 'no-such-dir', 'x.tkt')]);
    expect(nowhere.code).toBe(2);
    expect(nowhere.err).toContain(`no such directory: ${path.join(tmp.dir, 'no-such-dir')}`);
    expect(nowhere.err).not.toContain('.partial');
    expect(sha(partial)).toBe(before);
  });

  test('offline tools - salvage never replaces an output that appears while it works', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const out = path.join(tmp.dir, 'saved.tkt');
    await makeTable(file);
    const fs = new FaultyFs();
    // The output appears between the start and the final rename or link.
    const gate = fs.hold('fdatasync');
    const salvaging = salvageFile(file, out, { fs });
    await gate.reached;
    writeFileSync(out, 'written meanwhile');
    gate.release();
    await expect(salvaging).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect(readFileSync(out, 'utf8')).toBe('written meanwhile');
    expect(existsSync(out + '.partial')).toBe(false);
  });

  test('offline tools - with a damaged header nothing is a torn write that open cuts: open refuses the whole file', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await makeTable(file);
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from([0xff]), 0, 1, 5); // the header's checksum no longer holds
    writeSync(fd, Buffer.from('torn'), 0, 4, fstatSync(fd).size); // and a torn last record
    closeSync(fd);
    await expect(TableFile.open({ table: 't', path: file })).rejects.toMatchObject({ code: 'TABLE_CORRUPT', offset: 0 });
    const text = await run('verify', [file]);
    expect(text.code).toBe(1);
    expect(text.out).toContain('header DAMAGED');
    expect(text.out).not.toContain('cut at open');
    const report = JSON.parse((await run('verify', [file, '--json'])).out);
    expect(report.damaged).toHaveLength(2);
    expect(report.damaged.map((d: { tail: boolean }) => d.tail)).toEqual([false, false]);
    // The header line names the header's damage as text; the ranges after it are objects.
    const dumped = (await run('dump', [file])).out.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => typeof l.damage === 'object');
    expect(dumped.map((l) => l.damage.tail)).toEqual([false]);
    // A file shorter than a header is not a torn write either.
    const short = path.join(tmp.dir, 'short.tkt');
    writeFileSync(short, 'TKT1abcd');
    await expect(TableFile.open({ table: 't', path: short })).rejects.toMatchObject({ code: 'TABLE_CORRUPT' });
    expect(JSON.parse((await run('verify', [short, '--json'])).out).damaged).toEqual([expect.objectContaining({ start: 0, end: 8, tail: false })]);
  });

  test('offline tools - dump prints every record and damaged range as JSON lines', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await makeTable(file);
    const clean = await run('dump', [file]);
    expect(clean.code).toBe(0);
    const lines = clean.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ header: { version: 1, generation: 1 } });
    expect(lines).toHaveLength(27);
    expect(lines[1]).toMatchObject({ seq: 1, kind: 'put', key: 'k0', value: { i: 0 } });
    expect(lines.at(-1)).toEqual({ offset: expect.any(Number), seq: 26, kind: 'delete', key: 'k5' });

    const rec = await damageValueOf(file, 'k7');
    const bad = await run('dump', [file]);
    expect(bad.code).toBe(1);
    const damaged = bad.out.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.damage);
    expect(damaged).toEqual([{ damage: { start: rec.offset, end: rec.offset + rec.length, reason: expect.any(String), tail: false } }]);
  });

  test('offline tools - dump prints each value as stored: numbers unchanged, deep nesting, line breaks, bytes that are not JSON', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    const deep = '['.repeat(50000) + ']'.repeat(50000);
    const values: [string, Buffer][] = [
      ['big', Buffer.from('12345678901234567890')],
      ['one', Buffer.from('1.0')],
      ['huge', Buffer.from('1e400')],
      ['pretty', Buffer.from('{\r\n  "a": [1,\n 2]\n}')],
      ['deep', Buffer.from(deep)],
      ['text', Buffer.from('not json')],
      ['bytes', Buffer.from([0x22, 0xff, 0x22])],
    ];
    const t = await TableFile.open({ table: 't', path: file });
    for (const [key, value] of values) await t.put(key, value);
    await t.close();
    const d = await run('dump', [file]);
    expect(d.code).toBe(0);
    const lines = d.out.trim().split('\n');
    expect(lines).toHaveLength(1 + values.length);
    const raw = lines.slice(1);
    expect(raw[0]).toMatch(/,"value":12345678901234567890}$/);
    expect(raw[1]).toMatch(/,"value":1\.0}$/);
    expect(raw[2]).toMatch(/,"value":1e400}$/);
    expect(raw[3].endsWith(',"value":{    "a": [1,  2] }}')).toBe(true);
    expect(raw[4].endsWith(`,"value":${deep}}`)).toBe(true);
    const parsed = raw.map((l) => JSON.parse(l));
    expect(parsed.map((l) => l.key)).toEqual(values.map(([k]) => k));
    expect(parsed[3].value).toEqual({ a: [1, 2] });
    expect(parsed[5].value).toEqual({ base64: Buffer.from('not json').toString('base64') });
    expect(parsed[6].value).toEqual({ base64: Buffer.from([0x22, 0xff, 0x22]).toString('base64') });
  });

  test('offline tools - usage errors and unreadable files exit 2 with a message', async () => {
    expect((await run('verify', [])).code).toBe(2);
    expect((await run('verify', ['a', 'b'])).code).toBe(2);
    expect((await run('verify', ['--bogus', 'a'])).code).toBe(2);
    expect((await run('salvage', ['a'])).err).toContain('--out <file> is required');
    const missing = await run('verify', [path.join(tmp.dir, 'nope.tkt')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('no such file');
    const dir = await run('dump', [tmp.dir]);
    expect(dir.code).toBe(2);
    expect((await run('dump', ['--help'])).code).toBe(0);
    expect(existsSync(path.join(tmp.dir, 'nope.tkt'))).toBe(false);
  });

  test('offline tools - the built command line runs verify with its exit code', async () => {
    const file = path.join(tmp.dir, 't.tkt');
    await makeTable(file);
    await damageValueOf(file, 'k1');
    const main = path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js');
    const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = execFile(process.execPath, [main, 'verify', file], (error, stdout) => resolve({ code: child.exitCode, out: stdout }));
    });
    expect(result.code).toBe(1);
    expect(result.out).toContain('DAMAGED: 1 range(s)');
  });

  test('offline tools - the built dump piped into a reader that stops early (`| head`) ends quietly with the exit code of a clean file', async () => {
    // Far more output than a pipe holds, so that dump is still writing when the reader goes.
    const file = path.join(tmp.dir, 'big.tkt');
    const t = await TableFile.open({ table: 't', path: file, sync: 'none' });
    for (let i = 0; i < 4000; i++) await t.put(`key-${i}`, Buffer.from(JSON.stringify({ i, pad: 'x'.repeat(200) })));
    await t.close();
    const main = path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js');
    const result = await new Promise<{ code: number | null; first: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, [main, 'dump', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let first = '';
      let err = '';
      child.stdout.once('data', (chunk: Buffer) => {
        first = chunk.toString().split('\n')[0];
        child.stdout.destroy(); // as `head` does once it has what it wants
      });
      child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
      child.on('close', (code) => resolve({ code, first, err }));
    });
    expect(JSON.parse(result.first)).toMatchObject({ header: { generation: 1 } });
    expect(result.err).toBe('');
    expect(result.code).toBe(0);
  });
});
