/**
 * The VAPID key pair Web Push signs with: from `TABLEKEEPER_VAPID_PUBLIC_KEY`
 * and `TABLEKEEPER_VAPID_PRIVATE_KEY` when set; otherwise generated at the
 * first start and kept in `<dataDir>/.tablekeeper/vapid-keys.json` (mode
 * 0600), which later starts read. Browsers' subscriptions are bound to the
 * public key, so the file must be kept: a new pair orphans every subscription.
 */
import { createECDH } from 'node:crypto';
import type { Logger } from 'pino';
import { generateVapidKeys, isP256PublicKey, type VapidKeys } from '../actors';
import { ConfigInvalidError } from '../store';
import type { NotifyConfig } from '../supervisor';
import { readOrCreateSecret, secretFilePath } from './secret-file';

/** The key file's path under a data directory. */
export function vapidKeysPath(dataDir: string): string {
  return secretFilePath(dataDir, 'vapid-keys.json');
}

const KEY = /^[A-Za-z0-9_-]+$/;

/**
 * Why `keys` cannot sign Web Push, or undefined: VAPID (RFC 8292) takes a
 * P-256 key pair, the public key an uncompressed point (65 bytes) and the
 * private key 32 bytes, in URL-safe base64. Checked at start: a bad pair
 * would otherwise fail every notification, and only once one is sent.
 * The message names no key material.
 */
export function vapidKeysProblem(keys: VapidKeys): string | undefined {
  if (!KEY.test(keys.publicKey) || !KEY.test(keys.privateKey)) return 'the keys must be in URL-safe base64';
  const pub = Buffer.from(keys.publicKey, 'base64url');
  const priv = Buffer.from(keys.privateKey, 'base64url');
  if (!isP256PublicKey(keys.publicKey)) return `the public key must decode to an uncompressed P-256 point (65 bytes), not ${pub.length} bytes`;
  if (priv.length !== 32) return `the private key must decode to 32 bytes, not ${priv.length}`;
  const ecdh = createECDH('prime256v1');
  try {
    ecdh.setPrivateKey(priv);
  } catch {
    return 'the private key is not a P-256 private key';
  }
  if (!ecdh.getPublicKey().equals(pub)) return 'the public key is not the one of the private key';
  return undefined;
}

/** Returns the key pair; throws `ConfigInvalidError` when the file cannot be read, written or parsed, or a pair is not a VAPID key pair. */
export function resolveVapidKeys(opts: { dataDir: string; webPush: NotifyConfig['webPush']; logger: Logger }): VapidKeys {
  const { publicKey, privateKey } = opts.webPush;
  if (publicKey !== undefined && privateKey !== undefined) {
    const problem = vapidKeysProblem({ publicKey, privateKey });
    if (problem !== undefined) throw new ConfigInvalidError(`TABLEKEEPER_VAPID_PUBLIC_KEY / TABLEKEEPER_VAPID_PRIVATE_KEY: ${problem}`);
    return { publicKey, privateKey };
  }
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
  const problem = vapidKeysProblem({ publicKey: k.publicKey, privateKey: k.privateKey });
  if (problem !== undefined) throw new ConfigInvalidError(`the VAPID key file ${file}: ${problem}; restore it (or delete it and subscribe again)`);
  // The public key only: the private key is never logged.
  if (created) opts.logger.info({ op: 'vapid-keys', file, publicKey: k.publicKey }, 'generated a VAPID key pair for Web Push');
  return { publicKey: k.publicKey, privateKey: k.privateKey };
}
