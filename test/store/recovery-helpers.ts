/**
 * Small helpers for tests that build table files, damage them and read them
 * back: a file's records with their offsets, every live key of a table file,
 * and sha256 of a file.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { scanFile, ScannedRecord, TableFile } from '../../store';

/** Every intact record of the file at `file`, in file order. */
export async function recordsOf(file: string): Promise<ScannedRecord[]> {
  const out: ScannedRecord[] = [];
  for await (const item of scanFile(file)) if (item.type === 'record') out.push(item);
  return out;
}

/** Opens `file` as a table and returns every live key and value (as text), then closes it. */
export async function contentsOf(file: string, table = 't'): Promise<{ entries: Map<string, string>; fileRecords: number; generation: number; seq: number }> {
  const t = await TableFile.open({ table, path: file });
  try {
    const entries = new Map<string, string>();
    let after: string | undefined;
    for (;;) {
      const page = t.select({ after, limit: 1000 });
      for (const item of page.items) entries.set(item.key, item.value.toString());
      if (page.next === undefined) break;
      after = page.next;
    }
    const stats = t.stats();
    return { entries, fileRecords: stats.fileRecords, generation: stats.generation, seq: stats.seq };
  } finally {
    await t.close();
  }
}

/** sha256 of a file's bytes, hex. */
export function sha256Of(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}
