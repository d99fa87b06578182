// The client's side of the three-message session handshake, as tether/handshake.py
// (ClientHandshake): HELLO -> ACCEPT or REFUSE -> CONFIRM, then the traffic keys.
import { aeadOpen, aeadSeal, kdf, personalHash, sign, sodium, verify, x25519Pair } from './crypto.mjs';
import { b64e, concat, dumps, equal, float, loads, utf8 } from './encoding.mjs';

export const HS_VERSION = 0x81;
export const PREFIX_LEN = 18;
const NONCE = new Uint8Array(24);

export const HsType = Object.freeze({ HELLO: 1, ACCEPT: 2, CONFIRM: 3, REFUSE: 4 });

export class HandshakeError extends Error {}
export class HandshakeRefused extends HandshakeError {}

const hash = (...parts) => personalHash('tether-hs-tx', ...parts);

function open(key, ad, ciphertext, what) {
  const plain = aeadOpen(key, NONCE, ad, ciphertext);
  if (plain === null) throw new HandshakeError(`${what} failed authentication`);
  return plain;
}

function dh(secret, publicKey) {
  let shared;
  try {
    shared = sodium.crypto_scalarmult(secret, publicKey);
  } catch {
    throw new HandshakeError('low-order public key');
  }
  if (shared.every((b) => b === 0)) throw new HandshakeError('low-order public key');
  return shared;
}

function prefix(type, sid) {
  const p = new Uint8Array(PREFIX_LEN);
  p[0] = HS_VERSION;
  p[1] = type;
  p.set(sid, 2);
  return p;
}

export function messageType(msg) {
  if (msg.length < PREFIX_LEN) throw new HandshakeError('handshake message too short');
  if (msg[0] !== HS_VERSION) throw new HandshakeError(`unsupported handshake version ${msg[0]}`);
  if (msg[1] < 1 || msg[1] > 4) throw new HandshakeError(`unknown handshake message ${msg[1]}`);
  return msg[1];
}

export const messageSid = (msg) => msg.slice(2, PREFIX_LEN);

export class ClientHandshake {
  // clientKey: {publicKey, privateKey} (Ed25519); agentSigningKey, agentX25519: 32 bytes
  // each, from the authority's signed grant reply; request: the HELLO fields (grant, mode,
  // run_as, term, cols, rows, env...). ephemeralSecret only for test vectors.
  constructor({ clientKey, agentSigningKey, agentX25519, sid, request, ephemeralSecret = null }) {
    if (sid.length !== 16) throw new Error('sid must be 16 bytes');
    this.clientKey = clientKey;
    this.agentVerify = agentSigningKey;
    this.agentX = agentX25519;
    this.sid = sid;
    this.eph = x25519Pair(ephemeralSecret);
    this.request = { ...request };
    this.h1 = null;
    this.es = null;
    this.accepted = {};
  }

  // `now` is Unix time in seconds (a float in the JSON, as Python's time.time()).
  hello(now) {
    const pre = concat(prefix(HsType.HELLO, this.sid), this.eph.publicKey);
    this.es = dh(this.eph.secret, this.agentX);
    const body = { ...this.request, client_key: b64e(this.clientKey.publicKey), ts: float(now) };
    const key = kdf(this.es, 'tether-hs1', concat(pre, this.agentX));
    const msg = concat(pre, aeadSeal(key, NONCE, concat(pre, this.agentX), dumps(body)));
    this.h1 = hash(msg);
    return msg;
  }

  // ACCEPT -> {confirm, keys: {c2a, a2c}}. REFUSE -> throws HandshakeRefused(reason).
  onReply(msg) {
    const kind = messageType(msg);
    if (!equal(messageSid(msg), this.sid)) throw new HandshakeError('reply is for another session');
    if (this.h1 === null) throw new HandshakeError('no HELLO sent');
    if (kind === HsType.REFUSE) {
      const key = kdf(this.es, 'tether-hs-refuse', this.h1);
      const body = loads(open(key, msg.subarray(0, PREFIX_LEN), msg.subarray(PREFIX_LEN), 'refusal'));
      throw new HandshakeRefused(String(body?.reason ?? 'refused'));
    }
    if (kind !== HsType.ACCEPT || msg.length < PREFIX_LEN + 32 + 64 + 16) {
      throw new HandshakeError('unexpected handshake message');
    }
    const hdr2 = msg.subarray(0, PREFIX_LEN + 32);
    const agentEph = hdr2.subarray(PREFIX_LEN);
    const ee = dh(this.eph.secret, agentEph);
    const eees = concat(ee, this.es);
    const key2 = kdf(eees, 'tether-hs2', concat(this.h1, hdr2));
    const plain = open(key2, hdr2, msg.subarray(hdr2.length), 'accept');
    if (!verify(this.agentVerify, concat(utf8('tether-hs2-sig'), this.h1, hdr2), plain.subarray(0, 64))) {
      throw new HandshakeError('agent signature does not verify: not the agent in the grant');
    }
    this.accepted = plain.length > 64 ? loads(plain.subarray(64)) : {};
    const h2 = hash(this.h1, msg);
    const hdr3 = prefix(HsType.CONFIRM, this.sid);
    const sig = sign(this.clientKey, concat(utf8('tether-hs3-sig'), h2));
    const confirm = concat(hdr3, aeadSeal(kdf(eees, 'tether-hs3', h2), NONCE, hdr3, sig));
    const h3 = hash(h2, confirm);
    return { confirm, keys: { c2a: kdf(ee, 'tether-c2a', h3), a2c: kdf(ee, 'tether-a2c', h3) } };
  }
}
