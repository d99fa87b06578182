// Loads the Python-made vectors: from $TETHER_WEB_VECTORS (tests/test_web_proto.py writes
// them), else by running the generator with $TETHER_PYTHON (default: the repo's .venv).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function python() {
  if (process.env.TETHER_PYTHON) return process.env.TETHER_PYTHON;
  const venv = join(REPO, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

let cached = null;
export function vectors() {
  if (cached) return cached;
  const path = process.env.TETHER_WEB_VECTORS;
  const text = path
    ? readFileSync(path, 'utf8')
    : execFileSync(python(), ['-m', 'tests.support.web_vectors'], { cwd: REPO, encoding: 'utf8', maxBuffer: 1 << 26 });
  cached = JSON.parse(text);
  return cached;
}
