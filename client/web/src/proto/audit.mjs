// Audit over MQTT (console contract), the client's end. The console asks the authority
// for a grant with mode "audit" whose `agent` is the recorder (null: the deployment's
// recorder); the authority's reply names the recorder and its keys. Each query is then
//   P/rec/{recorder}/q/{slot}: Seal(recorder_x25519, signed_doc("audit-query",
//       {grant, op, args, user, nonce, ts, reply_key}))        signed by the user's key
// and each answer
//   P/rec/{recorder}/r/{slot}: Seal(reply_key, signed_doc("audit-reply",
//       {nonce, ok, error?, ...result}))                        signed by the recorder
// ops: "list" {user?, agent?, since?, until?, limit?} -> {sessions: [...]};
//      "search" {q, user?, agent?, since?, until?, limit?} -> {hits: [Hit.to_json()]};
//      "fetch" {sid, offset} -> {data: asciicast v2 text, next: offset or null};
//      "verify" {sid} -> {verify: {ok, detail}}.
// The grant is reused for queries until 30 s before it expires.
import { buildRequest, openReply } from './authz.mjs';
import { randomBytes, sodium, x25519Pair } from './crypto.mjs';
import { b64d, b64e, float, hex } from './encoding.mjs';
import { claims } from './grants.mjs';
import { BadDocument, openDocument, signDocument } from './signed.mjs';

export const QUERY = 'audit-query';
export const ANSWER = 'audit-reply';
export const TIMEOUT = 10.0;

export class AuditError extends Error {}

export class AuditClient {
  constructor({ user, key, slot, authority, topics, publish, clock, timers, recorder = null }) {
    Object.assign(this, { user, key, slot, authority, topics, publish, clock, timers, recorder });
    this.grant = null; // {token, exp, recorder: {name, ed25519, x25519}}
    this.pendingGrant = null;
    this.queries = new Map(); // nonce -> {replyKey, resolve, reject, timer}
  }

  // Subscribe before any query: the authority's replies and every recorder's answers.
  subscriptions() {
    return [this.topics.authzReply(this.slot), `${this.topics.prefix}/rec/+/r/${this.slot}`];
  }

  onMessage(topic, payload) {
    if (topic === this.topics.authzReply(this.slot)) return this._onGrantReply(payload);
    if (this.grant && topic === this.topics.recorderReply(this.grant.recorder.name, this.slot)) this._onAnswer(payload);
  }

  _grant() {
    if (this.grant && this.grant.exp - 30 > this.clock.wall()) return Promise.resolve(this.grant);
    if (this.pendingGrant) return this.pendingGrant.promise;
    const body = { type: 'grant', agent: this.recorder, mode: 'audit', run_as: null, reason: null, command: null };
    const req = buildRequest(this.key, this.user, this.authority.x25519, body, this.clock.wall());
    const p = {};
    p.promise = new Promise((resolve, reject) => Object.assign(p, { resolve, reject }));
    p.req = req;
    p.timer = this.timers.set(() => {
      this.pendingGrant = null;
      p.reject(new AuditError(`the authority did not answer the audit grant request within ${TIMEOUT} s`));
    }, TIMEOUT);
    this.pendingGrant = p;
    this.publish(this.topics.authzRequest(this.slot), req.payload, 1);
    return p.promise;
  }

  _onGrantReply(payload) {
    const p = this.pendingGrant;
    if (!p) return false;
    let doc;
    try {
      doc = openReply(p.req, this.authority.ed25519, payload);
    } catch {
      return true;
    }
    if (doc === null) return false;
    this.timers.clear(p.timer);
    this.pendingGrant = null;
    if (!doc.ok) {
      p.reject(new AuditError(String(doc.error ?? 'the authority refused')));
      return true;
    }
    try {
      const c = claims(doc.grant);
      const rec = doc.agent ?? doc.recorder;
      this.grant = {
        token: doc.grant, exp: Date.parse(c.exp) / 1000,
        recorder: { name: String(rec.name ?? c.aud), ed25519: b64d(rec.ed25519), x25519: b64d(rec.x25519) },
      };
      p.resolve(this.grant);
    } catch {
      p.reject(new AuditError('the audit grant reply does not name the recorder and its keys'));
    }
    return true;
  }

  async query(op, args = {}) {
    const grant = await this._grant();
    const replyKey = x25519Pair();
    const nonce = hex(randomBytes(16));
    const doc = { grant: grant.token, op, args, user: this.user, nonce, ts: float(this.clock.wall()), reply_key: b64e(replyKey.publicKey) };
    const payload = sodium.crypto_box_seal(signDocument(this.key, QUERY, doc), grant.recorder.x25519);
    return new Promise((resolve, reject) => {
      const timer = this.timers.set(() => {
        this.queries.delete(nonce);
        reject(new AuditError(`recorder '${grant.recorder.name}' did not answer the ${op} query within ${TIMEOUT} s; ` +
          'audit queries need a recorder that serves the console (tether up runs one when a recorder is registered)'));
      }, TIMEOUT);
      this.queries.set(nonce, { replyKey, resolve, reject, timer });
      this.publish(this.topics.recorderQuery(grant.recorder.name, this.slot), payload, 1);
    });
  }

  _onAnswer(payload) {
    for (const [nonce, q] of this.queries) {
      let blob;
      try {
        blob = sodium.crypto_box_seal_open(payload, q.replyKey.publicKey, q.replyKey.secret);
      } catch {
        continue;
      }
      let doc;
      try {
        doc = openDocument(this.grant.recorder.ed25519, ANSWER, blob);
      } catch (e) {
        if (e instanceof BadDocument) return; // not signed by the recorder: ignored
        throw e;
      }
      if (doc.nonce !== nonce) return;
      this.queries.delete(nonce);
      this.timers.clear(q.timer);
      if (doc.ok) q.resolve(doc);
      else q.reject(new AuditError(String(doc.error ?? 'the recorder refused')));
      return;
    }
  }

  list(filters = {}) { return this.query('list', filters).then((d) => d.sessions ?? []); }
  search(q, filters = {}) { return this.query('search', { q, ...filters }).then((d) => d.hits ?? []); }
  verify(sid) { return this.query('verify', { sid }).then((d) => d.verify ?? null); }

  // The whole asciicast, fetched in chunks.
  async fetchCast(sid, onProgress = () => {}) {
    let offset = 0;
    const parts = [];
    for (;;) {
      const d = await this.query('fetch', { sid, offset });
      parts.push(String(d.data ?? ''));
      onProgress(parts.length);
      if (d.next === null || d.next === undefined) break;
      offset = d.next;
    }
    return parts.join('');
  }
}
