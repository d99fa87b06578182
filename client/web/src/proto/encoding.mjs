// Shared encodings, as tether/encoding.py: unpadded base64url and canonical JSON
// (orjson with OPT_SORT_KEYS: sorted keys, no whitespace). Also small byte helpers.

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export const utf8 = (s) => enc.encode(s);
export const fromUtf8 = (b) => dec.decode(b);

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

export function fromHex(s) {
  if (s.length % 2 || /[^0-9a-fA-F]/.test(s)) throw new Error('bad hex');
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64_INDEX = new Map(Array.from(B64, (c, i) => [c, i]));

export function b64e(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63];
  }
  return out;
}

export function b64d(text) {
  if (typeof text !== 'string' || text.includes('=')) throw new Error('expected unpadded base64url text');
  if (text.length % 4 === 1) throw new Error('bad base64url length');
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const c of text) {
    const v = B64_INDEX.get(c);
    if (v === undefined) throw new Error('bad base64url character');
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 255;
    }
  }
  return out;
}

// A number that must be written as a JSON float (Python float), e.g. 1700000000.0.
// Plain JS numbers that are integers are written as integers; timestamps use this.
export class Float {
  constructor(value) {
    this.value = value;
  }
}
export const float = (x) => new Float(x);

function floatText(x) {
  if (!Number.isFinite(x)) throw new Error('non-finite numbers are not JSON');
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  // orjson writes exponents without '+' (1e16, 1.5e-7).
  return String(x).replace('e+', 'e');
}

function write(v, out) {
  if (v === null || v === undefined) out.push('null');
  else if (v === true) out.push('true');
  else if (v === false) out.push('false');
  else if (v instanceof Float) out.push(floatText(v.value));
  else if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error('non-finite numbers are not JSON');
    out.push(Number.isInteger(v) ? String(v) : floatText(v));
  } else if (typeof v === 'string') out.push(JSON.stringify(v));
  else if (Array.isArray(v)) {
    out.push('[');
    v.forEach((x, i) => {
      if (i) out.push(',');
      write(x, out);
    });
    out.push(']');
  } else if (typeof v === 'object') {
    // orjson sorts by the UTF-8 bytes of keys; for the ASCII keys used here the same as code units.
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort(byUtf8);
    out.push('{');
    keys.forEach((k, i) => {
      if (i) out.push(',');
      out.push(JSON.stringify(k), ':');
      write(v[k], out);
    });
    out.push('}');
  } else throw new Error(`cannot encode ${typeof v} as JSON`);
}

function byUtf8(a, b) {
  const x = utf8(a);
  const y = utf8(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

export function dumpsText(obj) {
  const out = [];
  write(obj, out);
  return out.join('');
}

export const dumps = (obj) => utf8(dumpsText(obj));

export function loads(data) {
  return JSON.parse(typeof data === 'string' ? data : fromUtf8(data));
}

// Big-endian integer helpers. Sequence numbers stay below 2**53 in practice; u64 fields
// are read as Numbers and rejected if they do not fit exactly.
export function putU64(view, off, n) {
  view.setBigUint64(off, BigInt(n));
}
export function getU64(view, off) {
  const v = view.getBigUint64(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('u64 beyond 2**53');
  return Number(v);
}
export function u64(n) {
  const b = new Uint8Array(8);
  putU64(new DataView(b.buffer), 0, n);
  return b;
}
