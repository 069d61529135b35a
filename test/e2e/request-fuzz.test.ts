/**
 * Seeded random requests against a running service, over the embedded bus
 * and over NATS (a real nats-server the test starts): valid
 * bodies, bodies mutated byte by byte, truncated, of the wrong shape, with
 * odd keys and values, on every subject the service answers and on made-up
 * ones. Every request must get a reply that is valid UTF-8 JSON: either the
 * operation's reply (its schema checked) or `{error: {code, message}}` with
 * the micro-service error headers. The table must then hold exactly what the
 * accepted puts and deletes left, byte for byte, before and after a restart.
 */
import pino from 'pino';
import { checkErrorReply, checkReply, jsonMemberSpan, NatsBus, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER, type Bus, type Operation } from '../../bus';
import { startService, type RunningService } from '../../cli';
import { loadConfig, type Config } from '../../supervisor';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { ADMIN_TOKEN, testConfig } from '../http/http-helpers';
import { SeededRandom } from '../helpers/rng';
import { useTempDir } from '../helpers/store-temp';

const tmp = useTempDir('tk-fuzz-');
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 2500);
const KEYS = ['a', 'b', 'k1', 'ключ', '🔑', 'x'.repeat(1024), 'é'.repeat(512)];
const TABLE_OPS = ['get', 'put', 'delete', 'select', 'stats', 'compact'] as const;

/** A JSON text of any kind, some of it unusual: big integers, exponents, escapes, deep nesting. */
function jsonText(r: SeededRandom, depth = 0): string {
  const atoms = ['null', 'true', 'false', '0', '-0', '1.0', '1e2', '12345678901234567890', '-1.5E-7', '1e400', '"x"', '""', '"\\u0000"', '"\\ud83d\\udd11"', '"\\ud800"', '"tab\\there"', '"é€🔑"'];
  const kind = depth > 3 ? 0 : r.int(6);
  if (kind === 0 || kind === 1) return r.pick(atoms);
  if (kind === 2) return `"${'v'.repeat(r.int(300))}"`;
  if (kind === 3) return `[${Array.from({ length: r.int(4) }, () => jsonText(r, depth + 1)).join(',')}]`;
  if (kind === 4) return `{${Array.from({ length: r.int(4) }, (_, i) => `"m${i}": ${jsonText(r, depth + 1)}`).join(', ')}}`;
  // Deep nesting: parsers that recurse can overflow their stack on it.
  const n = 1 + r.int(5000);
  return `${'['.repeat(n)}${']'.repeat(n)}`;
}

function keyText(r: SeededRandom): string {
  if (r.chance(0.85)) return JSON.stringify(r.pick(KEYS));
  return r.pick(['""', '42', 'null', '["a"]', '{"k":1}', JSON.stringify('x'.repeat(1025)), JSON.stringify('€'.repeat(342)), '"\\ud800"', '"a\\u0000b"', '"a.b"', '"*"', '">"']);
}

/** A body for `op`: mostly well formed, often not. */
function body(r: SeededRandom, op: string): Buffer {
  let text: string;
  switch (op) {
    case 'get':
    case 'delete':
      text = `{"key":${keyText(r)}}`;
      break;
    case 'put':
      text = r.chance(0.1) ? `{"key":${keyText(r)},"key":${keyText(r)},"value":${jsonText(r)}}` : `{"key":${keyText(r)}, "value": ${jsonText(r)}}`;
      break;
    case 'select':
      text = JSON.stringify({ ...(r.chance(0.5) ? { prefix: r.pick(['', 'k', 'x', 'é']) } : {}), ...(r.chance(0.3) ? { after: r.pick(KEYS) } : {}), ...(r.chance(0.5) ? { limit: r.pick([1, 2, 1000, 0, 1001, 2.5, -1]) } : {}) });
      break;
    case 'compact':
      text = r.pick(['{}', '{"force":true}', '{"force":"yes"}']);
      break;
    case 'history':
      text = r.pick(['{}', '{"limit":5}', '{"limit":0}', '{"limit":"5"}']);
      break;
    default:
      text = r.pick(['{}', '{"x":1}', '[]', 'null']);
  }
  let bytes = Buffer.from(text);
  const mutation = r.int(12);
  if (mutation === 0 && bytes.length > 0) bytes = bytes.subarray(0, r.int(bytes.length)); // truncated
  else if (mutation === 1 && bytes.length > 0) bytes[r.int(bytes.length)] = r.int(256); // one byte changed
  else if (mutation === 2) bytes = Buffer.concat([bytes.subarray(0, r.int(bytes.length + 1)), Buffer.from([r.pick([0x00, 0x22, 0x5c, 0x7b, 0x7d, 0xc3, 0xff, 0x80])]), bytes.subarray(r.int(bytes.length + 1))]);
  else if (mutation === 3) bytes = Buffer.from(r.pick(['', ' ', 'null', '[]', '"str"', '42', '\ufeff{}', '{"key":"a"} trailing']));
  else if (mutation === 4) bytes = Buffer.from(Array.from({ length: r.int(64) }, () => r.int(256)));
  else if (mutation === 5) bytes = Buffer.from(` \n${bytes.toString('latin1')}\t `, 'latin1');
  return bytes;
}

function subject(r: SeededRandom): { subject: string; op?: Operation } {
  const which = r.int(20);
  if (which < 14) {
    const op = r.pick(TABLE_OPS);
    return { subject: `tables.fz.${op}`, op };
  }
  if (which === 14) return { subject: `tables.${r.pick(['nosuch', 'fz', 'other'])}.${r.pick(['frobnicate', 'GET', 'get.extra', 'put.x.y'])}` };
  if (which === 15) return { subject: `tables.nosuch.${r.pick(TABLE_OPS)}` };
  if (which === 16) return { subject: 'admin.health', op: 'admin.health' };
  if (which === 17) return { subject: 'admin.history', op: 'admin.history' };
  if (which === 18) return { subject: r.pick(['admin.compact.fz', 'admin.backup.fz', 'admin.clear.fz']), op: undefined };
  return { subject: `admin.${r.pick(['frobnicate', 'backup.nosuch', 'restore.nosuch', 'compact.nosuch.extra'])}` };
}

/** The exact text of the `value` member of a JSON object (a put body, a get reply). */
function valueText(data: Uint8Array): string {
  const span = jsonMemberSpan(data, 'value');
  if (span === undefined) throw new Error(`no value in ${Buffer.from(data).toString()}`);
  return Buffer.from(data).toString('utf8', span[0], span[1]);
}

function config(dir: string, natsUrl: string | undefined): Config {
  const base = loadConfig({ env: { TABLEKEEPER_DATA_DIR: dir, TABLEKEEPER_LOG_LEVEL: 'silent', TABLEKEEPER_HTTP_PORT: '0' } });
  return { ...base, nats: natsUrl === undefined ? {} : { url: natsUrl }, tables: [{ name: 'fz', sync: 'always', maxValueBytes: 64 * 1024 }] };
}

describe.each(['embedded', 'nats'] as const)('request fuzz over the %s bus', (transport) => {
  let nats: NatsServer | undefined;
  let service: RunningService | undefined;
  let client: Bus | undefined;

  beforeAll(async () => {
    if (transport === 'nats') nats = await startNatsServer();
  });
  afterAll(async () => {
    await nats?.stop();
  });
  afterEach(async () => {
    if (nats !== undefined) await client?.close();
    await service?.stop();
    service = client = undefined;
  });

  /** Starts the service on the test's directory; requests go through the service's own bus, or over NATS from a client of their own. */
  async function start(): Promise<Bus> {
    service = await startService(config(tmp.dir, nats?.url), pino({ level: 'silent' }));
    if (nats === undefined) return (client = service.bus);
    client ??= await NatsBus.connect({ servers: nats.url, name: 'fuzz-client', logger: pino({ level: 'silent' }) });
    return client;
  }

  test(`request fuzz - ${REQUESTS} seeded random requests are each answered with a valid reply or a structured error, and the table holds exactly what was accepted`, async () => {
    let bus = await start();
    const r = new SeededRandom(Number(process.env.FUZZ_SEED ?? 20261202));
    // Key -> the exact JSON text of its value, from the puts and deletes that were accepted.
    const model = new Map<string, string>();
    const answered: Record<string, number> = {};
    for (let i = 0; i < REQUESTS; i++) {
      const { subject: s, op } = subject(r);
      const tableOp = s.startsWith('tables.fz.') ? s.slice('tables.fz.'.length) : '';
      const data = body(r, op === undefined ? '' : (op.replace('admin.', '') as string));
      const reply = await bus.request(s, data, { timeoutMs: 20_000 });
      const text = Buffer.from(reply.data);
      const where = `request ${i} ${s} ${JSON.stringify(data.toString('latin1').slice(0, 80))}`;
      expect({ where, utf8: text.equals(Buffer.from(text.toString('utf8'))) }).toEqual({ where, utf8: true });
      let parsed: unknown;
      try {
        parsed = JSON.parse(text.toString('utf8'));
      } catch {
        throw new Error(`${where}: the reply is not JSON: ${text.toString('utf8').slice(0, 200)}`);
      }
      const isError = typeof parsed === 'object' && parsed !== null && 'error' in parsed;
      if (isError) {
        expect({ where, problem: checkErrorReply(parsed) }).toEqual({ where, problem: null });
        expect(reply.headers?.[SERVICE_ERROR_CODE_HEADER]).toMatch(/^\d{3}$/);
        expect(reply.headers?.[SERVICE_ERROR_HEADER]).toBeTruthy();
        const code = (parsed as { error: { code: string } }).error.code;
        answered[code] = (answered[code] ?? 0) + 1;
        continue;
      }
      answered.ok = (answered.ok ?? 0) + 1;
      if (op !== undefined) expect({ where, problem: checkReply(op, parsed) }).toEqual({ where, problem: null });
      // Accepted writes: what the table must hold.
      const keyOf = () => (JSON.parse(data.toString('utf8')) as { key: string }).key;
      if (tableOp === 'put') model.set(keyOf(), valueText(data));
      if (tableOp === 'delete' && (parsed as { deleted: boolean }).deleted) model.delete(keyOf());
    }
    // Every kind of answer came up: the fuzz reached past the schema checks and into the table.
    for (const code of ['ok', 'bad_request', 'not_found']) expect({ code, seen: (answered[code] ?? 0) > 0 }).toEqual({ code, seen: true });

    const contents = async (): Promise<Map<string, string>> => {
      const out = new Map<string, string>();
      const listed = JSON.parse(Buffer.from((await bus.request('tables.fz.select', Buffer.from('{"limit":1000}'))).data).toString()) as { items: { key: string }[] };
      for (const key of new Set([...KEYS, ...model.keys(), ...listed.items.map((item) => item.key)])) {
        const reply = Buffer.from((await bus.request('tables.fz.get', Buffer.from(JSON.stringify({ key })))).data);
        if ((JSON.parse(reply.toString()) as { found: boolean }).found) out.set(key, valueText(reply));
      }
      return out;
    };
    expect(model.size).toBeGreaterThan(0);
    expect(await contents()).toEqual(model);
    // And after a restart, from the file.
    await service!.stop();
    bus = await start();
    expect(await contents()).toEqual(model);
  });
});

describe('request fuzz over HTTP', () => {
  let service: RunningService | undefined;
  afterEach(async () => {
    await service?.stop();
    service = undefined;
  });

  const segments = ['orders', 'events', 'nosuch', '..', '%2F', 'a.b', '*', '>', '%zz', '%', 'x'.repeat(3000), '%F0%9F%94%91', '%C3%28', ''];
  const pathFor = (r: SeededRandom): string => {
    const seg = () => r.pick(segments);
    return r.pick([
      () => `/api/tables/${seg()}/keys/${seg()}`,
      () => `/api/tables/${seg()}/keys?${r.pick(['prefix=a', 'limit=0', 'limit=abc', 'limit=5&limit=6', 'after=%zz', 'prefix=%F0%9F%94%91', ''])}`,
      () => `/api/tables/${seg()}/stats`,
      () => `/api/admin/${r.pick(['health', 'history?limit=x', 'history?limit=3', 'compact', 'backup', 'frobnicate'])}`,
      () => `/api/admin/${r.pick(['compact', 'backup', 'restore', 'clear'])}/${seg()}`,
      () => `/api/push/${r.pick(['key', 'subscribe', 'unsubscribe', 'nope'])}`,
      // Not `events`: that one streams until the client goes away.
      () => `/api/${r.pick(['nosuch', 'tables', 'admin', '%zz', 'openapi.json'])}`,
    ])();
  };

  test('request fuzz - seeded random HTTP requests (methods, paths, encodings, tokens, bodies) each get a structured answer, and the service keeps serving', async () => {
    service = await startService(testConfig(tmp.dir), pino({ level: 'silent' }));
    const app = service.http;
    const r = new SeededRandom(Number(process.env.FUZZ_SEED ?? 20261202));
    const statuses: Record<number, number> = {};
    for (let i = 0; i < REQUESTS / 2; i++) {
      const method = r.pick(['GET', 'PUT', 'DELETE', 'POST', 'PATCH'] as const);
      const url = pathFor(r);
      const headers: Record<string, string> = {};
      const auth = r.int(4);
      if (auth < 2) headers.authorization = `Bearer ${ADMIN_TOKEN}`;
      else if (auth === 2) headers.authorization = r.pick(['Bearer wrong', 'Basic abc', 'Bearer', `bearer ${ADMIN_TOKEN} x`]);
      if (r.chance(0.7)) headers['content-type'] = r.pick(['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']);
      const payload = method === 'GET' || method === 'DELETE' ? undefined : body(r, r.pick(['put', 'compact', '']));
      const res = await app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload }) });
      const where = `request ${i} ${method} ${url.slice(0, 80)} ${JSON.stringify(headers)} ${payload === undefined ? '' : JSON.stringify(payload.toString('latin1').slice(0, 60))}`;
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      expect({ where, json: String(res.headers['content-type']).startsWith('application/json') }).toEqual({ where, json: true });
      let parsed: unknown;
      try {
        parsed = JSON.parse(res.body);
      } catch {
        throw new Error(`${where}: ${res.statusCode} with a body that is not JSON: ${res.body.slice(0, 200)}`);
      }
      if (res.statusCode >= 400) expect({ where, problem: checkErrorReply(parsed) }).toEqual({ where, problem: null });
      else expect({ where, status: res.statusCode }).toEqual({ where, status: 200 });
    }
    // Successes and the usual refusals all came up.
    for (const status of [200, 400, 401, 404]) expect({ status, seen: (statuses[status] ?? 0) > 0 }).toEqual({ status, seen: true });
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    expect((await app.inject({ method: 'PUT', url: '/api/tables/orders/keys/after', headers: auth, payload: '{"still":"serving"}' })).json()).toEqual({ ok: true });
    expect((await app.inject({ method: 'GET', url: '/api/tables/orders/keys/after', headers: auth })).json()).toEqual({ found: true, value: { still: 'serving' } });
  });
});
