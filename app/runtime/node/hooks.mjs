// Module hooks for the Stepwise Node bridge: TypeScript files are transpiled by esbuild (pinned in
// package.json, installed by `npm ci`), and relative imports may leave out `.ts` as in TypeScript.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const TS = /\.(ts|mts)$/;
let esbuild = null;

async function loadEsbuild() {
  if (esbuild) return esbuild;
  try {
    esbuild = await import('esbuild'); // node_modules beside (or above) this file
  } catch {
    try {
      // ...or the project's own node_modules, when the runtime is installed elsewhere.
      const path = createRequire(join(process.cwd(), 'package.json')).resolve('esbuild');
      esbuild = await import(pathToFileURL(path).href);
    } catch {
      throw new Error(
        'TypeScript steps need the esbuild package: run `make setup` (npm ci) in the project folder',
      );
    }
  }
  return esbuild;
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !/^\.{1,2}\//.test(specifier) || !context.parentURL) {
      throw err;
    }
    // TypeScript style: `./service.js` names `./service.ts`; `./service` may be `./service.ts`.
    const candidates = [specifier.replace(/\.js$/, '.ts'), `${specifier}.ts`, `${specifier}.js`];
    for (const candidate of candidates) {
      if (candidate === specifier) continue;
      try {
        return await nextResolve(candidate, context);
      } catch {
        // try the next one
      }
    }
    throw err;
  }
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !TS.test(new URL(url).pathname)) {
    return nextLoad(url, context);
  }
  const file = fileURLToPath(url);
  const source = await readFile(file, 'utf8');
  const { transform } = await loadEsbuild();
  let result;
  try {
    result = await transform(source, {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      sourcefile: file,
      sourcemap: 'inline',
    });
  } catch (err) {
    const first = err?.errors?.[0];
    if (!first) throw err;
    const where = first.location ? ` (${file}:${first.location.line}:${first.location.column + 1})` : '';
    throw new SyntaxError(`${first.text}${where}`);
  }
  return { format: 'module', source: result.code, shortCircuit: true };
}
