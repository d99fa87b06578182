// The console's session core (src/proto/session.mjs) on the paths of issue 11 items 4-5,
// as tether/client_session.py has them: a grant request naming a live session (`attach`)
// for a takeover, a watch or a join; CLOSE carrying `detach` or `end`; and the agent's
// CLOSE `detached` (another client attached the session) reaching the page.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { Channel } from '../src/proto/channel.mjs';
import { ready, signingKeyFromSeed, sodium, x25519Pair } from '../src/proto/crypto.mjs';
import { fromUtf8, utf8 } from '../src/proto/encoding.mjs';
import { Direction, FrameCipher, FrameType } from '../src/proto/frames.mjs';
import { SessionCore } from '../src/proto/session.mjs';
import { openDocument } from '../src/proto/signed.mjs';
import { Topics } from '../src/proto/topics.mjs';

const SID = '0123456789abcdef0123456789abcdef';
let user;
let authorityX;

before(async () => {
  await ready;
  user = signingKeyFromSeed(new Uint8Array(32).fill(7));
  authorityX = x25519Pair();
});

function core(mode, request = {}) {
  const published = [];
  const events = [];
  const s = new SessionCore({
    user: 'walt', key: user, slot: 'walt.console', topics: new Topics(), agent: 'local', mode, request,
    authority: { ed25519: new Uint8Array(32), x25519: authorityX.publicKey },
    publish: (topic, payload, qos) => published.push({ topic, payload, qos }),
    clock: { wall: () => Date.now() / 1000, mono: () => 1 },
    timers: { set: () => ({}), clear: () => {} },
    onEvent: (evt) => events.push(evt),
  });
  return { s, published, events };
}

// What the authority reads from the sealed, signed request.
function requestBody(payload) {
  const blob = sodium.crypto_box_seal_open(payload, authorityX.publicKey, authorityX.secret);
  return openDocument(user.publicKey, 'grant-request', blob);
}

// The session as if the handshake had just finished: a channel with known keys, so the
// test can play the agent's side of it.
function opened(s) {
  const c2a = new Uint8Array(32).fill(1);
  const a2c = new Uint8Array(32).fill(2);
  s.channel = new Channel(new FrameCipher(c2a, Direction.C2A), new FrameCipher(a2c, Direction.A2C), { autoConsume: false });
  s.state = 'open';
  return { agentReads: new FrameCipher(c2a, Direction.C2A), agentSends: new FrameCipher(a2c, Direction.A2C) };
}

for (const mode of ['shell', 'watch', 'join']) {
  test(`a ${mode} grant request names the live session`, () => {
    const { s, published } = core(mode, { attach: SID, term: 'xterm-256color', cols: 80, rows: 24 });
    s.start();
    assert.equal(published.length, 1);
    assert.equal(published[0].topic, new Topics().authzRequest('walt.console'));
    const doc = requestBody(published[0].payload);
    assert.equal(doc.type, 'grant');
    assert.equal(doc.mode, mode);
    assert.equal(doc.attach, SID);
    assert.equal(doc.user, 'walt');
  });
}

test('a new session\'s grant request has no attach', () => {
  const { s, published } = core('shell', { run_as: 'tp' });
  s.start();
  const doc = requestBody(published[0].payload);
  assert.equal(doc.mode, 'shell');
  assert.equal('attach' in doc, false);
  assert.equal(doc.run_as, 'tp');
});

for (const [opts, word] of [[{ detach: true }, 'detach'], [{ end: true }, 'end'], [{}, ''], [undefined, '']]) {
  test(`close(${JSON.stringify(opts)}) sends CLOSE '${word}' and ends the session locally`, () => {
    const { s, published, events } = core('shell');
    const { agentReads } = opened(s);
    s.close(opts);
    const frames = published.filter((p) => p.topic === s.c2aTopic()).map((p) => agentReads.open(p.payload));
    const closes = frames.filter((f) => f.type === FrameType.CLOSE);
    assert.equal(closes.length, 1);
    assert.equal(fromUtf8(closes[0].payload), word);
    assert.equal(s.state, 'closed');
    assert.deepEqual(events.at(-1), { type: 'closed', exit: null, local: true });
    s.close({ detach: true }); // a second close sends nothing more
    assert.equal(published.filter((p) => p.topic === s.c2aTopic()).map((p) => agentReads.open(p.payload))
      .filter((f) => f.type === FrameType.CLOSE).length, 1);
  });
}

test('the agent\'s CLOSE \'detached\' reaches the page with its word, after the notice', () => {
  const { s, events } = core('shell', { attach: SID });
  const { agentSends } = opened(s);
  const notice = 'detached: this session was attached from another client';
  s.onMessage(s.a2cTopic(), agentSends.seal(FrameType.NOTICE, 1, 0, utf8(notice)));
  s.onMessage(s.a2cTopic(), agentSends.seal(FrameType.CLOSE, 2, 0, utf8('detached')));
  assert.deepEqual(events.map((e) => e.type), ['notice', 'peer-closed', 'closed']);
  assert.equal(events[0].text, notice);
  assert.equal(events[1].reason, 'detached');
  assert.equal(events[2].reason, 'detached');
  assert.equal(events[2].local, undefined);
  assert.equal(s.state, 'closed');
});

test('an ordinary end of the session carries no close word', () => {
  const { s, events } = core('shell');
  const { agentSends } = opened(s);
  s.onMessage(s.a2cTopic(), agentSends.seal(FrameType.EXIT, 1, 0, utf8('{"code": 3, "signal": null}')));
  s.onMessage(s.a2cTopic(), agentSends.seal(FrameType.CLOSE, 2, 0, new Uint8Array(0)));
  assert.deepEqual(events.map((e) => e.type), ['exit', 'peer-closed', 'closed']);
  assert.equal(events[2].reason, '');
  assert.deepEqual(events[2].exit, { code: 3, signal: null });
});
