// Session frames, as tether/frames.py:
//   version u8 | type u8 | flags u8 | epoch u32 | seq u64 | ack u64 | ciphertext+tag
// The header is the AEAD's associated data; the XChaCha20-Poly1305 nonce is derived from
// (direction, number space, epoch, seq) and never sent. The key changes every 2**20 frames.
import { aeadOpen, aeadSeal, kdf } from './crypto.mjs';
import { utf8 } from './encoding.mjs';

export const VERSION = 1;
export const HEADER_LEN = 23;
export const TAG_LEN = 16;
export const EPOCH_BITS = 20;
export const MAX_PAYLOAD = 64 * 1024;
export const MAX_EPOCH_AHEAD = 4;

export const Direction = Object.freeze({ C2A: 0, A2C: 1 });

export const FrameType = Object.freeze({
  DATA: 1,
  STDERR: 2,
  EOF: 3,
  RESIZE: 4,
  SIGNAL: 5,
  EXIT: 6,
  CLOSE: 7,
  ACK: 8,
  NOTICE: 9,
});
export const FrameTypeName = Object.freeze(Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k])));

export class FrameError extends Error {}

const REKEY = utf8('rekey');
const nextKey = (key) => kdf(key, 'tether-epoch', REKEY);
const epochOf = (seq) => Math.floor(seq / 2 ** EPOCH_BITS);

export class FrameCipher {
  constructor(key, direction) {
    if (!(key instanceof Uint8Array) || key.length !== 32) throw new Error('frame key must be 32 bytes');
    this.direction = direction;
    this.keys = new Map([[0, key]]);
    this.newest = 0;
  }

  key(epoch) {
    let key = this.keys.get(epoch);
    if (key === undefined) {
      if (epoch > 2 ** 24) throw new FrameError('epoch out of range');
      let start = 0;
      for (const e of this.keys.keys()) if (e < epoch && e > start) start = e;
      key = this.keys.get(start);
      for (let e = start + 1; e <= epoch; e++) {
        key = nextKey(key);
        this.keys.set(e, key);
      }
    }
    return key;
  }

  nonce(ftype, epoch, seq) {
    const n = new Uint8Array(24);
    const view = new DataView(n.buffer);
    n[0] = this.direction;
    n[1] = ftype === FrameType.ACK ? 1 : 0;
    view.setUint32(2, epoch);
    view.setBigUint64(6, BigInt(seq));
    return n;
  }

  seal(ftype, seq, ack, payload, flags = 0) {
    if (payload.length > MAX_PAYLOAD) throw new Error(`frame payload ${payload.length} exceeds ${MAX_PAYLOAD}`);
    const epoch = epochOf(seq);
    const header = new Uint8Array(HEADER_LEN);
    const view = new DataView(header.buffer);
    header[0] = VERSION;
    header[1] = ftype;
    header[2] = flags;
    view.setUint32(3, epoch);
    view.setBigUint64(7, BigInt(seq));
    view.setBigUint64(15, BigInt(ack));
    const sealed = aeadSeal(this.key(epoch), this.nonce(ftype, epoch, seq), header, payload);
    this.newest = Math.max(this.newest, epoch);
    const out = new Uint8Array(HEADER_LEN + sealed.length);
    out.set(header);
    out.set(sealed, HEADER_LEN);
    return out;
  }

  // Returns {type, flags, seq, ack, payload}; throws FrameError for anything not authentic.
  open(blob) {
    if (blob.length < HEADER_LEN + TAG_LEN) throw new FrameError('frame too short');
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const version = blob[0];
    const ftype = blob[1];
    const flags = blob[2];
    const epoch = view.getUint32(3);
    const seqBig = view.getBigUint64(7);
    const ackBig = view.getBigUint64(15);
    if (version !== VERSION) throw new FrameError(`unknown frame version ${version}`);
    if (!(ftype in FrameTypeName)) throw new FrameError(`unknown frame type ${ftype}`);
    if (BigInt(epoch) !== seqBig >> BigInt(EPOCH_BITS)) throw new FrameError('epoch does not match seq');
    if (epoch > this.newest + MAX_EPOCH_AHEAD) throw new FrameError('epoch too far ahead of the last authenticated frame');
    if (seqBig > BigInt(Number.MAX_SAFE_INTEGER) || ackBig > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FrameError('sequence number out of range');
    }
    const seq = Number(seqBig);
    const header = blob.subarray(0, HEADER_LEN);
    const payload = aeadOpen(this.key(epoch), this.nonce(ftype, epoch, seq), header, blob.subarray(HEADER_LEN));
    if (payload === null) throw new FrameError('frame failed authentication');
    this.newest = Math.max(this.newest, epoch);
    return { type: ftype, flags, seq, ack: Number(ackBig), payload };
  }
}
