// Grants are PASETO v4.public tokens (tether/grants.py, tether/paseto.py). The console
// only needs their claims for display; verify() checks the authority's signature too.
import { verify as edVerify } from './crypto.mjs';
import { b64d, concat, fromUtf8, utf8 } from './encoding.mjs';

const HEADER = 'v4.public.';
const IMPLICIT = 'tether-grant-v1';

function le64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function pae(pieces) {
  const parts = [le64(pieces.length)];
  for (const p of pieces) parts.push(le64(p.length), p);
  return concat(...parts);
}

function split(token) {
  if (typeof token !== 'string' || !token.startsWith(HEADER)) throw new Error('not a v4.public token');
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('malformed token');
  const raw = b64d(parts[2]);
  if (raw.length <= 64) throw new Error('token too short');
  return { m: raw.subarray(0, raw.length - 64), sig: raw.subarray(raw.length - 64) };
}

export function claims(token) {
  return JSON.parse(fromUtf8(split(token).m));
}

export function verifyGrant(token, authorityKey) {
  const { m, sig } = split(token);
  const msg = pae([utf8(HEADER), m, new Uint8Array(0), utf8(IMPLICIT)]);
  if (!edVerify(authorityKey, msg, sig)) throw new Error('grant signature does not verify');
  return JSON.parse(fromUtf8(m));
}
