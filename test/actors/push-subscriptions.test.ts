import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PushSubscriptions, pushSubscriptionsPath } from '../../actors/push-subscriptions';

describe('push subscriptions file', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tk-pushsubs-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('push subscriptions - a leftover temp file with a wide mode never passes its mode on to the saved file', async () => {
    const file = pushSubscriptionsPath(dir);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, 'half a write', { mode: 0o644 });
    const subs = await PushSubscriptions.open(dir);
    await subs.add({ endpoint: 'https://push.example.test/one', keys: { p256dh: 'BPk'.padEnd(40, 'a'), auth: 'auth-secret-1' } });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await PushSubscriptions.open(dir)).list().map((s) => s.endpoint)).toEqual(['https://push.example.test/one']);
  });
});
