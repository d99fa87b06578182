// Builds dist/ from src/ with esbuild: deterministic (no timestamps, no source maps, no
// hashes), so CI can rebuild it from the lockfile and compare with the committed bundle.
// `node build.mjs [--out DIR]`: DIR defaults to dist/ (tests/test_web_bundle.py builds
// into a temporary directory and compares).
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outAt = process.argv.indexOf('--out');
const dist = outAt > 0 ? resolve(process.argv[outAt + 1]) : join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const common = {
  bundle: true, minify: true, sourcemap: false, legalComments: 'eof', logLevel: 'warning',
  absWorkingDir: here, charset: 'utf8', target: ['chrome110', 'firefox110', 'safari16'],
};
await esbuild.build({
  ...common, entryPoints: ['src/ui/main.mjs'], outfile: join(dist, 'console.js'), format: 'iife', platform: 'browser',
  conditions: ['browser'], define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  loader: { '.wasm': 'binary' },
});
await esbuild.build({ ...common, entryPoints: ['src/ui/console.css'], outfile: join(dist, 'console.css'), loader: { '.woff': 'dataurl', '.woff2': 'dataurl', '.ttf': 'dataurl' } });
copyFileSync(join(here, 'src/ui/index.html'), join(dist, 'index.html'));
console.log(`built ${readdirSync(dist).sort().join(', ')}`);
