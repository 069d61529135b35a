import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { copyInWorker } from '../../store/copy-worker';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-copyworker-');
const MiB = 1024 * 1024;

describe('backup copy worker', () => {
  test('copy worker - copies exactly the first `length` bytes across many windows, and hashes them', async () => {
    const bytes = randomBytes(70 * MiB + 123); // more windows than the copy may run ahead of its fdatasync
    const sourceFile = path.join(tmp.dir, 'source');
    fs.writeFileSync(sourceFile, Buffer.concat([bytes, Buffer.from('appended after the durable length')]));
    const src = fs.openSync(sourceFile, 'r');
    const copyFile = path.join(tmp.dir, 'copy');
    const dst = fs.openSync(copyFile, 'w+');
    try {
      const result = await copyInWorker({ src, dst, length: bytes.length });
      expect(result).toEqual({ sha256: createHash('sha256').update(bytes).digest('hex') });
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
    expect(fs.readFileSync(copyFile).equals(bytes)).toBe(true);
  });

  test('copy worker - a copy whose bytes on disk differ from those copied is reported with its window', async () => {
    const bytes = randomBytes(20 * MiB);
    const sourceFile = path.join(tmp.dir, 'source');
    fs.writeFileSync(sourceFile, bytes);
    const src = fs.openSync(sourceFile, 'r');
    const dst = fs.openSync(path.join(tmp.dir, 'copy'), 'w+');
    try {
      const result = await copyInWorker({ src, dst, length: bytes.length, flipAt: 12 * MiB + 5 });
      expect(result).toEqual({ sha256: '', differs: [8 * MiB, 16 * MiB] });
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
  });

  test('copy worker - a source shorter than the length to copy fails in the copy stage, with its code', async () => {
    const sourceFile = path.join(tmp.dir, 'source');
    fs.writeFileSync(sourceFile, randomBytes(MiB));
    const src = fs.openSync(sourceFile, 'r');
    const dst = fs.openSync(path.join(tmp.dir, 'copy'), 'w+');
    try {
      await expect(copyInWorker({ src, dst, length: 2 * MiB })).rejects.toMatchObject({ code: 'EIO', stage: 'copy', message: expect.stringContaining('shorter') });
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
  });
});
