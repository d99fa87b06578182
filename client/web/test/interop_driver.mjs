// A console session (src/proto/session.mjs) on stdin/stdout, for tests/test_web_proto.py:
// Python plays broker, authority and agent with the reference code. One JSON object per
// line each way. In: {op: start|msg|input|resize|signal|close|consume}. Out: {pub}, {event},
// {output}. With consume: "manual", output is acknowledged only when told (as xterm's
// write callback would), so Python can watch the credit window hold the agent back.
import { createInterface } from 'node:readline';
import { ready } from '../src/proto/crypto.mjs';
import { b64d, b64e, fromHex } from '../src/proto/encoding.mjs';
import { signingKeyFromSeed } from '../src/proto/crypto.mjs';
import { SessionCore } from '../src/proto/session.mjs';
import { Topics } from '../src/proto/topics.mjs';
import * as authz from '../src/proto/authz.mjs';
import { readPresence, readStatus } from '../src/proto/presence.mjs';

await ready;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const t0 = performance.now();
const clock = { wall: () => Date.now() / 1000, mono: () => (performance.now() - t0) / 1000 };
const timers = { set: (fn, s) => setTimeout(fn, s * 1000), clear: (h) => clearTimeout(h) };
let session = null;
let manual = false;
const waiting = [];

const handlers = {
  start(m) {
    manual = m.consume === 'manual';
    session = new SessionCore({
      user: m.user, key: signingKeyFromSeed(fromHex(m.seed)), slot: m.slot,
      authority: { ed25519: b64d(m.authority.ed25519), x25519: b64d(m.authority.x25519) },
      topics: new Topics(), agent: m.agent, mode: m.mode ?? 'shell', request: m.request,
      publish: (topic, payload, qos) => out({ pub: topic, qos, b64: b64e(payload) }),
      clock, timers,
      onOutput: (bytes, done, stderr) => {
        out({ output: b64e(bytes), stderr });
        if (manual) waiting.push(done);
        else done();
      },
      onEvent: (evt) => out({ event: evt }),
    });
    out({ subscriptions: session.subscriptions() });
    session.start();
  },
  msg: (m) => session.onMessage(m.topic, b64d(m.b64)),
  input: (m) => out({ accepted_input: session.sendInput(b64d(m.b64)) }),
  resize: (m) => session.resize(m.cols, m.rows),
  signal: (m) => session.signal(m.n),
  close: () => session.close(),
  consume(m) {
    const n = m.n ?? waiting.length;
    for (let i = 0; i < n && waiting.length; i++) waiting.shift()();
    out({ consumed: true, waiting: waiting.length });
  },
  // A bare grant request, to show the Python authority code accepts what JS builds.
  request(m) {
    const key = signingKeyFromSeed(fromHex(m.seed));
    const p = authz.buildRequest(key, m.user, b64d(m.authority_x25519), m.body, clock.wall());
    out({ request: b64e(p.payload), nonce: p.nonce });
  },
  // Whether the console takes a presence (or, with key, status) document, for the
  // Python test that both sides decide alike.
  presence(m) {
    try {
      if (m.status) readStatus(b64d(m.b64), b64d(m.key));
      else readPresence(b64d(m.b64));
      out({ taken: true });
    } catch (e) {
      out({ taken: false, why: String(e.message) });
    }
  },
  stats: () => out({ stats: session.channel?.stats ?? null, ackDue: session.channel?._ackDue ?? null, buffered: session.channel?._buffer.size ?? null, timer: session._timer !== null, timerAt: session._timerAt, now: clock.mono() }),
  exit: () => process.exit(0),
};

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const m = JSON.parse(line);
  try {
    handlers[m.op](m);
  } catch (e) {
    out({ error: String(e?.stack ?? e) });
  }
}
