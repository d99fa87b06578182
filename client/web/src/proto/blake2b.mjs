// BLAKE2b with key, salt and personalisation (RFC 7693), as Python's hashlib.blake2b.
// libsodium.js exposes no keyed+personalised hash over data, so this is done here, in
// 32-bit halves. Only used for key derivation and transcript hashes: not a hot path.

const IV32 = new Uint32Array([
  0xf3bcc908, 0x6a09e667, 0x84caa73b, 0xbb67ae85, 0xfe94f82b, 0x3c6ef372, 0x5f1d36f1, 0xa54ff53a,
  0xade682d1, 0x510e527f, 0x2b3e6c1f, 0x9b05688c, 0xfb41bd6b, 0x1f83d9ab, 0x137e2179, 0x5be0cd19,
]);

const SIGMA8 = [
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3, 11, 8, 12,
  0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4, 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8, 9, 0, 5, 7, 2, 4, 10,
  15, 14, 1, 11, 12, 6, 8, 3, 13, 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9, 12, 5, 1, 15, 14, 13, 4, 10, 0,
  7, 6, 3, 9, 2, 8, 11, 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10, 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7,
  1, 4, 10, 5, 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
  15, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
];
const SIGMA82 = new Uint8Array(SIGMA8.map((x) => x * 2));

const v = new Uint32Array(32);
const m = new Uint32Array(32);

function add64aa(a, b) {
  const o0 = v[a] + v[b];
  let o1 = v[a + 1] + v[b + 1];
  if (o0 >= 0x100000000) o1++;
  v[a] = o0;
  v[a + 1] = o1;
}

function add64ac(a, b0, b1) {
  let o0 = v[a] + b0;
  if (b0 < 0) o0 += 0x100000000;
  let o1 = v[a + 1] + b1;
  if (o0 >= 0x100000000) o1++;
  v[a] = o0;
  v[a + 1] = o1;
}

function g(a, b, c, d, ix, iy) {
  const x0 = m[ix];
  const x1 = m[ix + 1];
  const y0 = m[iy];
  const y1 = m[iy + 1];
  add64aa(a, b);
  add64ac(a, x0, x1);
  let xor0 = v[d] ^ v[a];
  let xor1 = v[d + 1] ^ v[a + 1];
  v[d] = xor1;
  v[d + 1] = xor0;
  add64aa(c, d);
  xor0 = v[b] ^ v[c];
  xor1 = v[b + 1] ^ v[c + 1];
  v[b] = (xor0 >>> 24) ^ (xor1 << 8);
  v[b + 1] = (xor1 >>> 24) ^ (xor0 << 8);
  add64aa(a, b);
  add64ac(a, y0, y1);
  xor0 = v[d] ^ v[a];
  xor1 = v[d + 1] ^ v[a + 1];
  v[d] = (xor0 >>> 16) ^ (xor1 << 16);
  v[d + 1] = (xor1 >>> 16) ^ (xor0 << 16);
  add64aa(c, d);
  xor0 = v[b] ^ v[c];
  xor1 = v[b + 1] ^ v[c + 1];
  v[b] = (xor1 >>> 31) ^ (xor0 << 1);
  v[b + 1] = (xor0 >>> 31) ^ (xor1 << 1);
}

function compress(ctx, last) {
  for (let i = 0; i < 16; i++) {
    v[i] = ctx.h[i];
    v[i + 16] = IV32[i];
  }
  v[24] ^= ctx.t;
  v[25] ^= ctx.t / 0x100000000;
  if (last) {
    v[28] = ~v[28];
    v[29] = ~v[29];
  }
  const b = ctx.b;
  for (let i = 0; i < 32; i++) m[i] = b[4 * i] ^ (b[4 * i + 1] << 8) ^ (b[4 * i + 2] << 16) ^ (b[4 * i + 3] << 24);
  for (let i = 0; i < 12; i++) {
    const s = i * 16;
    g(0, 8, 16, 24, SIGMA82[s], SIGMA82[s + 1]);
    g(2, 10, 18, 26, SIGMA82[s + 2], SIGMA82[s + 3]);
    g(4, 12, 20, 28, SIGMA82[s + 4], SIGMA82[s + 5]);
    g(6, 14, 22, 30, SIGMA82[s + 6], SIGMA82[s + 7]);
    g(0, 10, 20, 30, SIGMA82[s + 8], SIGMA82[s + 9]);
    g(2, 12, 22, 24, SIGMA82[s + 10], SIGMA82[s + 11]);
    g(4, 14, 16, 26, SIGMA82[s + 12], SIGMA82[s + 13]);
    g(6, 8, 18, 28, SIGMA82[s + 14], SIGMA82[s + 15]);
  }
  for (let i = 0; i < 16; i++) ctx.h[i] = ctx.h[i] ^ v[i] ^ v[i + 16];
}

function word(bytes, off) {
  return bytes[off] ^ (bytes[off + 1] << 8) ^ (bytes[off + 2] << 16) ^ (bytes[off + 3] << 24);
}

function pad16(x, what) {
  const out = new Uint8Array(16);
  if (x) {
    if (x.length > 16) throw new Error(`${what} longer than 16 bytes`);
    out.set(x);
  }
  return out;
}

export class Blake2b {
  constructor({ digestSize = 64, key = null, salt = null, person = null } = {}) {
    if (digestSize < 1 || digestSize > 64) throw new Error('bad digest size');
    if (key && key.length > 64) throw new Error('key longer than 64 bytes');
    this.outlen = digestSize;
    this.b = new Uint8Array(128);
    this.h = new Uint32Array(16);
    this.t = 0;
    this.c = 0;
    const s = pad16(salt, 'salt');
    const p = pad16(person, 'person');
    for (let i = 0; i < 16; i++) this.h[i] = IV32[i];
    const keylen = key ? key.length : 0;
    this.h[0] ^= 0x01010000 ^ (keylen << 8) ^ digestSize;
    for (let i = 0; i < 4; i++) {
      this.h[8 + i] ^= word(s, 4 * i);
      this.h[12 + i] ^= word(p, 4 * i);
    }
    if (keylen) {
      this.update(key);
      this.c = 128;
    }
  }

  update(data) {
    for (let i = 0; i < data.length; i++) {
      if (this.c === 128) {
        this.t += this.c;
        compress(this, false);
        this.c = 0;
      }
      this.b[this.c++] = data[i];
    }
    return this;
  }

  digest() {
    this.t += this.c;
    while (this.c < 128) this.b[this.c++] = 0;
    compress(this, true);
    const out = new Uint8Array(this.outlen);
    for (let i = 0; i < this.outlen; i++) out[i] = this.h[i >> 2] >>> (8 * (i & 3));
    return out;
  }
}

export function blake2b(data, opts) {
  return new Blake2b(opts).update(data).digest();
}
