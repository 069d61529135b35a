import Ajv, { type ErrorObject } from 'ajv';
import { Cron } from 'croner';
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { ConfigInvalidError, DEFAULT_MAX_VALUE_BYTES, DEFAULT_READ_CACHE_BYTES } from '../store';

/** Durability policy of one table, as written in the config file. */
export type SyncSetting = 'always' | 'none' | { intervalMs: number };

/** A schedule: a fixed interval (`"90s"`, `"6h"`, `"1d"`) or a cron expression. */
export type ScheduleSetting = { every: string } | { cron: string };

/** One configured table. */
export interface TableConfig {
  name: string;
  sync: SyncSetting;
  maxValueBytes: number;
  /** Bytes of values the table keeps in memory for reads; 0 turns the cache off (loadConfig sets the default, 8 MiB). */
  readCacheBytes?: number;
}

/** The whole, validated configuration with every default filled in. */
export interface Config {
  dataDir: string;
  backupDir: string;
  subjectPrefix: string;
  logLevel: string;
  /**
   * The data directory's lock (see data-dir-lock.ts) counts as abandoned once
   * untouched this long; its owner touches it every sixth of this.
   */
  lockStaleMs: number;
  http: HttpConfig;
  nats: { url?: string; user?: string; pass?: string; token?: string; credsFile?: string; nkeyFile?: string };
  tables: TableConfig[];
  backup: ScheduleSetting & { keep: number };
  compaction: ScheduleSetting & { threshold: number };
  scrub: ScheduleSetting;
  supervisor: { maxRestarts: number; restartWindowMs: number; requestTimeoutMs: number };
  notify: NotifyConfig;
}

/** Events the notifier can push; `recovery_complete` only when its trigger is `auto`. */
export const NOTIFY_EVENTS = ['backup_failed', 'compaction_failed', 'corruption_detected', 'recovery_complete', 'recovery_failed'] as const;

/** One of `NOTIFY_EVENTS`. */
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

/**
 * Push notifications. `corruption_detected` is off by default: a recovery
 * always follows it and is notified on its own (`recovery_complete` or
 * `recovery_failed`), so the default sends one alert per incident.
 */
export interface NotifyConfig {
  events: NotifyEvent[];
  webhooks: { url: string; secret?: string }[];
  /** Per-attempt timeout, attempts per notification, and the queue bound, for every channel. */
  timeoutMs: number;
  maxAttempts: number;
  queueSize: number;
  /** Web Push; keys from the environment, else generated once into `<dataDir>/.tablekeeper/vapid-keys.json`. */
  webPush: { enabled: boolean; subject: string; publicKey?: string; privateKey?: string };
}

/**
 * The HTTP listener. Tokens come only from the environment: `adminToken`
 * (unset means generated once and kept in `<dataDir>/.tablekeeper/admin-token`)
 * and the optional read-only `readToken`.
 */
export interface HttpConfig {
  host: string;
  port: number;
  adminToken?: string;
  readToken?: string;
  /** Largest request body; default the largest table `maxValueBytes` plus 64 KiB. */
  bodyLimitBytes: number;
  /** Per-client token bucket on admin mutations (compact, backup, restore). */
  rateLimit: { burst: number; perMinute: number };
  /** Open `/api/events` streams the server holds at most, from all clients together; default 256. */
  maxEventStreams: number;
}

/** The nine tables of the predecessor system, declared by default. */
export const DEFAULT_TABLES = [
  'task_queue',
  'task_dead_letter',
  'agent_mailbox',
  'message_history',
  'agent_channels',
  'channel_history',
  'agentcom_config',
  'thread_messages',
  'thread_replies',
] as const;

/** Table names are safe as file names and as single subject tokens. */
export const TABLE_NAME_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

const DURATION_PATTERN = '^[0-9]+(ms|s|m|h|d)$';
const BODY_LIMIT_SLACK = 64 * 1024;
/**
 * Event streams the HTTP server holds at once, from every client together.
 * The limit of 8 per client address alone bounded nothing: from 1,200
 * loopback addresses one host held 9,600 streams (18,000 descriptors of its
 * 20,000), each with a bus subscription and up to ~2 MiB waiting for a
 * client that stopped reading.
 */
export const DEFAULT_MAX_EVENT_STREAMS = 256;

const scheduleSchema = {
  oneOf: [
    { type: 'object', required: ['every'], properties: { every: { type: 'string', pattern: DURATION_PATTERN } } },
    { type: 'object', required: ['cron'], properties: { cron: { type: 'string', minLength: 1 } } },
  ],
};

const syncSchema = {
  oneOf: [
    { enum: ['always', 'none'] },
    {
      type: 'object',
      additionalProperties: false,
      required: ['intervalMs'],
      properties: { intervalMs: { type: 'integer', minimum: 1, maximum: 3_600_000 } },
    },
  ],
};

/** JSON schema of the config file; unknown keys are errors. */
export const CONFIG_FILE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    dataDir: { type: 'string', minLength: 1 },
    backupDir: { type: 'string', minLength: 1 },
    subjectPrefix: { type: 'string', pattern: '^([A-Za-z0-9_-]+)(\\.[A-Za-z0-9_-]+)*$' },
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    lockStale: { type: 'string', minLength: 1 },
    http: {
      type: 'object',
      additionalProperties: false,
      properties: {
        host: { type: 'string', minLength: 1 },
        port: { type: 'integer', minimum: 0, maximum: 65535 },
        bodyLimitBytes: { type: 'integer', minimum: 1024, maximum: 128 * 1024 * 1024 },
        rateLimit: {
          type: 'object',
          additionalProperties: false,
          properties: {
            burst: { type: 'integer', minimum: 1, maximum: 10_000 },
            perMinute: { type: 'integer', minimum: 1, maximum: 600_000 },
          },
        },
        maxEventStreams: { type: 'integer', minimum: 1, maximum: 100_000 },
      },
    },
    nats: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: 'string', minLength: 1 },
        user: { type: 'string' },
        pass: { type: 'string' },
        token: { type: 'string' },
        credsFile: { type: 'string' },
        nkeyFile: { type: 'string' },
      },
    },
    tables: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: { type: 'string', pattern: TABLE_NAME_PATTERN },
          sync: syncSchema,
          maxValueBytes: { type: 'integer', minimum: 1, maximum: 64 * 1024 * 1024 },
          readCacheBytes: { type: 'integer', minimum: 0, maximum: 64 * 1024 * 1024 * 1024 },
        },
      },
    },
    backup: {
      type: 'object',
      additionalProperties: false,
      properties: { every: { type: 'string' }, cron: { type: 'string' }, keep: { type: 'integer', minimum: 1, maximum: 1000 } },
      allOf: [{ not: { required: ['every', 'cron'] } }],
    },
    compaction: {
      type: 'object',
      additionalProperties: false,
      properties: { every: { type: 'string' }, cron: { type: 'string' }, threshold: { type: 'number', minimum: 0, maximum: 1 } },
      allOf: [{ not: { required: ['every', 'cron'] } }],
    },
    scrub: {
      type: 'object',
      additionalProperties: false,
      properties: { every: { type: 'string' }, cron: { type: 'string' } },
      allOf: [{ not: { required: ['every', 'cron'] } }],
    },
    supervisor: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxRestarts: { type: 'integer', minimum: 0, maximum: 1000 },
        restartWindowMs: { type: 'integer', minimum: 1 },
        requestTimeoutMs: { type: 'integer', minimum: 1 },
      },
    },
    notify: {
      type: 'object',
      additionalProperties: false,
      properties: {
        webhooks: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['url'],
            properties: { url: { type: 'string', minLength: 1 }, secret: { type: 'string', minLength: 1 } },
          },
        },
        events: { type: 'array', uniqueItems: true, items: { enum: NOTIFY_EVENTS } },
        timeoutMs: { type: 'integer', minimum: 1, maximum: 600_000 },
        maxAttempts: { type: 'integer', minimum: 1, maximum: 100 },
        queueSize: { type: 'integer', minimum: 1, maximum: 100_000 },
        webPush: {
          type: 'object',
          additionalProperties: false,
          properties: { enabled: { type: 'boolean' }, subject: { type: 'string', minLength: 1 } },
        },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const validateFile = ajv.compile(CONFIG_FILE_SCHEMA);
const validateSchedule = ajv.compile(scheduleSchema);

/** Throws ConfigInvalidError unless `expr` is a cron expression croner accepts. */
export function validateCron(name: string, expr: string): void {
  try {
    new Cron(expr, { paused: true });
  } catch (err) {
    throw new ConfigInvalidError(`${name}.cron: '${expr}' is not a cron expression (${(err as Error).message})`);
  }
}

/** Parses `"250ms"`, `"30s"`, `"5m"`, `"6h"`, `"1d"` into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^([0-9]+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw new ConfigInvalidError(`'${text}' is not a duration (use e.g. 250ms, 30s, 5m, 6h, 1d)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Number(m[1]) * unit;
  if (ms <= 0) throw new ConfigInvalidError(`'${text}' must be longer than zero`);
  return ms;
}

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .map((e) => {
      const where = e.instancePath === '' ? '(top level)' : e.instancePath;
      if (e.keyword === 'additionalProperties') {
        return `${where}: unknown key '${String(e.params.additionalProperty)}'`;
      }
      return `${where}: ${e.message ?? 'is invalid'}`;
    })
    .join('; ');
}

/** Where configuration comes from; injected so tests need no real environment. */
export interface ConfigSources {
  env: Record<string, string | undefined>;
  readFile?: (file: string) => string;
  cwd?: string;
}

/** How deploy/env.example's placeholder secrets begin. */
const PLACEHOLDER_SECRET = 'change-me';

function envInt(env: Record<string, string | undefined>, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!/^[0-9]+$/.test(raw)) throw new ConfigInvalidError(`${name} must be a whole number, got '${raw}'`);
  return Number(raw);
}

/**
 * Builds the configuration: environment variables over the JSON file named by
 * `TABLEKEEPER_CONFIG` over defaults. Throws ConfigInvalidError naming every
 * problem it finds.
 */
export function loadConfig(sources: ConfigSources): Config {
  const { env } = sources;
  const cwd = sources.cwd ?? process.cwd();
  const readFile = sources.readFile ?? ((f: string) => readFileSync(f, 'utf8'));

  let file: Record<string, any> = {};
  const configPath = env.TABLEKEEPER_CONFIG;
  if (configPath) {
    let text: string;
    try {
      text = readFile(configPath);
    } catch (err) {
      throw new ConfigInvalidError(`cannot read config file ${configPath}: ${(err as Error).message}`, { cause: err });
    }
    try {
      file = JSON.parse(text);
    } catch (err) {
      throw new ConfigInvalidError(`config file ${configPath} is not valid JSON: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!validateFile(file)) {
      throw new ConfigInvalidError(`config file ${configPath} is invalid: ${describe(validateFile.errors)}`);
    }
  }

  for (const key of ['backup', 'compaction', 'scrub'] as const) {
    const s = file[key];
    if (s && (s.every !== undefined || s.cron !== undefined)) {
      const { every, cron } = s;
      if (!validateSchedule(every !== undefined ? { every } : { cron })) {
        throw new ConfigInvalidError(
          `${key}: give either every ("<n>ms|s|m|h|d") or cron ("<expression>"), got ${JSON.stringify(s)}`,
        );
      }
      if (every !== undefined) parseDuration(every);
      else validateCron(key, cron);
    }
  }

  const tablesIn: { name: string; sync?: SyncSetting; maxValueBytes?: number; readCacheBytes?: number }[] =
    file.tables ?? DEFAULT_TABLES.map((name) => ({ name }));
  const seen = new Set<string>();
  for (const t of tablesIn) {
    if (seen.has(t.name)) throw new ConfigInvalidError(`tables: '${t.name}' is declared twice`);
    seen.add(t.name);
  }

  const dataDir = path.resolve(cwd, env.TABLEKEEPER_DATA_DIR || file.dataDir || './data');
  const backupDir = path.resolve(cwd, env.TABLEKEEPER_BACKUP_DIR || file.backupDir || path.join(dataDir, 'backups'));
  const logLevel = env.TABLEKEEPER_LOG_LEVEL || file.logLevel || 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigInvalidError(`TABLEKEEPER_LOG_LEVEL: unknown level '${logLevel}'`);
  }
  const lockStale = env.TABLEKEEPER_LOCK_STALE || file.lockStale || '60s';
  // Errors name where the value came from.
  const lockStaleFrom = env.TABLEKEEPER_LOCK_STALE ? 'TABLEKEEPER_LOCK_STALE' : 'lockStale';
  let lockStaleMs: number;
  try {
    lockStaleMs = parseDuration(lockStale);
  } catch (err) {
    throw new ConfigInvalidError(`${lockStaleFrom}: ${(err as Error).message}`);
  }
  if (lockStaleMs < 600) throw new ConfigInvalidError(`${lockStaleFrom}: '${lockStale}' is too short (at least 600ms)`);
  const port = envInt(env, 'TABLEKEEPER_HTTP_PORT') ?? file.http?.port ?? 8080;
  if (port > 65535) throw new ConfigInvalidError(`TABLEKEEPER_HTTP_PORT: ${port} is not a port`);
  // Empty counts as unset, as for every other variable (an env file's `NAME=` placeholder must not override the file).
  const prefix = env.TABLEKEEPER_SUBJECT_PREFIX || file.subjectPrefix || '';
  if (prefix !== '' && !/^([A-Za-z0-9_-]+)(\.[A-Za-z0-9_-]+)*$/.test(prefix)) {
    throw new ConfigInvalidError(`TABLEKEEPER_SUBJECT_PREFIX: '${prefix}' is not a subject prefix`);
  }

  // deploy/env.example's placeholders, copied and never replaced, would be secrets anyone can read.
  for (const name of ['TABLEKEEPER_ADMIN_TOKEN', 'TABLEKEEPER_READ_TOKEN', 'NATS_PASS', 'NATS_TOKEN']) {
    if (env[name]?.startsWith(PLACEHOLDER_SECRET) === true) {
      throw new ConfigInvalidError(`${name}: still the placeholder of deploy/env.example; set a secret of your own (e.g. \`openssl rand -hex 24\`)`);
    }
  }

  const nats = {
    url: env.NATS_URL || file.nats?.url,
    user: env.NATS_USER || file.nats?.user,
    pass: env.NATS_PASS || file.nats?.pass,
    token: env.NATS_TOKEN || file.nats?.token,
    credsFile: env.NATS_CREDS || file.nats?.credsFile,
    nkeyFile: env.NATS_NKEY || file.nats?.nkeyFile,
  };

  const schedule = (s: Record<string, any> | undefined, every: string): ScheduleSetting =>
    s?.cron !== undefined ? { cron: s.cron } : { every: s?.every ?? every };

  const tables = tablesIn.map((t) => ({
    name: t.name,
    sync: t.sync ?? 'always',
    maxValueBytes: t.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES,
    readCacheBytes: t.readCacheBytes ?? DEFAULT_READ_CACHE_BYTES,
  }));

  return {
    dataDir,
    backupDir,
    subjectPrefix: prefix,
    logLevel,
    lockStaleMs,
    http: {
      host: env.TABLEKEEPER_HTTP_HOST || file.http?.host || '127.0.0.1',
      port,
      adminToken: env.TABLEKEEPER_ADMIN_TOKEN || undefined,
      readToken: env.TABLEKEEPER_READ_TOKEN || undefined,
      // Room for the largest value plus JSON framing; the owner enforces the exact limit.
      bodyLimitBytes: file.http?.bodyLimitBytes ?? Math.max(...tables.map((t) => t.maxValueBytes)) + BODY_LIMIT_SLACK,
      rateLimit: { burst: file.http?.rateLimit?.burst ?? 20, perMinute: file.http?.rateLimit?.perMinute ?? 60 },
      maxEventStreams: file.http?.maxEventStreams ?? DEFAULT_MAX_EVENT_STREAMS,
    },
    nats: Object.fromEntries(Object.entries(nats).filter(([, v]) => v !== undefined && v !== '')) as Config['nats'],
    tables,
    backup: { ...schedule(file.backup, '24h'), keep: file.backup?.keep ?? 3 },
    compaction: { ...schedule(file.compaction, '6h'), threshold: file.compaction?.threshold ?? 0.1 },
    scrub: schedule(file.scrub, '1h'),
    supervisor: {
      maxRestarts: file.supervisor?.maxRestarts ?? 5,
      restartWindowMs: file.supervisor?.restartWindowMs ?? 60_000,
      requestTimeoutMs: file.supervisor?.requestTimeoutMs ?? 5_000,
    },
    notify: notifyConfig(env, file.notify),
  };
}

/** A webhook URL must be an absolute http(s) URL; anything else is a config error naming the entry. */
export function validateWebhookUrl(where: string, url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // The URL itself is not repeated: it may carry credentials.
    throw new ConfigInvalidError(`${where}: is not a URL (give e.g. https://example.test/hook)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ConfigInvalidError(`${where}: must be an http:// or https:// URL, not ${parsed.protocol}`);
  }
}

/** VAPID subjects are a mailto: or https: URL (RFC 8292 section 2.1). */
function validateVapidSubject(where: string, subject: string): void {
  if (!/^(mailto:\S+@\S+|https:\/\/\S+)$/.test(subject)) {
    throw new ConfigInvalidError(`${where}: '${subject}' must be a mailto: address or an https:// URL`);
  }
}

function notifyConfig(env: Record<string, string | undefined>, n: Record<string, any> | undefined): NotifyConfig {
  const webhooks: { url: string; secret?: string }[] = n?.webhooks ?? [];
  webhooks.forEach((w, i) => validateWebhookUrl(`notify.webhooks[${i}].url`, w.url));
  const subject = env.TABLEKEEPER_VAPID_SUBJECT || n?.webPush?.subject || 'mailto:tablekeeper@localhost';
  validateVapidSubject(env.TABLEKEEPER_VAPID_SUBJECT ? 'TABLEKEEPER_VAPID_SUBJECT' : 'notify.webPush.subject', subject);
  const publicKey = env.TABLEKEEPER_VAPID_PUBLIC_KEY || undefined;
  const privateKey = env.TABLEKEEPER_VAPID_PRIVATE_KEY || undefined;
  if ((publicKey === undefined) !== (privateKey === undefined)) {
    throw new ConfigInvalidError('TABLEKEEPER_VAPID_PUBLIC_KEY and TABLEKEEPER_VAPID_PRIVATE_KEY must be set together');
  }
  return {
    events: n?.events ?? ['backup_failed', 'compaction_failed', 'recovery_complete', 'recovery_failed'],
    webhooks,
    timeoutMs: n?.timeoutMs ?? 5000,
    maxAttempts: n?.maxAttempts ?? 5,
    queueSize: n?.queueSize ?? 1000,
    webPush: { enabled: n?.webPush?.enabled ?? true, subject, publicKey, privateKey },
  };
}
