import {
  decodeJson,
  encodeJson,
  requestJson,
  respondError,
  respondOk,
  SERVICE_ERROR_CODE_HEADER,
  SERVICE_ERROR_HEADER,
} from '../../bus/codec';
import type { Message, PublishOptions } from '../../bus/bus';
import { InProcessBus } from '../../bus/in-process-bus';
import { RemoteError } from '../../bus/errors';
import { BadRequestError, InternalError, TableNotFoundError, TableUnavailableError } from '../../store/errors';

/** A message that records what is sent back. */
function fakeMessage(): Message & { sent: Array<{ data: Uint8Array; opts?: PublishOptions }> } {
  const sent: Array<{ data: Uint8Array; opts?: PublishOptions }> = [];
  return {
    subject: 'tables.t.get',
    data: new Uint8Array(0),
    reply: '_INBOX.test.1',
    sent,
    respond(data: Uint8Array, opts?: PublishOptions) {
      sent.push({ data, opts });
      return true;
    },
  };
}

describe('codec', () => {
  test('codec - JSON round trip, and an empty body decodes as {}', () => {
    const value = { key: 'k', value: { n: 1, s: 'é✓', a: [null, true] } };
    expect(decodeJson(encodeJson(value))).toEqual(value);
    expect(decodeJson(new Uint8Array(0))).toEqual({});
    expect(encodeJson(undefined)).toHaveLength(0);
    expect(decodeJson(encodeJson(null))).toBeNull();
  });

  test.each([
    ['broken JSON', new TextEncoder().encode('{"key":')],
    ['plain text', new TextEncoder().encode('hello')],
    ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
  ])('codec - %s is a BadRequestError "body is not valid JSON"', (_name, bytes) => {
    let caught: unknown;
    try {
      decodeJson(bytes);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BadRequestError);
    expect((caught as BadRequestError).message).toBe('body is not valid JSON');
    expect((caught as BadRequestError).code).toBe('BAD_REQUEST');
  });

  test('codec - respondOk sends the JSON body without error headers', () => {
    const msg = fakeMessage();
    expect(respondOk(msg, { found: false })).toBe(true);
    expect(decodeJson(msg.sent[0].data)).toEqual({ found: false });
    expect(msg.sent[0].opts?.headers).toBeUndefined();
  });

  test('codec - bad JSON becomes a bad_request error reply with the micro headers', () => {
    const msg = fakeMessage();
    try {
      decodeJson(new TextEncoder().encode('nope'));
    } catch (err) {
      respondError(msg, err);
    }
    expect(decodeJson(msg.sent[0].data)).toEqual({ error: { code: 'bad_request', message: 'body is not valid JSON' } });
    expect(msg.sent[0].opts?.headers).toEqual({
      [SERVICE_ERROR_HEADER]: 'body is not valid JSON',
      [SERVICE_ERROR_CODE_HEADER]: '400',
    });
  });

  test.each([
    [new TableNotFoundError('nope'), 'not_found', '404', "no table named 'nope'"],
    [new TableUnavailableError('t', 'recovering'), 'unavailable', '503', "table 't' is recovering; retry later"],
    [new InternalError('bug'), 'internal', '500', 'bug'],
    [new Error('plain error'), 'internal', '500', 'plain error'],
    ['a thrown string', 'internal', '500', 'a thrown string'],
  ])('codec - %p maps to wire code %s and status %s', (err, wire, status, message) => {
    const msg = fakeMessage();
    respondError(msg, err);
    expect(decodeJson(msg.sent[0].data)).toEqual({ error: { code: wire, message } });
    expect(msg.sent[0].opts?.headers?.[SERVICE_ERROR_CODE_HEADER]).toBe(status);
    expect(msg.sent[0].opts?.headers?.[SERVICE_ERROR_HEADER]).toBe(message);
  });

  test('codec - line breaks in a message are flattened in the header only', () => {
    const msg = fakeMessage();
    respondError(msg, new BadRequestError('two\r\nlines'));
    expect(decodeJson(msg.sent[0].data)).toEqual({ error: { code: 'bad_request', message: 'two\r\nlines' } });
    expect(msg.sent[0].opts?.headers?.[SERVICE_ERROR_HEADER]).toBe('two lines');
  });

  describe('requestJson', () => {
    let bus: InProcessBus;
    beforeEach(() => {
      bus = new InProcessBus();
    });
    afterEach(async () => {
      await bus.close();
    });

    test('codec - requestJson returns the parsed reply', async () => {
      bus.subscribe('svc.ok', (m) => void respondOk(m, { echo: decodeJson(m.data) }));
      await expect(requestJson(bus, 'svc.ok', { key: 'k' })).resolves.toEqual({ echo: { key: 'k' } });
    });

    test('codec - requestJson throws RemoteError with the wire code, message and status', async () => {
      bus.subscribe('svc.err', (m) => void respondError(m, new TableNotFoundError('ghost')));
      const err = await requestJson(bus, 'svc.err', {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteError);
      expect(err).toMatchObject({ wireCode: 'not_found', status: 404, message: "no table named 'ghost'", code: 'TABLE_NOT_FOUND' });
    });

    test('codec - requestJson understands a micro error sent with headers only', async () => {
      bus.subscribe('svc.hdr', (m) => void m.respond(new Uint8Array(0), { headers: { [SERVICE_ERROR_HEADER]: 'denied', [SERVICE_ERROR_CODE_HEADER]: '403' } }));
      const err = await requestJson(bus, 'svc.hdr', {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteError);
      expect(err).toMatchObject({ wireCode: 'unauthorized', status: 403, message: 'denied', code: 'INTERNAL' });
    });

    test('codec - requestJson rejects a reply that is not JSON', async () => {
      bus.subscribe('svc.bad', (m) => void m.respond(new TextEncoder().encode('<html>')));
      await expect(requestJson(bus, 'svc.bad', {})).rejects.toBeInstanceOf(InternalError);
    });
  });
});
