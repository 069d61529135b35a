/**
 * Checks of what the service logs: every line one JSON object that names
 * each field once (JSON.parse keeps only the last of a repeated name, so a
 * repeat silently loses a value).
 */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** The names of the top-level members of a JSON object text, in order, repeats included. */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      let k = j + 1;
      while (json[k] === ' ') k++;
      if (depth === 1 && json[k] === ':') keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      i = j;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

/** `field in line` for every field a line names more than once. */
export function repeatedFields(lines: string[]): string[] {
  return lines.flatMap((line) => {
    const keys = topLevelKeys(line);
    return keys.filter((k, i) => keys.indexOf(k) !== i).map((k) => `${k} in ${line}`);
  });
}

// Warnings and errors kept for a failure message.
const KEEP_WARNINGS = 20;

/**
 * A logger that prints nothing and keeps the lines with a repeated field
 * (at every level), for a test to assert there are none, and the last
 * warnings and errors, for a failure to show.
 */
export function fieldCheckingLogger(): { logger: Logger; repeats: string[]; warnings: string[] } {
  const repeats: string[] = [];
  const warnings: string[] = [];
  let rest = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      repeats.push(...repeatedFields(lines));
      for (const line of lines) if (/"level":(4|5|6)0/.test(line)) warnings.push(line);
      warnings.splice(0, Math.max(0, warnings.length - KEEP_WARNINGS));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), repeats, warnings };
}
