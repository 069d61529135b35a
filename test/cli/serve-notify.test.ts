import * as fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { verifyWebhookSignature, WEBHOOK_HEADERS } from '../../actors/webhook';
import { startService, type RunningService } from '../../cli/serve';
import { vapidKeysPath } from '../../http/vapid-keys';
import { makeTempDir, removeTempDir } from '../helpers/store-temp';
import { ADMIN_TOKEN, captureLogger, testConfig } from '../http/http-helpers';

describe('serve - notifications', () => {
  let dir: string;
  let receiver: Server;
  let service: RunningService | undefined;
  const got: { headers: Record<string, unknown>; body: string }[] = [];
  let arrived: () => void = () => undefined;

  beforeAll(async () => {
    dir = makeTempDir('tk-serve-notify-');
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(204).end();
        arrived();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await service?.stop();
    receiver.closeAllConnections();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
    if (dir) removeTempDir(dir);
  });

  test('serve - a failed backup reaches the configured webhook, signed; the VAPID key is served', async () => {
    const base = testConfig(path.join(dir, 'data'));
    // A file where the table's backup directory should be (the start checks only the top one): every backup of it fails.
    const backupDir = path.join(dir, 'backups');
    fs.mkdirSync(backupDir);
    fs.writeFileSync(path.join(backupDir, 'orders'), 'x');
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    service = await startService(
      { ...base, backupDir, notify: { ...base.notify, webhooks: [{ url, secret: 'e2e-secret' }] } },
      captureLogger('silent').logger,
    );
    const delivered = new Promise<void>((resolve) => (arrived = resolve));
    const res = await fetch(`${service.httpUrl}/api/admin/backup/orders`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBeGreaterThanOrEqual(200);
    await delivered;
    expect(got).toHaveLength(1);
    const body = JSON.parse(got[0].body);
    expect(body).toMatchObject({ event: 'backup_failed', table: 'orders', subject: 'backups.backup_failed', data: { table: 'orders' } });
    expect(verifyWebhookSignature({
      secret: 'e2e-secret',
      timestamp: String(got[0].headers[WEBHOOK_HEADERS.timestamp]),
      body: got[0].body,
      signature: String(got[0].headers[WEBHOOK_HEADERS.signature]),
      nowS: Math.floor(Date.now() / 1000),
    })).toBe(true);

    const key = await fetch(`${service.httpUrl}/api/push/key`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const stored = JSON.parse(fs.readFileSync(vapidKeysPath(path.join(dir, 'data')), 'utf8'));
    expect(await key.json()).toEqual({ publicKey: stored.publicKey });
    await service.stop();
  });
});
