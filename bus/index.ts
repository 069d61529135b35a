/** The bus layer: the `Bus` interface, its two implementations, the contract's subjects, schemas and codec, and the service version. */
export {
  DEFAULT_REQUEST_TIMEOUT_MS,
  type Bus,
  type Headers,
  type Message,
  type MessageHandler,
  type PublishOptions,
  type RequestOptions,
  type SubscribeOptions,
  type Subscription,
} from './bus';
export { InProcessBus, type InProcessBusOptions } from './in-process-bus';
export { NatsBus, type NatsBusOptions } from './nats-bus';
export { createBus, type CreateBusOptions } from './create-bus';
export {
  BusClosedError,
  BusDisconnectedError,
  BusNoRespondersError,
  BusTimeoutError,
  InvalidSubjectError,
  PayloadTooLargeError,
  RemoteError,
} from './errors';
export { ERROR_CODES, STATUS_WIRE, statusOfWire, WIRE_STATUS, type ErrorCodeMapping, type WireErrorCode } from './error-codes';
export {
  decodeJson,
  encodeJson,
  errorReply,
  isErrorReply,
  requestJson,
  respondError,
  respondJson,
  respondOk,
  SERVICE_ERROR_CODE_HEADER,
  SERVICE_ERROR_HEADER,
  type ErrorReply,
} from './codec';
export {
  ADMIN_OPERATIONS,
  BACKUP_EVENTS,
  checkToken,
  Subjects,
  TABLE_OPERATIONS,
  type AdminOperation,
  type BackupEvent,
  type TableOperation,
  type TableSubject,
} from './subjects';
export {
  checkErrorReply,
  checkReply,
  ERROR_REPLY_SCHEMA,
  describeErrors,
  OPERATIONS,
  parseKeyRequest,
  parseRequest,
  validateRequest,
  type JsonValue,
  type Operation,
  type ReplyBodies,
  type RequestBodies,
} from './schemas';
export { checkEvent, EVENT_SCHEMAS, publishEvent } from './events';
export {
  Endpoint,
  MicroService,
  type EndpointHandler,
  type EndpointInfo,
  type EndpointOptions,
  type EndpointStats,
  type MicroServiceOptions,
  type ServiceIdentity,
  type ServiceInfo,
  type ServiceStats,
} from './micro';
export { checkPattern, checkSubject, isValidSubject, MAX_QUEUE_BYTES, MAX_SUBJECT_BYTES } from './rules';
export { VERSION } from './version';
export { jsonMemberSpan } from './json-span';
