// The audit-query client (src/proto/audit.mjs) against the Python reference of §13
// (tether/auditq.py, as recorder/queries.py uses it), live: tests/support/audit_peer.py
// plays authority and recorder on a pipe and hands the client back what a broker would.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { AuditClient, AuditError, CHUNK } from '../src/proto/audit.mjs';
import { ready, signingKeyFromSeed } from '../src/proto/crypto.mjs';
import { b64d, b64e, fromHex } from '../src/proto/encoding.mjs';
import { Topics } from '../src/proto/topics.mjs';
import { python, REPO } from './helpers.mjs';

let peer;
let lines;
let info;
const waiting = [];
const buffered = [];

function nextLine() {
  if (buffered.length) return Promise.resolve(buffered.shift());
  return new Promise((resolve) => waiting.push(resolve));
}

before(async () => {
  await ready;
  peer = spawn(python(), ['-m', 'tests.support.audit_peer'], { cwd: REPO, stdio: ['pipe', 'pipe', 'inherit'] });
  lines = createInterface({ input: peer.stdout });
  lines.on('line', (line) => {
    const msg = JSON.parse(line);
    if (waiting.length) waiting.shift()(msg);
    else buffered.push(msg);
  });
  info = (await nextLine()).ready;
});

after(() => {
  peer.stdin.end();
  peer.kill();
});

// A client whose publishes go to the Python peer; what the peer answers is delivered back.
function client({ life = 300, log = [] } = {}) {
  const timers = { set: (fn, s) => setTimeout(fn, s * 1000), clear: (t) => clearTimeout(t) };
  let c;
  const publish = async (topic, payload) => {
    peer.stdin.write(JSON.stringify({ topic, b64: b64e(payload), life }) + '\n');
    const msg = await nextLine();
    log.push(msg);
    for (const d of msg.deliver ?? []) c.onMessage(d.topic, b64d(d.b64));
  };
  c = new AuditClient({
    user: info.user, key: signingKeyFromSeed(fromHex(info.seed)), slot: info.slot,
    authority: { ed25519: b64d(info.authority.ed25519), x25519: b64d(info.authority.x25519) },
    topics: new Topics(), publish, clock: { wall: () => Date.now() / 1000 }, timers,
  });
  return c;
}

test('a query is a §13.3 document the reference opens, and one grant serves many queries', async () => {
  const log = [];
  const c = client({ log });
  assert.deepEqual(c.subscriptions(), ['tether/v1/authz/rep/carol.c', 'tether/v1/rec/+/r/carol.c']);
  const args = { user: 'alice', agent: 'local', since: 1700000000.5, limit: 5 };
  assert.deepEqual(await c.query('list', args), { echo: args });
  assert.deepEqual(await c.query('commands', { sid: 'ab'.repeat(16) }), { echo: { sid: 'ab'.repeat(16) } });
  const queries = log.filter((m) => m.doc);
  assert.equal(queries.length, 2);
  assert.equal(log.filter((m) => m.grants).length, 1, 'the grant is reused');
  for (const { doc, chunk } of queries) {
    assert.equal(doc.type, 'audit-query');
    assert.equal(doc.chunk, CHUNK);
    assert.equal(chunk, 2816);
    assert.match(doc.nonce, /^[0-9a-f]{32}$/);
  }
  assert.equal(c.grant.recorder.name, 'rec');
});

test('a chunked reply is reassembled out of order, with duplicates and forgeries ignored', async () => {
  const log = [];
  const c = client({ log });
  const progress = [];
  const r = await c.fetch('cd'.repeat(16), (n, total) => progress.push([n, total]));
  const fetch = log.find((m) => m.doc?.op === 'fetch');
  assert.ok(fetch.chunks > 10, `${fetch.chunks} chunks`);
  assert.ok(fetch.largest < 4096, `largest reply payload ${fetch.largest} bytes`);
  assert.deepEqual(progress.at(-1), [fetch.chunks, fetch.chunks]);
  assert.equal(r.sid, 'cd'.repeat(16));
  const cast = r.asciicast.trimEnd().split('\n');
  assert.equal(JSON.parse(cast[0]).version, 2);
  assert.equal(cast.length, 401);
  assert.equal(JSON.parse(cast[400])[2], `line 399 é\u{1f600} ${'x'.repeat(50)}\r\n`);
});

test('search sends `text`; hits carry code-point spans; errors reject', async () => {
  const c = client();
  const hits = await c.search('canary-42');
  assert.equal(hits.length, 1);
  const [a, b] = hits[0].spans[0];
  assert.equal(Array.from(hits[0].snippet).slice(a, b).join(''), 'canary-42');
  await assert.rejects(c.search('ab'), (e) => e instanceof AuditError && /at least 3/.test(e.message));
  assert.deepEqual(await c.verify('ef'.repeat(16)), { echo: { sid: 'ef'.repeat(16) } });
});

test('a grant close to expiry is renewed before the next query', async () => {
  const log = [];
  const c = client({ life: 20, log }); // under the 30 s margin: renewed every time
  await c.list({});
  await c.list({});
  assert.equal(log.filter((m) => m.grants).length, 2);
  assert.equal(log.filter((m) => m.dropped).length, 0);
});
