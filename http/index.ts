/** The HTTP layer: admin and data API over the bus, auth, live events, metrics, OpenAPI and the dashboard. */
export { createHttpServer, listenHttp, REDACTED_LOG_PATHS, routesOf, type HttpServerOptions } from './server';
export type { ServiceLifecycle } from './context';
export { adminTokenPath, resolveAdminToken, type AdminTokenSource } from './admin-token';
export { resolveVapidKeys } from './vapid-keys';
export { bearerToken, tokenMatches, TokenAuth, type Access, type Grant } from './auth';
export {
  HTTP_ONLY_ERRORS,
  HttpError,
  httpErrorAnswer,
  RETRY_AFTER_UNAVAILABLE_S,
  WIRE_STATUS,
  type HttpErrorAnswer,
  type HttpOnlyCode,
  type HttpOnlyMapping,
} from './error-status';
export { TokenBucketLimiter, type RateDecision, type RateLimitOptions } from './rate-limit';
export { HttpMetrics, KNOWN_TABLE_STATES, type HttpMetricsOptions } from './metrics';
export { parseHealth, type HealthSummary, type TableHealth } from './health-reply';
export { OPENAPI_DOCUMENT } from './openapi';
export { DASHBOARD_HTML } from './dashboard';
