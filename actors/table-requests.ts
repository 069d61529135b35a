import type { Logger } from 'pino';
import {
  decodeJson,
  encodeJson,
  errorReply,
  parseKeyRequest,
  PayloadTooLargeError,
  respondJson,
  TABLE_OPERATIONS,
  jsonMemberSpan,
  validateRequest,
  type Message,
} from '../bus';
import {
  SELECT_DEFAULT_MAX_BYTES,
  TableCorruptError,
  TableUnavailableError,
  TablekeeperError,
  UnknownOperationError,
  type TableFile,
} from '../store';

/** Who noticed the damage: a read of the owner, an open, a scrub, a maintenance run, or an operator. */
export type CorruptionSource = 'read' | 'open' | 'scrub' | 'maintenance' | 'operator' | 'owner';

/** What the owner tells its request handler about the table's current state. */
export type ServingMode =
  | { state: 'serving'; file: TableFile }
  | { state: 'opening' | 'recovering' | 'compacting' | 'stopping' | 'stopped' | 'failed' };

/** What the request handler reports back to the owner. */
export type RequestHandlerReport =
  | {
      type: 'CORRUPTION_DETECTED';
      error: TableCorruptError;
      source: CorruptionSource;
      /** Set for a `tables.<t>.corruption` request: answered once the table is recovered. */
      reply?: (body: unknown) => void;
    }
  | { type: 'COMPACT_REQUESTED'; force: boolean; reply: (body: unknown) => void }
  | { type: 'FILE_FAILED'; error: TablekeeperError };

const TABLE_OPERATION_SET: ReadonlySet<string> = new Set(TABLE_OPERATIONS);

const OK_PUT = Buffer.from('{"ok":true}');
const FOUND_PREFIX = Buffer.from('{"found":true,"value":');
const NOT_FOUND = Buffer.from('{"found":false}');
const DELETED = Buffer.from('{"deleted":true}');
const NOT_DELETED = Buffer.from('{"deleted":false}');
const CLOSE_BRACE = 0x7d;

/**
 * The largest reply that returns one stored value, beyond the value itself:
 * a one-item select, `{"items":[{"key":K,"value":V}],"next":K}` (37 bytes
 * of framing, the key twice); a get reply (23 bytes) is smaller.
 */
function returnOverhead(jsonKeyBytes: number): number {
  return 37 + 2 * jsonKeyBytes;
}

/** `{"found":true,"value":<value>}` in one buffer (the bus copies it once more on reply). */
function foundReply(value: Uint8Array): Buffer {
  const head = FOUND_PREFIX.length;
  const out = Buffer.allocUnsafe(head + value.length + 1);
  out.set(FOUND_PREFIX, 0);
  out.set(value, head);
  out[head + value.length] = CLOSE_BRACE;
  return out;
}

/**
 * What a put stores: the value's JSON text exactly as the client wrote it
 * (a view of the request body; the table copies it), so that nothing is
 * lost to a parse and a stringify (digits of large integers, `1.0`).
 * `data` has been parsed and validated as a put body.
 */
function storedValue(data: Uint8Array, value: unknown): Buffer {
  const span = jsonMemberSpan(data, 'value');
  // Always found in a body that validated; the stringify is only a safety net.
  if (span === undefined) return Buffer.from(JSON.stringify(value));
  return Buffer.from(data.buffer, data.byteOffset + span[0], span[1] - span[0]);
}

/**
 * Answers `tables.<t>.<op>` requests against one table file. Values are stored
 * as their JSON text, so replies are assembled from stored bytes without a
 * parse/stringify round trip.
 */
export class TableRequests {
  private mode: ServingMode = { state: 'opening' };
  // Requests per operation, and error replies per wire code, since the owner
  // started: plain counters (no cost on the request path worth measuring),
  // read by `stats` and from there by the metrics.
  private readonly requestCounts: Record<string, number> = {};
  private readonly errorCounts: Record<string, number> = {};

  constructor(
    private readonly table: string,
    /** Bound to the table (its lines carry the `table` field already). */
    private readonly log: Logger,
    private readonly report: (r: RequestHandlerReport) => void,
    /** The bus's current message limit (NATS `max_payload`); undefined for none. */
    private readonly maxPayload: () => number | undefined = () => undefined,
  ) {}

  /** Switches what incoming requests see; called by the owner on every state change. */
  setMode(mode: ServingMode): void {
    this.mode = mode;
  }

  /**
   * Handles one request whose operation is `op`. Always answers (when the
   * message has a reply subject): a result, or `{error: {code, message}}`.
   * Writes return a promise that settles once the reply is sent.
   */
  handle(op: string, msg: Message): void | Promise<void> {
    const counted = TABLE_OPERATION_SET.has(op) ? op : 'unknown';
    this.requestCounts[counted] = (this.requestCounts[counted] ?? 0) + 1;
    if (op === 'compact') {
      // Compaction is the supervisor's to schedule and serialise with the
      // table's other maintenance; it answers through `reply`.
      try {
        const { force } = validateRequest('compact', decodeJson(msg.data)) as { force?: boolean };
        this.report({ type: 'COMPACT_REQUESTED', force: force === true, reply: (body) => void msg.respond(encodeJson(body)) });
      } catch (err) {
        this.fail(msg, err);
      }
      return;
    }
    if (op === 'corruption') {
      // Accepted in every state: a table already recovering adds the caller
      // to the run in progress; the reply (for a request) comes after it.
      try {
        const body = validateRequest('corruption', decodeJson(msg.data)) as { reason: string; offset?: number; source?: 'operator' | 'scrub' | 'owner' };
        const error = new TableCorruptError(this.table, body.offset ?? 0, body.reason, { details: { reported: true } });
        const source = body.source ?? 'operator';
        this.log.warn({ op, source, reason: body.reason, offset: body.offset }, 'corruption reported');
        // The outcome may be `{error}` (a failed recovery, the service
        // stopping): respondJson sends that with the error headers.
        this.report({ type: 'CORRUPTION_DETECTED', error, source, reply: msg.reply ? (reply) => void respondJson(msg, reply) : undefined });
      } catch (err) {
        this.fail(msg, err);
      }
      return;
    }
    const mode = this.mode;
    if (mode.state !== 'serving') {
      // A request that could never succeed says so, whatever the table's state.
      if (!TABLE_OPERATION_SET.has(op)) return this.fail(msg, new UnknownOperationError(op));
      return this.fail(msg, new TableUnavailableError(this.table, mode.state));
    }
    const file = mode.file;
    try {
      switch (op) {
        case 'get': {
          // peek: the table's own bytes, copied into the reply at once.
          const value = file.peek(parseKeyRequest('get', msg.data));
          msg.respond(value === undefined ? NOT_FOUND : foundReply(value));
          return;
        }
        case 'put': {
          const body = validateRequest('put', decodeJson(msg.data)) as { key: string; value: unknown };
          const bytes = storedValue(msg.data, body.value);
          const max = this.maxPayload();
          // A value the bus could never carry back is refused now, not at the
          // first get. A key's JSON text is at most 2 + 6 bytes per UTF-16 unit,
          // so the exact size is only worked out near the limit.
          if (max !== undefined && bytes.length + returnOverhead(2 + 6 * body.key.length) > max) {
            const reply = bytes.length + returnOverhead(Buffer.byteLength(JSON.stringify(body.key)));
            if (reply > max) throw new PayloadTooLargeError(reply, max, 'a reply carrying this value');
          }
          return file.put(body.key, bytes).then(
            () => void msg.respond(OK_PUT),
            (err: unknown) => this.failOp(msg, 'put', err),
          );
        }
        case 'delete': {
          return file.delete(parseKeyRequest('delete', msg.data)).then(
            (deleted) => void msg.respond(deleted ? DELETED : NOT_DELETED),
            (err: unknown) => this.failOp(msg, 'delete', err),
          );
        }
        case 'select': {
          const q = validateRequest('select', decodeJson(msg.data)) as {
            prefix?: string;
            after?: string;
            limit?: number;
          };
          // A page is bounded in bytes as well as in items (a limit of 1000
          // values of 1 MiB each was read, copied and encoded in one go, holding
          // the event loop for seconds), and over NATS by what a reply can carry.
          const max = this.maxPayload();
          const page = file.select(max === undefined ? q : { ...q, maxBytes: Math.min(max, SELECT_DEFAULT_MAX_BYTES) });
          const { items } = page;
          const keys = items.map((item) => JSON.stringify(item.key));
          let count = items.length;
          let next = page.next;
          if (max !== undefined && count > 1) {
            // The store counted keys and values only: drop trailing items until
            // the framing fits too, so a page of large values comes back shorter
            // (with `next`) rather than refused. A single item that does not fit
            // is refused as VALUE_TOO_LARGE below, as before.
            // `{"key":K,"value":V}` plus the comma before it; `{"items":[` and
            // `]}`, or `],"next":K}`.
            const itemBytes = items.map((item, i) => 18 + Buffer.byteLength(keys[i]) + item.value.length);
            let total = 10 - 1 + itemBytes.reduce((a, b) => a + b, 0);
            const tail = (key: string | undefined) => (key === undefined ? 2 : 10 + Buffer.byteLength(JSON.stringify(key)));
            while (count > 1 && total + tail(next) > max) {
              count--;
              total -= itemBytes[count];
              next = items[count - 1].key;
            }
          }
          let out = '{"items":[';
          for (let i = 0; i < count; i++) out += `${i === 0 ? '' : ','}{"key":${keys[i]},"value":${items[i].value.toString('utf8')}}`;
          out += next === undefined ? ']}' : `],"next":${JSON.stringify(next)}}`;
          msg.respond(Buffer.from(out));
          return;
        }
        case 'stats': {
          validateRequest('stats', decodeJson(msg.data));
          const s = file.stats();
          msg.respond(
            Buffer.from(
              JSON.stringify({
                table: this.table,
                state: 'serving',
                records: s.records,
                fileBytes: s.fileBytes,
                liveBytes: s.liveBytes,
                deadBytes: s.deadBytes,
                fragmentation: s.fragmentation,
                generation: s.generation,
                readCache: s.readCache,
                requests: this.requestCounts,
                errors: this.errorCounts,
              }),
            ),
          );
          return;
        }
        default:
          return this.fail(msg, new UnknownOperationError(op));
      }
    } catch (err) {
      return this.failOp(msg, op, err);
    }
  }

  /** Replies with the structured error for `err`, and counts it by its wire code. */
  private fail(msg: Message, err: unknown): void {
    const { body, headers } = errorReply(err);
    const code = body.error.code;
    this.errorCounts[code] = (this.errorCounts[code] ?? 0) + 1;
    msg.respond(encodeJson(body), { headers });
  }

  private failOp(msg: Message, op: string, err: unknown): void {
    if (err instanceof TableCorruptError) {
      // Never a wrong value and never silence: the caller may retry once the
      // table has been recovered; the owner leaves the serving state.
      this.log.error({ op, offset: err.offset, reason: err.reason }, 'corruption detected');
      this.report({ type: 'CORRUPTION_DETECTED', error: err, source: 'read' });
      return this.fail(msg, new TableUnavailableError(this.table, 'recovering', { cause: err }));
    }
    if (err instanceof TablekeeperError && err.code === 'IO_ERROR') {
      this.log.error({ op, err }, 'table write failed');
      if (this.mode.state === 'serving' && this.mode.file.failed) this.report({ type: 'FILE_FAILED', error: err });
    } else if (err instanceof PayloadTooLargeError && op !== 'put') {
      // A stored value (or a page of them) is larger than the bus can carry.
      this.log.warn({ op, err }, 'reply too large for the bus');
    } else if (!(err instanceof TablekeeperError)) {
      this.log.error({ op, err }, 'request failed unexpectedly');
    }
    return this.fail(msg, err);
  }
}


