// Builds dist/ from src/ with esbuild: deterministic (no timestamps, no source maps, no
// hashes), so CI can rebuild it from the lockfile and compare with the committed bundle.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const common = {
  bundle: true, minify: true, sourcemap: false, legalComments: 'eof', logLevel: 'warning',
  absWorkingDir: here, charset: 'utf8', target: ['chrome110', 'firefox110', 'safari16'],
};
await esbuild.build({
  ...common, entryPoints: ['src/ui/main.mjs'], outfile: 'dist/console.js', format: 'iife', platform: 'browser',
  conditions: ['browser'], define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  loader: { '.wasm': 'binary' },
});
await esbuild.build({ ...common, entryPoints: ['src/ui/console.css'], outfile: 'dist/console.css', loader: { '.woff': 'dataurl', '.woff2': 'dataurl', '.ttf': 'dataurl' } });
copyFileSync(join(here, 'src/ui/index.html'), join(dist, 'index.html'));
console.log(`built ${readdirSync(dist).sort().join(', ')}`);
