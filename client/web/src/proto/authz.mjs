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

// Questions to the authority that expect one reply each (access questions, audit grants).
// `ask(body)` resolves with the reply document (ok or not) or rejects with AuthzError when
// the authority does not answer within `timeout` seconds. Replies arrive on the slot's
// reply topic, shared with sessions: each is tried against every pending question's key.
export class AuthorityAsker {
  constructor({ user, key, slot, authority, topics, publish, clock, timers, timeout = 10.0 }) {
    Object.assign(this, { user, key, slot, authority, topics, publish, clock, timers, timeout });
    this.pending = new Set();
  }

  subscriptions() { return [this.topics.authzReply(this.slot)]; }

  ask(body, what = 'request') {
    return new Promise((resolve, reject) => {
      const p = { req: buildRequest(this.key, this.user, this.authority.x25519, body, this.clock.wall()), resolve, reject };
      p.timer = this.timers.set(() => {
        this.pending.delete(p);
        reject(new AuthzError(`the authority did not answer the ${what} within ${this.timeout} s`));
      }, this.timeout);
      this.pending.add(p);
      this.publish(this.topics.authzRequest(this.slot), p.req.payload, 1);
    });
  }

  // True if the payload answered a pending question.
  onMessage(topic, payload) {
    if (topic !== this.topics.authzReply(this.slot) || !this.pending.size) return false;
    for (const p of this.pending) {
      let doc;
      try {
        doc = openReply(p.req, this.authority.ed25519, payload);
      } catch {
        continue; // opens with this key but is not the authority's: ignored
      }
      if (doc === null) continue;
      this.pending.delete(p);
      this.timers.clear(p.timer);
      p.resolve(doc);
      return true;
    }
    return false;
  }
}
