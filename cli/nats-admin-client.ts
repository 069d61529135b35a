/**
 * The admin operations over NATS: the same `admin.*` requests the HTTP API
 * forwards, sent with the service's own bus client and credentials
 * (`NATS_USER`/`NATS_PASS`, `NATS_TOKEN`, `NATS_CREDS` or `NATS_NKEY`).
 */
import { createBus, requestJson, Subjects, type Bus } from '../bus';
import type { Config } from '../supervisor';
import type { AdminClient } from './admin-client';
import { AuthError, UnreachableError, UsageError } from './exit-codes';

/** `AdminClient` over a NATS connection. Create with `NatsAdminClient.connect`. */
export class NatsAdminClient implements AdminClient {
  private closed = false;

  private constructor(
    readonly where: string,
    private readonly bus: Bus,
    private readonly subjects: Subjects,
  ) {}

  /** Connects with the credentials of `config.nats` (the URL is `url`) under `config.subjectPrefix`. */
  static async connect(url: string, config: Config): Promise<NatsAdminClient> {
    const { user, pass, token, credsFile, nkeyFile } = config.nats;
    let bus: Bus;
    try {
      bus = await createBus({ natsUrl: url, user, pass, token, credsFile, nkeyFile, name: 'tablekeeper-cli' });
    } catch (err) {
      throw connectError(url, err);
    }
    return new NatsAdminClient(url, bus, new Subjects(config.subjectPrefix));
  }

  health(timeoutMs: number): Promise<unknown> {
    return requestJson(this.bus, this.subjects.admin('health'), {}, { timeoutMs });
  }

  compact(table: string | undefined, force: boolean, timeoutMs: number): Promise<unknown> {
    return requestJson(this.bus, this.subjects.admin('compact', table), force ? { force: true } : {}, { timeoutMs });
  }

  backup(table: string | undefined, timeoutMs: number): Promise<unknown> {
    return requestJson(this.bus, this.subjects.admin('backup', table), {}, { timeoutMs });
  }

  restore(table: string, timeoutMs: number): Promise<unknown> {
    return requestJson(this.bus, this.subjects.admin('restore', table), {}, { timeoutMs });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.bus.close();
  }
}

/** A failed first connect: refused credentials, an unreadable key file, or no server. */
function connectError(url: string, err: unknown): Error {
  const name = err instanceof Error ? err.name : '';
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (name === 'AuthorizationError' || /authorization violation|authentication/i.test(message)) {
    return new AuthError(`the NATS server at ${url} refused the credentials: ${message}`, { cause: err });
  }
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') {
    return new UsageError(`cannot read the NATS credentials file: ${message}`, { cause: err });
  }
  return new UnreachableError(`cannot reach NATS at ${url}: ${message}`, { cause: err });
}
