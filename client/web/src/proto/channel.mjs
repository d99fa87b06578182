// Reliable, flow-controlled, encrypted channel over an unreliable datagram path (sans-IO),
// a port of tether/channel.py. Time (seconds, monotonic) is always passed in.
//
// The header ack on every frame is the highest seq this side has *consumed*; it alone
// frees the sender's credit. In the browser, a DATA frame is consumed only when xterm.js
// has written it (its write callback), so a flood of output cannot outrun the page.
import { FrameError, FrameType } from './frames.mjs';

export const DEFAULT_WINDOW_BYTES = 1 << 20;
export const DEFAULT_WINDOW_FRAMES = 512;
export const ACK_DELAY = 0.02;
export const NACK_HOLDOFF = 0.05;
export const RTO_MIN = 0.5;
export const RTO_MAX = 4.0;
export const MAX_NACK_RANGES = 32;
export const KEEPALIVE = 30.0;
const UNRELIABLE = new Set([FrameType.ACK]);
const QOS0 = new Set([FrameType.DATA, FrameType.STDERR, FrameType.ACK]);

export class ChannelClosed extends Error {}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

export class Channel {
  constructor(sendCipher, recvCipher, { windowBytes = DEFAULT_WINDOW_BYTES, windowFrames = DEFAULT_WINDOW_FRAMES, autoConsume = true } = {}) {
    this.sendCipher = sendCipher;
    this.recvCipher = recvCipher;
    this.windowBytes = windowBytes;
    this.windowFrames = windowFrames;
    this.autoConsume = autoConsume;
    this.stats = { framesSent: 0, framesResent: 0, framesReceived: 0, duplicates: 0, dropped: 0, badFrames: 0, bytesSent: 0, bytesReceived: 0 };
    // send side
    this._nextSeq = 1;
    this._nextAckNo = 1;
    this._unacked = new Map(); // seq -> {blob, size, qos, sentAt}, in seq order
    this._peerConsumed = 0;
    this._peerReceived = 0;
    this._inFlight = 0;
    this._rto = RTO_MIN;
    this._closed = false;
    // receive side
    this._delivered = 0;
    this._consumed = 0;
    this._ackedConsumed = 0;
    this._unackedBytes = 0;
    this._unackedFrames = 0;
    this._buffer = new Map();
    this._sizes = new Map();
    this._lastPeerAckNo = 0;
    this._ackDue = null;
    this._lastNack = -1.0;
    this._outbox = [];
    this.peerClosed = false;
    this.lastHeard = null;
  }

  // ----- sending -----

  get closed() {
    return this._closed;
  }

  sendCapacity() {
    if (this._unacked.size >= this.windowFrames) return 0;
    return Math.max(0, this.windowBytes - this._inFlight);
  }

  send(ftype, payload, now) {
    if (this._closed) throw new ChannelClosed('channel already closed');
    if (UNRELIABLE.has(ftype)) throw new Error('ACK frames are sent by the channel itself');
    const seq = this._nextSeq++;
    const blob = this.sendCipher.seal(ftype, seq, this._consumed, payload);
    const qos = QOS0.has(ftype) ? 0 : 1;
    this._unacked.set(seq, { blob, size: payload.length, qos, sentAt: now });
    this._inFlight += payload.length;
    this._outbox.push([blob, qos]);
    this.stats.framesSent += 1;
    this.stats.bytesSent += payload.length;
    this._ackSent(now);
    if (ftype === FrameType.CLOSE) this._closed = true;
    return seq;
  }

  close(now, reason = new Uint8Array(0)) {
    if (!this._closed) this.send(FrameType.CLOSE, reason, now);
  }

  get allAcked() {
    return this._peerReceived >= this._nextSeq - 1 || this._unacked.size === 0;
  }

  _onPeerConsumed(upto, now) {
    if (upto <= this._peerConsumed || upto >= this._nextSeq) return;
    for (let seq = this._peerConsumed + 1; seq <= upto; seq++) {
      const sent = this._unacked.get(seq);
      if (sent !== undefined) {
        this._unacked.delete(seq);
        this._inFlight -= sent.size;
      }
    }
    this._peerConsumed = upto;
    this._peerReceived = Math.max(this._peerReceived, upto);
    this._rto = RTO_MIN;
  }

  _onAckFrame(payload, now) {
    if (payload.length < 8 || (payload.length - 8) % 16) {
      this.stats.badFrames += 1;
      return;
    }
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const big = (off) => {
      const v = view.getBigUint64(off);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    };
    const received = big(0);
    if (this._peerReceived < received && received < this._nextSeq) {
      this._peerReceived = received;
      this._rto = RTO_MIN;
    }
    for (let off = 8; off < payload.length; off += 16) {
      const first = big(off);
      const last = big(off + 8);
      const hi = Math.min(last, this._nextSeq - 1);
      for (let seq = Math.max(first, this._peerReceived + 1); seq <= hi; seq++) {
        const sent = this._unacked.get(seq);
        if (sent !== undefined && now - sent.sentAt >= NACK_HOLDOFF) this._resend(seq, sent, now);
      }
    }
  }

  _resend(seq, sent, now) {
    sent.sentAt = now;
    this._outbox.push([sent.blob, sent.qos]);
    this.stats.framesResent += 1;
  }

  // ----- receiving -----

  // Feed one datagram; returns the reliable frames now deliverable, in order.
  receive(blob, now) {
    let frame;
    try {
      frame = this.recvCipher.open(blob);
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      this.stats.badFrames += 1;
      return [];
    }
    this.lastHeard = now;
    if (frame.type === FrameType.ACK) {
      if (frame.seq <= this._lastPeerAckNo) {
        this.stats.duplicates += 1;
        return [];
      }
      this._lastPeerAckNo = frame.seq;
      this._onPeerConsumed(frame.ack, now);
      this._onAckFrame(frame.payload, now);
      return [];
    }
    this._onPeerConsumed(frame.ack, now);
    this.stats.framesReceived += 1;
    const seq = frame.seq;
    if (seq <= this._delivered || this._buffer.has(seq)) {
      this.stats.duplicates += 1;
      this._scheduleAck(now); // the peer may have missed our ack
      return [];
    }
    if (seq > this._delivered + 2 * this.windowFrames) {
      this.stats.dropped += 1;
      return [];
    }
    this._buffer.set(seq, frame);
    const out = [];
    for (;;) {
      const nxt = this._buffer.get(this._delivered + 1);
      if (nxt === undefined) break;
      this._buffer.delete(this._delivered + 1);
      this._delivered += 1;
      this._sizes.set(this._delivered, nxt.payload.length);
      this.stats.bytesReceived += nxt.payload.length;
      out.push(nxt);
      if (nxt.type === FrameType.CLOSE) this.peerClosed = true;
    }
    if (this._buffer.size && now - this._lastNack >= NACK_HOLDOFF) {
      this._ackDue = now; // a gap: tell the sender at once
    } else {
      this._scheduleAck(now + ACK_DELAY);
    }
    if (this.autoConsume && out.length) this.consume(this._delivered, now);
    return out;
  }

  // The application has finished with every frame up to `upto`; free its credit.
  consume(upto, now) {
    upto = Math.min(upto, this._delivered);
    for (let seq = this._consumed + 1; seq <= upto; seq++) {
      this._unackedBytes += this._sizes.get(seq) ?? 0;
      this._sizes.delete(seq);
      this._unackedFrames += 1;
    }
    this._consumed = Math.max(this._consumed, upto);
    if (
      this._unackedBytes >= Math.floor(this.windowBytes / 4) ||
      this._unackedFrames >= Math.floor(this.windowFrames / 4) ||
      this.peerClosed
    ) {
      this._ackDue = now;
    }
  }

  get deliveredSeq() {
    return this._delivered;
  }

  get consumedSeq() {
    return this._consumed;
  }

  _scheduleAck(when) {
    if (this._ackDue === null || when < this._ackDue) this._ackDue = when;
  }

  _ackSent(now) {
    if (!this._buffer.size && this._consumed === this._delivered) this._ackDue = null;
    this._ackedConsumed = this._consumed;
    this._unackedBytes = 0;
    this._unackedFrames = 0;
  }

  _sendAck(now) {
    const missing = [];
    let expect = this._delivered + 1;
    for (const seq of [...this._buffer.keys()].sort((a, b) => a - b)) {
      if (seq > expect && missing.length < MAX_NACK_RANGES) missing.push([expect, seq - 1]);
      expect = seq + 1;
    }
    const payload = new Uint8Array(8 + 16 * missing.length);
    payload.set(u64(this._delivered), 0);
    missing.forEach(([a, b], i) => {
      payload.set(u64(a), 8 + 16 * i);
      payload.set(u64(b), 16 + 16 * i);
    });
    const ackNo = this._nextAckNo++;
    this._outbox.push([this.sendCipher.seal(FrameType.ACK, ackNo, this._consumed, payload), 0]);
    if (missing.length) this._lastNack = now;
    this._ackDue = null;
    this._ackSent(now);
  }

  // ----- time -----

  // Send due acks and retransmit what the peer has not received within the RTO.
  tick(now) {
    if (this._ackDue !== null && now >= this._ackDue) this._sendAck(now);
    if (this._unacked.size) {
      const oldest = this._unacked.values().next().value;
      if (now >= oldest.sentAt + this._rto) {
        let resent = false;
        for (const [seq, sent] of this._unacked) {
          if (seq > this._peerReceived) {
            this._resend(seq, sent, now);
            resent = true;
          } else {
            sent.sentAt = now; // received, awaiting consumption: not lost
          }
        }
        if (!resent) {
          // Zero-window probe: the peer drops it as a duplicate and acks again.
          const [seq, sent] = this._unacked.entries().next().value;
          this._resend(seq, sent, now);
        }
        this._rto = Math.min(this._rto * 2, RTO_MAX);
      }
    }
  }

  nextDeadline() {
    const times = [];
    if (this._ackDue !== null) times.push(this._ackDue);
    if (this._unacked.size) times.push(this._unacked.values().next().value.sentAt + this._rto);
    return times.length ? Math.min(...times) : null;
  }

  keepalive(now) {
    this._ackDue = now;
  }

  resendAll(now) {
    for (const [seq, sent] of this._unacked) if (seq > this._peerReceived) this._resend(seq, sent, now);
    this._ackDue = now;
  }

  // [datagram, qos] pairs to publish, in order.
  takeOutgoing() {
    const out = this._outbox;
    this._outbox = [];
    return out;
  }
}
