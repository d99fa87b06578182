// Byte compatibility of the JS protocol port with the Python reference (tests/support/web_vectors.py).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { b64d, b64e, dumpsText, float, fromHex, hex, utf8 } from '../src/proto/encoding.mjs';
import { kdf, ready, signingKeyFromSeed } from '../src/proto/crypto.mjs';
import { FrameCipher, FrameError } from '../src/proto/frames.mjs';
import { ClientHandshake, HandshakeRefused } from '../src/proto/handshake.mjs';
import { openDocument, signDocument, BadDocument } from '../src/proto/signed.mjs';
import { readPresence, readStatus } from '../src/proto/presence.mjs';
import { claims, verifyGrant } from '../src/proto/grants.mjs';
import { brokerToken, deriveLogin, loginSalt } from '../src/proto/login.mjs';
import { vectors } from './helpers.mjs';

let V;
before(async () => {
  await ready;
  V = vectors();
});

test('base64url without padding', () => {
  for (const { hex: h, b64 } of V.b64) {
    assert.equal(b64e(fromHex(h)), b64);
    assert.equal(hex(b64d(b64)), h);
  }
  assert.throws(() => b64d('AA=='));
});

test('canonical JSON matches orjson sorted keys', () => {
  for (const { doc, canonical } of V.json) assert.equal(dumpsText(JSON.parse(doc)), canonical);
  assert.equal(dumpsText({ ts: float(1700000000), b: [float(0.5)] }), '{"b":[0.5],"ts":1700000000.0}');
});

test('KDF is keyed, personalised BLAKE2b-256', () => {
  for (const c of V.kdf) assert.equal(hex(kdf(fromHex(c.key), c.person, fromHex(c.data))), c.out);
});

test('frames seal byte-identically and open both ways, across epochs', () => {
  const key = fromHex(hex(Uint8Array.from({ length: 32 }, (_, i) => i)));
  const seal = [new FrameCipher(key, 0), new FrameCipher(key, 1)];
  const open = [new FrameCipher(key, 0), new FrameCipher(key, 1)];
  for (const f of V.frames) {
    const blob = seal[f.direction].seal(f.type, f.seq, f.ack, fromHex(f.payload));
    assert.equal(hex(blob), f.blob, `type ${f.type} seq ${f.seq}`);
    const got = open[f.direction].open(fromHex(f.blob));
    assert.deepEqual([got.type, got.seq, got.ack, hex(got.payload)], [f.type, f.seq, f.ack, f.payload]);
  }
  // the other direction's key schedule does not open it; nor does a tampered header
  const f = V.frames[0];
  assert.throws(() => new FrameCipher(key, 1).open(fromHex(f.blob)), FrameError);
  const bad = fromHex(f.blob);
  bad[22] ^= 1;
  assert.throws(() => new FrameCipher(key, 0).open(bad), FrameError);
  // an epoch far ahead of anything authenticated is refused before any AEAD work
  const farBlob = new FrameCipher(key, 0).seal(1, 5 * 2 ** 20, 0, new Uint8Array(1));
  assert.throws(() => new FrameCipher(key, 0).open(farBlob), /too far ahead/);
  const near = V.frames.find((x) => x.seq === 2 * 2 ** 20);
  assert.equal(new FrameCipher(key, near.direction).open(fromHex(near.blob)).seq, near.seq);
});

test('handshake: HELLO, ACCEPT, CONFIRM and traffic keys equal Python', () => {
  const h = V.handshake;
  const hs = new ClientHandshake({
    clientKey: signingKeyFromSeed(fromHex(h.client_seed)), agentSigningKey: fromHex(h.agent_ed25519),
    agentX25519: fromHex(h.agent_x25519), sid: fromHex(h.sid), request: h.request, ephemeralSecret: fromHex(h.client_eph),
  });
  assert.equal(hex(hs.hello(h.now)), h.hello);
  const { confirm, keys } = hs.onReply(fromHex(h.accept));
  assert.equal(hex(confirm), h.confirm);
  assert.equal(hex(keys.c2a), h.c2a);
  assert.equal(hex(keys.a2c), h.a2c);
  assert.deepEqual(hs.accepted, h.extra);
});

test('handshake: REFUSE carries the reason; a forged ACCEPT is rejected', () => {
  const h = V.handshake;
  const mk = () => new ClientHandshake({
    clientKey: signingKeyFromSeed(fromHex(h.client_seed)), agentSigningKey: fromHex(h.agent_ed25519),
    agentX25519: fromHex(h.agent_x25519), sid: fromHex(h.sid), request: h.request, ephemeralSecret: fromHex(h.client_eph),
  });
  const hs = mk();
  hs.hello(h.now);
  assert.throws(() => hs.onReply(fromHex(h.refuse)), (e) => e instanceof HandshakeRefused && e.message === h.refuse_reason);
  const hs2 = mk();
  hs2.hello(h.now);
  const bad = fromHex(h.accept);
  bad[bad.length - 1] ^= 1;
  assert.throws(() => hs2.onReply(bad), /accept failed authentication/);
  const hs3 = new ClientHandshake({
    clientKey: signingKeyFromSeed(fromHex(h.client_seed)), agentSigningKey: new Uint8Array(32).fill(9),
    agentX25519: fromHex(h.agent_x25519), sid: fromHex(h.sid), request: h.request, ephemeralSecret: fromHex(h.client_eph),
  });
  hs3.hello(h.now);
  assert.throws(() => hs3.onReply(fromHex(h.accept)), /not the agent in the grant/);
});

test('signed documents: JS signs the same bytes; presence, status and grants verify', () => {
  const d = V.documents;
  const doc = JSON.parse(d.request_doc);
  doc.ts = float(doc.ts);
  const blob = signDocument(signingKeyFromSeed(fromHex(V.handshake.client_seed)), 'grant-request', doc);
  assert.equal(hex(blob), d.request_signed);
  const agentPub = signingKeyFromSeed(fromHex(d.agent_seed)).publicKey;
  const p = readPresence(fromHex(d.presence));
  assert.equal(p.name, 'web1');
  assert.deepEqual(p.labels, { env: 'prod' });
  assert.equal(readPresence(fromHex(d.presence), agentPub).online, true);
  assert.equal(readStatus(fromHex(d.status), agentPub).online, false);
  assert.throws(() => readStatus(fromHex(d.presence), agentPub), BadDocument); // domain separation
  assert.throws(() => openDocument(agentPub, 'presence', fromHex(d.status)), BadDocument);
  assert.deepEqual(claims(d.grant), d.grant_claims);
  assert.deepEqual(verifyGrant(d.grant, fromHex(d.authority_ed25519)), d.grant_claims);
  assert.throws(() => verifyGrant(d.grant, agentPub), /does not verify/);
});

test('console login derivation equals PyNaCl Argon2id', () => {
  const l = V.login;
  assert.equal(hex(loginSalt(fromHex(l.authority_ed25519), l.user)), l.salt);
  const got = deriveLogin(fromHex(l.authority_ed25519), l.user, l.passphrase);
  assert.equal(hex(got.key.publicKey), l.public_key);
  assert.equal(got.mqttPassword, l.mqtt_password);
  assert.equal(brokerToken(got.key, 'alice.c', 'alice.c', l.token_now, fromHex(l.token_nonce)), l.token);
});

test('utf8 helper round trip', () => {
  assert.equal(hex(utf8('é')), 'c3a9');
});
