import { WriteBatch } from '../../store/write-batch';

function batchWithTwoRecords(): WriteBatch {
  const batch = new WriteBatch(4096, Buffer.alloc(64));
  batch.reserve(40).fill(7, 0, 40);
  batch.noteUndo('a', -1, 0);
  batch.noteUndo('b', 128, 40);
  return batch;
}

describe('WriteBatch', () => {
  test('keeps its bytes and undo log until it settles', () => {
    const batch = batchWithTwoRecords();
    expect(batch.count).toBe(2);
    expect(batch.keys).toEqual(['a', 'b']);
    expect(batch.prevOffsets).toEqual([-1, 128]);
    expect(batch.prevLengths).toEqual([0, 40]);
    expect(batch.buf.length).toBe(64);
    expect(batch.settled).toBe(false);
  });

  test('grows its buffer and keeps the bytes reserved so far', () => {
    const batch = new WriteBatch(0, Buffer.alloc(8));
    batch.reserve(6).fill(1, 0, 6);
    const buf = batch.reserve(6);
    expect(buf.length).toBeGreaterThanOrEqual(12);
    expect(batch.len).toBe(12);
    expect([...buf.subarray(0, 6)]).toEqual([1, 1, 1, 1, 1, 1]);
  });

  // A settled batch that reached the old generation must not keep its
  // records (and the young objects they reference) alive.
  test('lets go of its bytes and undo log once resolved', async () => {
    const batch = batchWithTwoRecords();
    batch.resolve();
    await expect(batch.done).resolves.toBeUndefined();
    expect(batch.settled).toBe(true);
    expect(batch.buf.length).toBe(0);
    expect(batch.count).toBe(0);
    expect(batch.prevOffsets).toHaveLength(0);
    expect(batch.prevLengths).toHaveLength(0);
  });

  test('lets go of its bytes and undo log once rejected', async () => {
    const batch = batchWithTwoRecords();
    const failure = new Error('disk full');
    batch.reject(failure);
    await expect(batch.done).rejects.toBe(failure);
    expect(batch.settled).toBe(true);
    expect(batch.buf.length).toBe(0);
    expect(batch.count).toBe(0);
    expect(batch.prevOffsets).toHaveLength(0);
    expect(batch.prevLengths).toHaveLength(0);
  });
});
