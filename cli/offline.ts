/**
 * Offline tools over table files: `verify`, `salvage` and `dump`. They work
 * on a file directly (no service needed; stop the service or work on a copy
 * or a quarantined file) and never modify their input.
 *
 * Exit codes: 0 the file is clean (verify) or the command did its work;
 * 1 the file has damage (verify; salvage still writes what is intact and
 * exits 1 so a script notices the loss); 2 usage error or an unreadable file.
 */
import { isUtf8 } from 'node:buffer';
import * as path from 'node:path';
import { nodeStoreFs, pendingCutOf, salvageFile, scanFile, verifyFile, type DamagedRange, type VerifyReport } from '../store';
import type { CommandIo } from './remote';

const OK = 0;
const DAMAGED = 1;
const USAGE = 2;

const HELP = {
  verify: `usage: tablekeeper verify <file> [--json]
  Checks the header and every record's checksum; lists every damaged byte range.
  Exit 0 when clean, 1 when damaged, 2 when the file cannot be read.`,
  salvage: `usage: tablekeeper salvage <file> --out <file> [--json]
  Writes the intact records (newest per key, tombstones kept) to a new table file.
  Never overwrites: --out must not exist. Exit 0 when nothing was lost, 1 when
  the input had damage (the output still holds everything intact), 2 on errors.`,
  dump: `usage: tablekeeper dump <file>
  Prints every record as a JSON line: {"offset","seq","kind","key","value"} with
  the value as JSON when it parses, else {"base64": ...}; damaged ranges as
  {"damage": {"start","end","reason"}}. Exit 0 when clean, 1 when damaged.`,
} as const;

type OfflineCommand = keyof typeof HELP;

interface Parsed {
  file: string;
  out?: string;
  json: boolean;
}

/** Parses `<file> [--out <file>] [--json]`; returns a usage message instead when the line is wrong. */
function parse(command: OfflineCommand, argv: readonly string[]): Parsed | string {
  const files: string[] = [];
  let out: string | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json' && command !== 'dump') json = true;
    else if (a === '--out' && command === 'salvage') {
      out = argv[++i];
      if (out === undefined || out.startsWith('--')) return '--out needs a file name';
    } else if (a.startsWith('--out=') && command === 'salvage') out = a.slice('--out='.length);
    else if (a.startsWith('-')) return `unknown option '${a}'`;
    else files.push(a);
  }
  if (files.length !== 1) return files.length === 0 ? 'a file is required' : 'only one file, please';
  if (command === 'salvage' && !out) return '--out <file> is required';
  return { file: files[0], out, json };
}

/** Runs `verify`, `salvage` or `dump`; resolves to the exit code, never rejects. */
export async function offlineCommand(command: OfflineCommand, io: CommandIo): Promise<number> {
  if (io.argv.includes('--help') || io.argv.includes('-h')) {
    io.stdout.write(`${HELP[command]}\n`);
    return OK;
  }
  const args = parse(command, io.argv);
  if (typeof args === 'string') {
    io.stderr.write(`tablekeeper ${command}: ${args}\n${HELP[command]}\n`);
    return USAGE;
  }
  try {
    if (command === 'verify') return await verify(args, io);
    if (command === 'salvage') return await salvage(args, io);
    return await dump(args, io);
  } catch (err) {
    io.stderr.write(`tablekeeper ${command}: ${describe(err)}\n`);
    return USAGE;
  }
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  // salvage writes `<out>.partial` first: a missing folder of --out shows up there.
  if (e?.code === 'ENOENT' && e.path?.endsWith('.partial') === true) return `cannot write ${e.path.slice(0, -'.partial'.length)}: no such directory: ${path.dirname(e.path)}`;
  if (e?.code === 'ENOENT') return `no such file: ${e.path ?? ''}`.trim();
  if (e?.code === 'EISDIR') return 'that is a directory, not a table file';
  return e instanceof Error ? e.message : String(err);
}

function rangeLine(d: DamagedRange): string {
  return `  bytes ${d.start}-${d.end} (${d.end - d.start} bytes): ${d.reason}${d.tail ? ' [at the end: a torn write, cut at open]' : ''}`;
}

async function verify(args: Parsed, io: CommandIo): Promise<number> {
  const report: VerifyReport = await verifyFile(args.file);
  if (args.json) {
    io.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    const header = report.header ? `format ${report.header.version}, generation ${report.header.generation}` : 'header DAMAGED';
    io.stdout.write(
      `${report.path}: ${report.fileBytes} bytes, ${header}\n` +
        `${report.records} intact records (${report.puts} puts, ${report.deletes} deletes), highest sequence ${report.maxSeq}\n`,
    );
    if (report.pendingCut !== undefined) {
      io.stdout.write(`a cut marker is pending: the bytes from ${report.pendingCut} on are writes that were rejected; opening the table cuts them\n`);
    }
    if (report.ok) io.stdout.write('ok: no damage\n');
    else io.stdout.write(`DAMAGED: ${report.damaged.length} range(s)\n${report.damaged.map(rangeLine).join('\n')}\n`);
  }
  return report.ok ? OK : DAMAGED;
}

async function salvage(args: Parsed, io: CommandIo): Promise<number> {
  const r = await salvageFile(args.file, args.out as string);
  if (args.json) {
    io.stdout.write(`${JSON.stringify(r)}\n`);
  } else {
    io.stdout.write(
      `${r.output}: ${r.liveKeys} live keys, ${r.records} records, generation ${r.generation}\n` +
        `read ${r.intactRecords} intact records; ${r.damagedRanges.length} damaged range(s), ${r.damagedBytes} bytes; ` +
        `${r.repairedRecords} repaired, ${r.lostRecords} lost` +
        (r.lostKeys.length > 0 ? ` (keys: ${r.lostKeys.slice(0, 20).join(', ')}${r.lostKeys.length > 20 ? ', ...' : ''})` : '') +
        '\n',
    );
  }
  return r.damagedRanges.length === 0 && r.header !== undefined ? OK : DAMAGED;
}

async function dump(args: Parsed, io: CommandIo): Promise<number> {
  let damaged = false;
  const cut = await pendingCutOf(args.file, nodeStoreFs);
  // A reader that stops early (`dump ... | head`) closes the pipe: stop there.
  const out = io.stdout as { on?: (event: string, fn: (err: NodeJS.ErrnoException) => void) => unknown };
  let readerGone = false;
  out.on?.('error', (err) => {
    if (err.code === 'EPIPE') readerGone = true;
  });
  for await (const item of scanFile(args.file)) {
    if (readerGone) break;
    let line: unknown;
    let text: string | undefined;
    if (item.type === 'header') {
      line = { header: item.header ?? null, ...(item.damage === undefined ? {} : { damage: item.damage }), ...(cut === undefined ? {} : { pendingCut: cut }) };
      if (item.damage !== undefined) damaged = true;
    } else if (item.type === 'damage') {
      damaged = true;
      line = { damage: { start: item.start, end: item.end, reason: item.reason, tail: item.tail } };
    } else {
      const head = JSON.stringify({ offset: item.offset, seq: item.seq, kind: item.kind, key: item.key });
      // The value goes in as its stored text, never parsed and written again
      // (which would change numbers and overflow the stack on deep nesting).
      text = item.value === undefined ? head : `${head.slice(0, -1)},"value":${valueText(item.value)}}`;
    }
    // Respect back-pressure: a dump of a large table can be far bigger than memory.
    if (!io.stdout.write(`${text ?? JSON.stringify(line)}\n`)) await drained(io.stdout);
  }
  return damaged ? DAMAGED : OK;
}

/**
 * A stored value as it is stored when it is JSON text (as the service
 * stores them), on one line; else `{"base64": ...}`. Outside strings JSON
 * may hold line breaks, inside them it may not: so turning every CR and LF
 * into a space keeps the same value on one line.
 */
function valueText(value: Buffer): string {
  if (isUtf8(value)) {
    const text = value.toString('utf8');
    try {
      JSON.parse(text);
      return text.replace(/[\r\n]/g, ' ');
    } catch {
      // Not JSON: shown as bytes.
    }
  }
  return JSON.stringify({ base64: value.toString('base64') });
}

/** Resolves once `stream` takes writes again, or can take none any more (closed, or failed). */
function drained(stream: CommandIo['stdout']): Promise<void> {
  const s = stream as unknown as { once?: (event: string, fn: () => void) => void; off?: (event: string, fn: () => void) => void };
  if (typeof s.once !== 'function') return Promise.resolve();
  return new Promise((resolve) => {
    const events = ['drain', 'close', 'error'];
    const done = (): void => {
      for (const e of events) s.off?.(e, done);
      resolve();
    };
    for (const e of events) s.once!(e, done);
  });
}
