/**
 * The durable record of which tables have had a file: one empty marker file
 * per table in `<dataDir>/.tablekeeper/tables/`, written (and fsynced) the
 * first time the table's file opens. It lets an owner tell a table that was
 * never created (start it empty) from one whose file vanished (damage: the
 * recovery cycle runs, and with nothing usable the table is marked degraded).
 *
 * Plain node fs, like the recovery journal: this is the service's own
 * metadata, not table data, and it stays out of the table engine's I/O seam.
 */
import { existsSync } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import * as path from 'node:path';

function registryDir(dataDir: string): string {
  return path.join(dataDir, '.tablekeeper', 'tables');
}

function markerPath(dataDir: string, table: string): string {
  return path.join(registryDir(dataDir), table);
}

/** True when `table` has had a file in `dataDir` (its marker exists). */
export function tableWasCreated(dataDir: string, table: string): boolean {
  return existsSync(markerPath(dataDir, table));
}

/** Records durably that `table` has a file (temp file, fsync, rename, directory fsync); nothing to do when recorded. */
export async function markTableCreated(dataDir: string, table: string): Promise<void> {
  if (tableWasCreated(dataDir, table)) return;
  const dir = registryDir(dataDir);
  await mkdir(dir, { recursive: true });
  const target = markerPath(dataDir, table);
  const tmp = `${target}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, target);
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
