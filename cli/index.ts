/**
 * The `tablekeeper` command line (`main`, run from `main.js`) and
 * `startService`, which embeds the whole service in a program. Everything
 * other code uses is exported here; the rest of cli/ is internal.
 */
export { main } from './main';
export { startService } from './serve';
export type { RunningService, StartOptions } from './serve';
