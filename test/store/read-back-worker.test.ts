import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readBackInWorker } from '../../store/read-back-worker';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-readback-');
const MiB = 1024 * 1024;

describe('backup read-back worker', () => {
  /** Writes `bytes` to a new file and opens it for reading. */
  const fileOf = (name: string, bytes: Buffer): number => {
    const file = path.join(tmp.dir, name);
    fs.writeFileSync(file, bytes);
    return fs.openSync(file, 'r');
  };

  test('read-back - an exact copy hashes to the sha256 of its first `length` bytes', async () => {
    const bytes = randomBytes(10 * MiB + 123);
    const source = fileOf('source', Buffer.concat([bytes, Buffer.from('appended after the durable length')]));
    const copy = fileOf('copy', bytes);
    try {
      const result = await readBackInWorker({ copy, source, length: bytes.length });
      expect(result).toEqual({ sha256: createHash('sha256').update(bytes).digest('hex') });
    } finally {
      fs.closeSync(source);
      fs.closeSync(copy);
    }
  });

  test('read-back - a copy that differs in one byte names the window it differs in, and no hash', async () => {
    const bytes = randomBytes(10 * MiB);
    const changed = Buffer.from(bytes);
    changed[9 * MiB] ^= 0x01; // in the second 8 MiB window
    const source = fileOf('source', bytes);
    const copy = fileOf('copy', changed);
    try {
      expect(await readBackInWorker({ copy, source, length: bytes.length })).toEqual({ sha256: '', differs: [8 * MiB, 10 * MiB] });
    } finally {
      fs.closeSync(source);
      fs.closeSync(copy);
    }
  });

  test('read-back - a copy shorter than the length to check is a read failure, not a difference', async () => {
    const bytes = randomBytes(MiB);
    const source = fileOf('source', bytes);
    const copy = fileOf('copy', bytes.subarray(0, MiB / 2));
    try {
      await expect(readBackInWorker({ copy, source, length: bytes.length })).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('shorter') });
    } finally {
      fs.closeSync(source);
      fs.closeSync(copy);
    }
  });
});
