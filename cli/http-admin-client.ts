/**
 * The admin operations over the service's HTTP API (undici), with the bearer
 * token. Success bodies are the bus reply bodies; error bodies are
 * `{error: {code, message}}` and become `RemoteError`s.
 */
import { Agent, request } from 'undici';
import { BusTimeoutError, RemoteError, STATUS_WIRE } from '../bus';
import type { AdminClient, ClientNotices } from './admin-client';
import { UnreachableError } from './exit-codes';

/** A 429 answer is retried after its `Retry-After`, at most this long each time and this often. */
const MAX_RATE_LIMIT_WAIT_MS = 60_000;
const MAX_RATE_LIMIT_RETRIES = 10;

/** `AdminClient` over `http(s)://host:port/api/admin/...`. */
export class HttpAdminClient implements AdminClient {
  private readonly agent = new Agent({ connect: { timeout: 10_000 } });
  private closed = false;

  constructor(
    readonly where: string,
    private readonly token: string | undefined,
    private readonly notices: ClientNotices,
  ) {}

  health(timeoutMs: number): Promise<unknown> {
    return this.call('GET', '/api/admin/health', undefined, timeoutMs);
  }

  compact(table: string | undefined, force: boolean, timeoutMs: number): Promise<unknown> {
    return this.call('POST', tablePath('/api/admin/compact', table), force ? { force: true } : {}, timeoutMs);
  }

  backup(table: string | undefined, timeoutMs: number): Promise<unknown> {
    return this.call('POST', tablePath('/api/admin/backup', table), {}, timeoutMs);
  }

  restore(table: string, timeoutMs: number): Promise<unknown> {
    return this.call('POST', tablePath('/api/admin/restore', table), {}, timeoutMs);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.close();
  }

  private async call(method: 'GET' | 'POST', path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const { status, text, retryAfterMs } = await this.send(method, path, body, timeoutMs);
      if (status === 429 && attempt < MAX_RATE_LIMIT_RETRIES && retryAfterMs !== undefined && retryAfterMs <= MAX_RATE_LIMIT_WAIT_MS) {
        this.notices.notice(`rate limited by the service; retrying in ${Math.ceil(retryAfterMs / 1000)} s`);
        await new Promise((resolve) => setTimeout(resolve, retryAfterMs));
        continue;
      }
      return parseAnswer(method, this.where + path, status, text);
    }
  }

  private async send(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<{ status: number; text: string; retryAfterMs?: number }> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      const res = await request(this.where + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.agent,
        // One deadline for connect, headers and body; undici's own timers only back it up.
        signal: AbortSignal.timeout(timeoutMs),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const text = await res.body.text();
      return { status: res.statusCode, text, retryAfterMs: retryAfter(res.headers['retry-after']) };
    } catch (err) {
      // AbortSignal.timeout() aborts with a DOMException, which is not an `Error` on Node 20.
      if ((err as { name?: unknown } | null)?.name === 'TimeoutError') {
        throw new BusTimeoutError(`${method} ${this.where}${path}`, timeoutMs, { cause: err });
      }
      const code = (err as { code?: unknown }).code;
      const detail = typeof code === 'string' ? code : (err as Error).message;
      throw new UnreachableError(`cannot reach the service at ${this.where}: ${detail}`, { cause: err });
    }
  }
}

function tablePath(base: string, table: string | undefined): string {
  return table === undefined ? base : `${base}/${encodeURIComponent(table)}`;
}

function retryAfter(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^[0-9]+$/.test(value.trim())) return undefined;
  return Number(value.trim()) * 1000;
}

/** A 2xx JSON body is the answer; anything else becomes a `RemoteError` (or, for non-JSON, `UnreachableError`). */
function parseAnswer(method: string, url: string, status: number, text: string): unknown {
  let parsed: unknown;
  let json = true;
  try {
    parsed = text === '' ? {} : (JSON.parse(text) as unknown);
  } catch {
    json = false;
  }
  if (status >= 200 && status < 300) {
    if (!json) throw new UnreachableError(`${method} ${url} answered ${status} with a body that is not JSON; is this Tablekeeper?`);
    return parsed;
  }
  const error = json ? errorBody(parsed) : undefined;
  // Statuses whose error body is missing or unreadable take their wire code from the one table.
  const wire = error?.code ?? STATUS_WIRE[status] ?? 'internal';
  const message = error?.message ?? `${method} ${url} answered HTTP ${status}`;
  throw new RemoteError(wire, message, status);
}

function errorBody(v: unknown): { code: string; message: string } | undefined {
  if (typeof v !== 'object' || v === null || !('error' in v)) return undefined;
  const e: unknown = v.error;
  if (typeof e !== 'object' || e === null) return undefined;
  const code = 'code' in e && typeof e.code === 'string' ? e.code : undefined;
  const message = 'message' in e && typeof e.message === 'string' ? e.message : undefined;
  return code === undefined ? undefined : { code, message: message ?? code };
}
