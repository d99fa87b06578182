// Audit over MQTT, the client's end: docs/protocol.md §13 (normative; the Python side is
// tether/auditq.py and recorder/queries.py). The console asks the authority for a grant
// with mode "audit" whose `agent` is the recorder (null: the deployment's recorder); the
// reply's `agent` object names the recorder and its keys. Each query is then
//   P/rec/{recorder}/q/{slot}: Seal(recorder_x25519, signed_doc("audit-query",
//       {type: "audit-query", grant, op, args, nonce, ts, reply_key, chunk}))  by the grant's cnf key
// and the response R = {ok, op, result | error} comes back as canonical JSON cut into
// chunks of at most `chunk` bytes, each on P/rec/{recorder}/r/{slot} as
//   Seal(reply_key, signed_doc("audit-reply", {nonce, seq, total, data: b64(part)}))  by the recorder
// ops: "list" {user?, agent?, status?, since?, until?, limit?} -> {sessions, more};
//      "search" {text, user?, agent?, sid?, since?, until?, limit?} -> {hits};
//      "commands" {sid} -> {sid, commands};
//      "fetch" {sid} -> {sid, session, asciicast};
//      "verify" {sid} -> {sid, ok, events, checkpoints, ended, problems, notes}.
// One grant serves any number of queries; a new one is asked for 30 s before it expires.
// Chunks are 2816 bytes: every reply packet stays under 4 KiB, which Mosquitto's websocket
// listener needs (docs/sources.md#mosquitto-websockets); the embedded broker takes them too.
import { AuthorityAsker } from './authz.mjs';
import { randomBytes, sodium, x25519Pair } from './crypto.mjs';
import { b64d, b64e, concat, float, hex, loads } from './encoding.mjs';
import { claims } from './grants.mjs';
import { BadDocument, openDocument, signDocument } from './signed.mjs';

export const QUERY = 'audit-query';
export const ANSWER = 'audit-reply';
export const TIMEOUT = 10.0;
export const CHUNK = 2816; // §13.3: reply packets under 4 KiB (Mosquitto's websocket listener)

export class AuditError extends Error {}

export class AuditClient {
  constructor({ user, key, slot, authority, topics, publish, clock, timers, recorder = null, chunk = CHUNK }) {
    Object.assign(this, { user, key, slot, authority, topics, publish, clock, timers, recorder, chunk });
    this.grant = null; // {token, exp, recorder: {name, ed25519, x25519}}
    this.pendingGrant = null;
    this.asker = new AuthorityAsker({ user, key, slot, authority, topics, publish, clock, timers, timeout: TIMEOUT });
    this.queries = new Map(); // nonce -> {replyKey, recorderKey, parts, total, resolve, reject, timer}
  }

  // Subscribe before any query: the authority's replies and every recorder's answers.
  subscriptions() {
    return [this.topics.authzReply(this.slot), `${this.topics.prefix}/rec/+/r/${this.slot}`];
  }

  onMessage(topic, payload) {
    if (topic === this.topics.authzReply(this.slot)) return this.asker.onMessage(topic, payload);
    if (this.queries.size && topic.startsWith(`${this.topics.prefix}/rec/`) && topic.endsWith(`/r/${this.slot}`)) this._onAnswer(payload);
  }

  _grant() {
    if (this.grant && this.grant.exp - 30 > this.clock.wall()) return Promise.resolve(this.grant);
    if (this.pendingGrant) return this.pendingGrant;
    const body = { type: 'grant', agent: this.recorder, mode: 'audit', run_as: null, reason: null, command: null };
    this.pendingGrant = this.asker.ask(body, 'audit grant request').then((doc) => {
      if (!doc.ok) throw new AuditError(String(doc.error ?? 'the authority refused'));
      try {
        const c = claims(doc.grant);
        const rec = doc.agent ?? doc.recorder;
        this.grant = {
          token: doc.grant, exp: Date.parse(c.exp) / 1000,
          recorder: { name: String(rec.name ?? c.aud), ed25519: b64d(rec.ed25519), x25519: b64d(rec.x25519) },
        };
      } catch {
        throw new AuditError('the audit grant reply does not name the recorder and its keys');
      }
      return this.grant;
    }, (e) => { throw new AuditError(e.message); }).finally(() => { this.pendingGrant = null; });
    return this.pendingGrant;
  }

  // The response's `result` for one query; rejects with AuditError on an error reply.
  // `onProgress(received, total)` follows a chunked answer; each chunk restarts the timeout.
  async query(op, args = {}, onProgress = null) {
    const grant = await this._grant();
    const replyKey = x25519Pair();
    const nonce = hex(randomBytes(16));
    const doc = { type: QUERY, grant: grant.token, op, args, nonce, ts: float(this.clock.wall()),
      reply_key: b64e(replyKey.publicKey), chunk: this.chunk };
    const payload = sodium.crypto_box_seal(signDocument(this.key, QUERY, doc), grant.recorder.x25519);
    return new Promise((resolve, reject) => {
      const q = { replyKey, recorderKey: grant.recorder.ed25519, parts: new Map(), total: null, onProgress, resolve, reject, timer: null };
      q.arm = () => {
        if (q.timer !== null) this.timers.clear(q.timer);
        q.timer = this.timers.set(() => {
          this.queries.delete(nonce);
          reject(new AuditError(`recorder '${grant.recorder.name}' did not answer the ${op} query within ${TIMEOUT} s; ` +
            'audit queries need a running recorder (tether up runs one unless --no-recorder)'));
        }, TIMEOUT);
      };
      q.arm();
      this.queries.set(nonce, q);
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
        doc = openDocument(q.recorderKey, ANSWER, blob);
      } catch (e) {
        if (e instanceof BadDocument) return; // not signed by the recorder: ignored
        throw e;
      }
      if (doc.nonce !== nonce) return;
      const { seq, total } = doc;
      if (!Number.isInteger(seq) || !Number.isInteger(total) || seq < 0 || seq >= total) return;
      if (q.total === null) q.total = total;
      if (total !== q.total) return;
      let part;
      try {
        part = b64d(String(doc.data ?? ''));
      } catch {
        return;
      }
      q.parts.set(seq, part); // duplicates overwrite
      q.arm();
      q.onProgress?.(q.parts.size, total);
      if (q.parts.size < total) return;
      this.queries.delete(nonce);
      this.timers.clear(q.timer);
      let response;
      try {
        response = loads(concat(...Array.from({ length: total }, (_, i) => q.parts.get(i))));
      } catch {
        q.reject(new AuditError('the recorder sent a response that is not JSON'));
        return;
      }
      if (response === null || typeof response !== 'object') q.reject(new AuditError('the recorder sent a malformed response'));
      else if (response.ok) q.resolve(response.result ?? {});
      else q.reject(new AuditError(String(response.error ?? 'the recorder refused')));
      return;
    }
  }

  list(filters = {}) { return this.query('list', filters).then((r) => r.sessions ?? []); }
  search(text, filters = {}) { return this.query('search', { text, ...filters }).then((r) => r.hits ?? []); }
  commands(sid) { return this.query('commands', { sid }).then((r) => r.commands ?? []); }
  // {sid, ok, events, checkpoints, ended, problems, notes}: the recorder's full offline check.
  verify(sid) { return this.query('verify', { sid }); }
  // {sid, session, asciicast}: the whole recording as asciicast v2 text.
  fetch(sid, onProgress = null) { return this.query('fetch', { sid }, onProgress); }
}
