import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { CompactionOutput, WRITE_BUFFER_BYTES } from '../../store/compaction-output';
import { FaultyFs } from '../helpers/store-faulty-fs';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-output-');

/** A new output file with background syncs every `every` bytes; failures come back as they are. */
async function newOutput(ffs: FaultyFs, every: number): Promise<{ out: CompactionOutput; file: string; fd: number }> {
  const file = path.join(tmp.dir, 'out.tkt');
  const fd = await ffs.open(file, 'w+');
  const out = new CompactionOutput(ffs, fd, (_op, fn) => fn(), () => Promise.resolve(), every);
  return { out, file, fd };
}

/** Appends `chunks` buffer-sized pieces of random bytes, flushing as the compaction does; returns them all. */
async function fill(out: CompactionOutput, chunks: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; i < chunks; i++) {
    const part = randomBytes(WRITE_BUFFER_BYTES);
    parts.push(part);
    out.appendBytes(part);
    await out.flush(false);
  }
  return Buffer.concat(parts);
}

describe('compaction output', () => {
  test('compaction output - fdatasyncs start behind the writes while the copy goes on; sync then makes all of it durable', async () => {
    const ffs = new FaultyFs();
    const { out, file, fd } = await newOutput(ffs, 2 * WRITE_BUFFER_BYTES);
    try {
      const bytes = await fill(out, 8);
      // No sync was asked for yet, and one already ran or is running.
      expect(ffs.calls.fdatasync).toBeGreaterThanOrEqual(1);
      const before = ffs.calls.fdatasync;
      await out.sync();
      expect(ffs.calls.fdatasync).toBeGreaterThan(before);
      expect(out.end).toBe(bytes.length);
      expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    } finally {
      await ffs.close(fd);
    }
  });

  test('compaction output - a failed background fdatasync fails the next flush and the sync', async () => {
    const ffs = new FaultyFs();
    ffs.failOn({ op: 'fdatasync', nth: 1 });
    const { out, fd } = await newOutput(ffs, WRITE_BUFFER_BYTES);
    try {
      const failed = ffs.completed('fdatasync');
      await fill(out, 2);
      await failed;
      out.appendBytes(Buffer.alloc(16));
      await expect(out.flush(false)).rejects.toMatchObject({ code: 'EIO' });
      await expect(out.sync()).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      await out.settle();
      await ffs.close(fd);
    }
  });

  test('compaction output - settle waits for a background fdatasync in flight (the descriptor may be closed after it)', async () => {
    const ffs = new FaultyFs();
    const gate = ffs.hold('fdatasync');
    const { out, fd } = await newOutput(ffs, WRITE_BUFFER_BYTES);
    try {
      await fill(out, 2);
      await gate.reached;
      let settled = false;
      const settling = out.settle().then(() => (settled = true));
      // The write before it is done; only the held fdatasync keeps settle waiting.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      expect(settled).toBe(false);
      gate.release();
      await settling;
      expect(settled).toBe(true);
    } finally {
      await ffs.close(fd);
    }
  });
});
