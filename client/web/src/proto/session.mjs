// One console session, transport-free: grant request, handshake, then the reliable
// channel, as client/session.py. The caller owns MQTT and timers and passes them in:
//   publish(topic, payload, qos); clock.wall() (Unix s) and clock.mono() (s);
//   timers.set(fn, seconds) -> handle, timers.clear(handle).
// Output is handed to onOutput(bytes, done): the frame's credit is returned to the agent
// only when done() is called (in the browser: xterm.js's write callback), so a flood of
// output is paced by what the page actually renders. Input has its own path: it is sent
// at once while the c2a window has room, and never waits behind output.
import * as authz from './authz.mjs';
import { Channel, KEEPALIVE } from './channel.mjs';
import { b64d, fromUtf8, hex, loads, utf8 } from './encoding.mjs';
import { Direction, FrameCipher, FrameType, MAX_PAYLOAD } from './frames.mjs';
import { ClientHandshake, HandshakeError, HandshakeRefused } from './handshake.mjs';
import { randomBytes } from './crypto.mjs';
import { readStatus } from './presence.mjs';
import { BadDocument } from './signed.mjs';
import { A2C, C2A } from './topics.mjs';
import { claims } from './grants.mjs';

export const AUTHORITY_TIMEOUT = 10.0;
export const HANDSHAKE_TIMEOUT = 10.0;
// As in tether/client_session.py: a cut of 60 s plus the reconnect backoff.
export const OFFLINE_GRACE = 90.0;
const MAX_EARLY = 64;
const MAX_INPUT_QUEUE = 1 << 20;

export const isReasonRequired = (error) => /reason is required/i.test(String(error ?? ''));

export class SessionCore {
  constructor({ user, key, slot, authority, topics, agent, mode = 'shell', request = {}, publish, clock, timers,
    onOutput = () => {}, onEvent = () => {}, sid = null, ephemeralSecret = null, publishFrame = null }) {
    Object.assign(this, { user, key, slot, authority, topics, agent, mode, request, publish, clock, timers, onOutput, onEvent });
    // The channel's frames: the channel resends them after a reconnect, so the connection
    // may drop them while offline instead of queueing every resend (protocol.md §10).
    this.publishFrame = publishFrame ?? publish;
    this.sid = sid ?? randomBytes(16);
    this.sidHex = hex(this.sid);
    this.ephemeralSecret = ephemeralSecret;
    this.state = 'new'; // new -> granting -> handshaking -> open -> closed
    this.pending = null;
    this.hs = null;
    this.channel = null;
    this.agentKey = null;
    this.statusRaw = null;
    this.early = [];
    this.accepted = {};
    this.grantClaims = null;
    this.exit = null;
    this.peerCloseReason = '';
    this.inputQueue = [];
    this.inputQueued = 0;
    this._consumeQueue = []; // [seq, done] in delivery order
    this._timer = null;
    this._timerAt = 0;
    this._keepalive = null;
    this._deadline = null;
    this._offline = null;
  }

  a2cTopic() { return this.topics.session(this.agent, this.slot, this.sidHex, A2C); }
  c2aTopic() { return this.topics.session(this.agent, this.slot, this.sidHex, C2A); }

  // Subscribe to all of these (and wait for the SUBACK) before start().
  subscriptions() {
    return [this.topics.authzReply(this.slot), this.topics.status(this.agent), this.a2cTopic()];
  }

  start() {
    const body = { type: 'grant', agent: this.agent, mode: this.mode, run_as: this.request.run_as ?? null,
      reason: this.request.reason ?? null, command: this.request.command ?? null };
    if (this.request.attach) body.attach = this.request.attach; // a grant to take over, watch or join that live session
    this.pending = authz.buildRequest(this.key, this.user, this.authority.x25519, body, this.clock.wall());
    this.state = 'granting';
    this.publish(this.topics.authzRequest(this.slot), this.pending.payload, 1);
    this._deadline = this.timers.set(() => this._fail('authority-timeout',
      `the authority did not answer within ${AUTHORITY_TIMEOUT} s. Is \`tether up\` (or \`tether authority\`) running?`),
    AUTHORITY_TIMEOUT);
  }

  _emit(evt) { this.onEvent(evt); }

  _fail(type, message, extra = {}) {
    if (this.state === 'closed') return;
    this._stop();
    this._emit({ type, message, ...extra });
    this._emit({ type: 'closed' });
  }

  _stop() {
    this.state = 'closed';
    for (const t of [this._deadline, this._timer, this._keepalive, this._offline]) if (t !== null) this.timers.clear(t);
    this._deadline = this._timer = this._keepalive = this._offline = null;
  }

  // ----- incoming -----

  onMessage(topic, payload) {
    if (this.state === 'closed') return;
    if (topic === this.topics.authzReply(this.slot)) return this._onReply(payload);
    if (topic === this.topics.status(this.agent)) return this._onStatus(payload);
    if (topic !== this.a2cTopic()) return;
    if (this.channel === null) {
      if (this.state === 'handshaking' && payload[0] === 0x81) this._onHandshake(payload);
      else if (this.early.length < MAX_EARLY) this.early.push(payload);
      return;
    }
    this._onDatagram(payload);
  }

  _onReply(payload) {
    if (this.state !== 'granting' || this.pending === null) return;
    let doc;
    try {
      doc = authz.openReply(this.pending, this.authority.ed25519, payload);
    } catch {
      return; // opens with our key but is not the authority's: ignored, as the CLI does
    }
    if (doc === null) return;
    this.timers.clear(this._deadline);
    this._deadline = null;
    if (!doc.ok) {
      const error = String(doc.error ?? 'the authority refused');
      this._fail('denied', error, { reasonRequired: isReasonRequired(error) });
      return;
    }
    let agentX;
    try {
      this.agentKey = b64d(String(doc.agent.ed25519));
      agentX = b64d(String(doc.agent.x25519));
    } catch {
      this._fail('error', `agent '${this.agent}' has no session key registered`);
      return;
    }
    try {
      this.grantClaims = claims(doc.grant);
    } catch {
      this.grantClaims = null;
    }
    this._emit({ type: 'granted', claims: this.grantClaims });
    const status = this._verifiedStatus();
    if (status !== null && !status.online) {
      this._fail('offline', `agent '${this.agent}' is offline`);
      return;
    }
    this.hs = new ClientHandshake({ clientKey: this.key, agentSigningKey: this.agentKey, agentX25519: agentX,
      sid: this.sid, request: { ...this.request, grant: doc.grant, mode: this.mode }, ephemeralSecret: this.ephemeralSecret });
    this.state = 'handshaking';
    this.publish(this.topics.handshake(this.agent, this.slot), this.hs.hello(this.clock.wall()), 1);
    this._deadline = this.timers.set(() => this._fail('error',
      `agent '${this.agent}' did not answer the handshake within ${HANDSHAKE_TIMEOUT} s; is it online?`), HANDSHAKE_TIMEOUT);
    const early = this.early;
    this.early = [];
    for (const msg of early) if (this.state === 'handshaking' && msg[0] === 0x81) this._onHandshake(msg);
  }

  _onHandshake(msg) {
    let result;
    try {
      result = this.hs.onReply(msg);
    } catch (e) {
      if (e instanceof HandshakeRefused) this._fail('refused', `agent '${this.agent}' refused the session: ${e.message}`);
      else if (e instanceof HandshakeError) this._fail('error', `handshake with '${this.agent}' failed: ${e.message}`);
      else throw e;
      return;
    }
    this.timers.clear(this._deadline);
    this._deadline = null;
    this.accepted = this.hs.accepted;
    this.channel = new Channel(new FrameCipher(result.keys.c2a, Direction.C2A), new FrameCipher(result.keys.a2c, Direction.A2C),
      { autoConsume: false, ...(this.request.window ? { windowBytes: this.request.window } : {}) });
    this.state = 'open';
    this.publish(this.c2aTopic(), result.confirm, 1);
    this._emit({ type: 'accepted', extra: this.accepted, recorded: this.accepted.recorded === true });
    this._keepalive = this.timers.set(() => this._sendKeepalive(), KEEPALIVE);
    const early = this.early;
    this.early = [];
    for (const d of early) this._onDatagram(d);
    this._pumpInput();
    this.flush();
  }

  _verifiedStatus() {
    if (this.statusRaw === null || this.agentKey === null) return null;
    try {
      return readStatus(this.statusRaw, this.agentKey);
    } catch (e) {
      if (e instanceof BadDocument) return null;
      throw e;
    }
  }

  _onStatus(payload) {
    this.statusRaw = payload;
    const status = this._verifiedStatus();
    if (this.channel === null || status === null) return;
    if (!status.online && this._offline === null) {
      this._emit({ type: 'agent-offline', grace: OFFLINE_GRACE });
      this._offline = this.timers.set(() => this._fail('lost', `agent '${this.agent}' went offline`), OFFLINE_GRACE);
    } else if (status.online && this._offline !== null) {
      this.timers.clear(this._offline);
      this._offline = null;
      this._emit({ type: 'agent-online' });
    }
  }

  _onDatagram(payload) {
    const now = this.clock.mono();
    const frames = this.channel.receive(payload, now);
    for (const f of frames) {
      const entry = { seq: f.seq, done: false };
      this._consumeQueue.push(entry);
      if (f.type === FrameType.DATA || f.type === FrameType.STDERR) {
        this.onOutput(f.payload, () => this._done(entry), f.type === FrameType.STDERR);
        continue;
      }
      entry.done = true;
      if (f.type === FrameType.EXIT) {
        try {
          const doc = loads(f.payload);
          this.exit = { code: doc.code ?? null, signal: doc.signal ?? null };
        } catch {
          this.exit = { code: null, signal: null };
        }
        this._emit({ type: 'exit', ...this.exit });
      } else if (f.type === FrameType.NOTICE) {
        let text;
        try { text = fromUtf8(f.payload); } catch { text = '(undecodable notice)'; }
        this._emit({ type: 'notice', text });
      } else if (f.type === FrameType.CLOSE) {
        // 'detached': another client attached the session (the agent said so in a NOTICE).
        let reason = '';
        try { reason = fromUtf8(f.payload); } catch { reason = ''; }
        this.peerCloseReason = reason;
        this._emit({ type: 'peer-closed', reason });
      }
    }
    this._advance();
    if (this.state === 'open') this._pumpInput(); // an ack may have opened the window for queued input
    this.flush();
    if (this.channel.peerClosed && this.state === 'open') {
      // Our CLOSE carries the final ack of everything the agent sent (once written).
      this._closeWhenConsumed = true;
      this._maybeFinish();
    }
  }

  _done(entry) {
    if (entry.done) return;
    entry.done = true;
    if (this.state === 'closed' || this.channel === null) return;
    this._advance();
    this.flush();
    this._maybeFinish();
  }

  _advance() {
    let upto = 0;
    while (this._consumeQueue.length && this._consumeQueue[0].done) upto = this._consumeQueue.shift().seq;
    if (upto) this.channel.consume(upto, this.clock.mono());
  }

  _maybeFinish() {
    if (!this._closeWhenConsumed || this._consumeQueue.length || this.state !== 'open') return;
    const now = this.clock.mono();
    this.channel.close(now);
    this.channel.tick(now);
    this.flush();
    this._stop();
    this._emit({ type: 'closed', exit: this.exit, reason: this.peerCloseReason });
  }

  // ----- outgoing -----

  flush() {
    const ch = this.channel;
    if (ch === null) return;
    for (const [blob, qos] of ch.takeOutgoing()) this.publishFrame(this.c2aTopic(), blob, qos);
    this._schedule(ch.nextDeadline());
  }

  _schedule(deadline) {
    if (this.state === 'closed') return;
    if (deadline === null) {
      if (this._timer !== null) this.timers.clear(this._timer);
      this._timer = null;
      return;
    }
    if (this._timer !== null && this._timerAt <= deadline) return;
    if (this._timer !== null) this.timers.clear(this._timer);
    this._timerAt = deadline;
    this._timer = this.timers.set(() => this._tick(), Math.max(0, deadline - this.clock.mono()));
  }

  _tick() {
    this._timer = null;
    if (this.channel !== null && this.state === 'open') {
      this.channel.tick(this.clock.mono());
      this._pumpInput();
      this.flush();
    }
  }

  _sendKeepalive() {
    this._keepalive = null;
    if (this.state !== 'open') return;
    this.channel.keepalive(this.clock.mono());
    this.flush();
    this._keepalive = this.timers.set(() => this._sendKeepalive(), KEEPALIVE);
  }

  // Keystrokes and pastes. Returns false if the input was dropped (queue full).
  sendInput(data) {
    if (typeof data === 'string') data = utf8(data);
    if (!data.length || this.state === 'closed') return true;
    if (this.inputQueued + data.length > MAX_INPUT_QUEUE) return false;
    this.inputQueue.push(data);
    this.inputQueued += data.length;
    if (this.state === 'open') {
      this._pumpInput();
      this.flush();
    }
    return true;
  }

  _pumpInput() {
    const ch = this.channel;
    const now = this.clock.mono();
    while (this.inputQueue.length && !ch.closed) {
      const room = Math.min(ch.sendCapacity(), MAX_PAYLOAD);
      if (room <= 0) break;
      const head = this.inputQueue[0];
      const part = head.subarray(0, room);
      if (part.length === head.length) this.inputQueue.shift();
      else this.inputQueue[0] = head.subarray(room);
      this.inputQueued -= part.length;
      ch.send(FrameType.DATA, part, now);
    }
  }

  _control(ftype, payload) {
    if (this.state !== 'open' || this.channel.closed) return;
    this._pumpInput(); // keep control frames in order with queued input
    this.channel.send(ftype, payload, this.clock.mono());
    this.flush();
  }

  resize(cols, rows) {
    const p = new Uint8Array(4);
    const v = new DataView(p.buffer);
    v.setUint16(0, Math.max(1, Math.min(65535, cols)));
    v.setUint16(2, Math.max(1, Math.min(65535, rows)));
    this._control(FrameType.RESIZE, p);
  }

  signal(n) { this._control(FrameType.SIGNAL, Uint8Array.of(n)); }

  // After an MQTT reconnect: resend what the agent has not received.
  reconnected() {
    if (this.state === 'open') {
      this.channel.resendAll(this.clock.mono());
      this.flush();
    }
  }

  // The user closes the tab: CLOSE (the agent hangs up the shell). `detach`: the owner
  // leaves the shell running for a later attach (the agent ends it if the grant's
  // detach_timeout is 0); `end`: a moderator watching ends the session (anyone else
  // watching or joining just leaves), as ClientSessionCore.close.
  close({ detach = false, end = false } = {}) {
    if (this.state === 'open' && !this.channel.closed) {
      const now = this.clock.mono();
      this.channel.close(now, utf8(detach ? 'detach' : end ? 'end' : ''));
      this.channel.tick(now);
      this.flush();
    }
    if (this.state !== 'closed') {
      this._stop();
      this._emit({ type: 'closed', exit: this.exit, local: true });
    }
  }
}
