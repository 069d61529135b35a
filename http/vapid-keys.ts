/**
 * The VAPID key pair Web Push signs with: from `TABLEKEEPER_VAPID_PUBLIC_KEY`
 * and `TABLEKEEPER_VAPID_PRIVATE_KEY` when set; otherwise generated at the
 * first start and kept in `<dataDir>/.tablekeeper/vapid-keys.json` (mode
 * 0600), which later starts read. Browsers' subscriptions are bound to the
 * public key, so the file must be kept: a new pair orphans every subscription.
 */
import type { Logger } from 'pino';
import { generateVapidKeys, type VapidKeys } from '../actors';
import { ConfigInvalidError } from '../store';
import type { NotifyConfig } from '../supervisor';
import { readOrCreateSecret, secretFilePath } from './secret-file';

/** The key file's path under a data directory. */
export function vapidKeysPath(dataDir: string): string {
  return secretFilePath(dataDir, 'vapid-keys.json');
}

const KEY = /^[A-Za-z0-9_-]+$/;

/** Returns the key pair; throws `ConfigInvalidError` when the file cannot be read, written or parsed. */
export function resolveVapidKeys(opts: { dataDir: string; webPush: NotifyConfig['webPush']; logger: Logger }): VapidKeys {
  const { publicKey, privateKey } = opts.webPush;
  if (publicKey !== undefined && privateKey !== undefined) return { publicKey, privateKey };
  const file = vapidKeysPath(opts.dataDir);
  const { value, created } = readOrCreateSecret(file, 'VAPID key', () => JSON.stringify(generateVapidKeys()), opts.logger);
  let keys: unknown;
  try {
    keys = JSON.parse(value);
  } catch (err) {
    throw new ConfigInvalidError(`the VAPID key file ${file} is not valid JSON; restore it (or delete it and subscribe again)`, { cause: err });
  }
  const k = keys as Partial<VapidKeys> | null;
  if (typeof k?.publicKey !== 'string' || typeof k.privateKey !== 'string' || !KEY.test(k.publicKey) || !KEY.test(k.privateKey)) {
    throw new ConfigInvalidError(`the VAPID key file ${file} must hold {"publicKey", "privateKey"} in URL-safe base64`);
  }
  // The public key only: the private key is never logged.
  if (created) opts.logger.info({ op: 'vapid-keys', file, publicKey: k.publicKey }, 'generated a VAPID key pair for Web Push');
  return { publicKey: k.publicKey, privateKey: k.privateKey };
}
