/**
 * The service version reported by `$SRV.INFO`, `--version` and the OpenAPI
 * document. It lives with the bus contract it versions, where both the HTTP
 * layer and the command line can import it.
 */
export const VERSION = '0.1.0';
