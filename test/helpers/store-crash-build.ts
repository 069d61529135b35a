/**
 * Builds a runnable copy of the store engine and the crash-test child as
 * plain JavaScript (typescript.transpileModule, no type check), so the child
 * runs under bare `node` without ts-node and without depending on a possibly
 * stale dist/. The layout under `outDir` mirrors the repository
 * (store/*.js, test/helpers/store-crash-child.js) so relative imports resolve;
 * packages (pino) resolve through NODE_PATH (see childEnv).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

const ROOT = path.resolve(__dirname, '..', '..');

function transpile(relative: string, outDir: string): void {
  const source = fs.readFileSync(path.join(ROOT, relative), 'utf8');
  const { outputText } = ts.transpileModule(source, {
    fileName: relative,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  const out = path.join(outDir, relative.replace(/\.ts$/, '.js'));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, outputText);
}

/** Transpiles store/ and the crash child into `outDir`; returns the child's path. */
export function buildCrashChild(outDir: string): string {
  for (const name of fs.readdirSync(path.join(ROOT, 'store'))) {
    if (name.endsWith('.ts') && !name.endsWith('.d.ts')) transpile(path.join('store', name), outDir);
  }
  transpile(path.join('test', 'helpers', 'store-crash-child.ts'), outDir);
  return path.join(outDir, 'test', 'helpers', 'store-crash-child.js');
}

/** Environment for the child: the repository's node_modules on NODE_PATH. */
export function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') };
}
