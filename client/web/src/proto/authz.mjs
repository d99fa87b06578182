// Grant requests and replies, as tether/authz.py. Request: sealed box to the authority's
// X25519 key holding a document signed by the requester (domain "grant-request"). Reply:
// sealed box to a one-time X25519 key, signed by the authority (domain "grant-reply").
import { randomBytes, sodium, x25519Pair } from './crypto.mjs';
import { b64e, float, hex } from './encoding.mjs';
import { BadDocument, openDocument, signDocument } from './signed.mjs';

export const REQUEST = 'grant-request';
export const REPLY = 'grant-reply';
export const MAX_SKEW = 120.0;

export class AuthzError extends Error {}

// requester: {publicKey, privateKey}; body: {type, agent, mode, run_as, reason, command};
// now: Unix seconds. Returns {nonce, replyKey, payload} (payload: bytes to publish).
export function buildRequest(requester, requesterName, authorityX25519, body, now) {
  const replyKey = x25519Pair();
  const nonce = hex(randomBytes(16));
  const doc = { ...body, user: requesterName, nonce, ts: float(now), reply_key: b64e(replyKey.publicKey) };
  const payload = sodium.crypto_box_seal(signDocument(requester, REQUEST, doc), authorityX25519);
  return { nonce, replyKey, payload };
}

// The reply document, or null if this payload is not the reply to `pending`. Throws
// AuthzError when it opens with our key but is not signed by the authority.
export function openReply(pending, authorityKey, payload, domain = REPLY) {
  let blob;
  try {
    blob = sodium.crypto_box_seal_open(payload, pending.replyKey.publicKey, pending.replyKey.secret);
  } catch {
    return null;
  }
  let doc;
  try {
    doc = openDocument(authorityKey, domain, blob);
  } catch (e) {
    if (e instanceof BadDocument) throw new AuthzError('reply is not signed by the authority');
    throw e;
  }
  return doc.nonce === pending.nonce ? doc : null;
}
