// Signed documents, as tether/signed.py: sig (64 bytes) || canonical JSON body, where
// sig = Ed25519("tether-doc" 0x00 domain 0x00 body). Verifiers check the bytes received.
import { sign, verify } from './crypto.mjs';
import { concat, dumps, loads, utf8 } from './encoding.mjs';

export const SIG_LEN = 64;

export class BadDocument extends Error {}

const message = (domain, body) => concat(utf8('tether-doc\0'), utf8(domain), utf8('\0'), body);

export function signDocument(key, domain, doc) {
  const body = dumps(doc);
  return concat(sign(key, message(domain, body)), body);
}

export function peekDocument(blob) {
  if (blob.length <= SIG_LEN) throw new BadDocument('document too short');
  let doc;
  try {
    doc = loads(blob.subarray(SIG_LEN));
  } catch {
    throw new BadDocument('document is not JSON');
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new BadDocument('document is not a JSON object');
  return doc;
}

export function openDocument(publicKey, domain, blob) {
  const doc = peekDocument(blob);
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32 ||
      !verify(publicKey, message(domain, blob.subarray(SIG_LEN)), blob.subarray(0, SIG_LEN))) {
    throw new BadDocument(`bad ${domain} signature`);
  }
  return doc;
}
