/**
 * Shared by the HTTP tests: a pino logger whose output is captured, a small
 * Prometheus text parser, and a configuration for a temporary data dir.
 */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { loadConfig, type Config } from '../../supervisor/config';

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
export const READ_TOKEN = 'read-token-for-tests-9876543210';

/** A logger writing JSON lines into `lines`. */
export function captureLogger(level = 'trace'): { logger: Logger; lines: string[]; text: () => string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  return { logger: pino({ level }, stream), lines, text: () => lines.join('\n') };
}

/** A configuration on `dataDir` with two small tables, HTTP on a free port, and known tokens. */
export function testConfig(dataDir: string, http: Partial<Config['http']> = {}): Config {
  const base = loadConfig({
    env: {
      TABLEKEEPER_DATA_DIR: dataDir,
      TABLEKEEPER_HTTP_PORT: '0',
      TABLEKEEPER_ADMIN_TOKEN: ADMIN_TOKEN,
      TABLEKEEPER_READ_TOKEN: READ_TOKEN,
    },
  });
  return {
    ...base,
    tables: [
      { name: 'orders', sync: 'always', maxValueBytes: 4096 },
      { name: 'events', sync: 'none', maxValueBytes: 1024 * 1024 },
    ],
    http: { ...base.http, bodyLimitBytes: 64 * 1024, ...http },
  };
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;

/**
 * Parses Prometheus text format 0.0.4: every line is a comment (`# HELP`,
 * `# TYPE`) or a sample, every sample's family has a TYPE, and values are
 * numbers. Throws naming the first line that is not.
 */
export function parsePrometheus(text: string): Sample[] {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type)) throw new Error(`bad TYPE line: ${line}`);
      types.set(name, type);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3] !== undefined && m[3] !== '') {
      LABEL.lastIndex = 0;
      let consumed = 0;
      let lm: RegExpExecArray | null;
      while ((lm = LABEL.exec(m[3])) !== null) {
        labels[lm[1]] = lm[2].replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
        consumed = LABEL.lastIndex;
        if (lm[3] === '') break;
      }
      if (consumed !== m[3].length) throw new Error(`bad labels: ${line}`);
    }
    const raw = m[4];
    // Go's ParseFloat, which Prometheus uses, reads NaN and Inf in any case.
    const special: Record<string, number> = { '+inf': Infinity, inf: Infinity, '-inf': -Infinity, nan: NaN };
    const value = raw.toLowerCase() in special ? special[raw.toLowerCase()] : Number(raw);
    if (Number.isNaN(value) && raw.toLowerCase() !== 'nan') throw new Error(`bad value: ${line}`);
    const family = [...types.keys()].find((f) => m[1] === f || /^(_bucket|_sum|_count|_total)$/.test(m[1].slice(f.length)) && m[1].startsWith(f));
    if (family === undefined) throw new Error(`sample without a TYPE: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

/** The value of the one sample named `name` whose labels include `labels`, or undefined. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hit?.value;
}

/** Polls `check` until it returns true (bounded by the test timeout); for conditions no event announces. */
export async function until(check: () => boolean | Promise<boolean>, what: string, maxMs = 10_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
