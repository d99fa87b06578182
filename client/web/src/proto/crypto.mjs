// The primitives of docs/protocol.md §1, on libsodium (the same library as PyNaCl).
import sodium from 'libsodium-wrappers-sumo';
import { Blake2b } from './blake2b.mjs';
import { utf8 } from './encoding.mjs';

export { sodium };
export const ready = sodium.ready;

// KDF(key, data, person): keyed BLAKE2b-256 with a personalisation label.
export function kdf(key, person, data) {
  return new Blake2b({ digestSize: 32, key, person: utf8(person) }).update(data).digest();
}

// Unkeyed BLAKE2b-256 of the concatenated parts, with a personalisation label.
export function personalHash(person, ...parts) {
  const h = new Blake2b({ digestSize: 32, person: utf8(person) });
  for (const p of parts) h.update(p);
  return h.digest();
}

export function aeadSeal(key, nonce, ad, plaintext) {
  return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
}

// Returns null when the ciphertext does not authenticate.
export function aeadOpen(key, nonce, ad, ciphertext) {
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
  } catch {
    return null;
  }
}

export function randomBytes(n) {
  return sodium.randombytes_buf(n);
}

// An Ed25519 signing key from its 32-byte seed: {seed, publicKey, privateKey (64 bytes)}.
export function signingKeyFromSeed(seed) {
  const kp = sodium.crypto_sign_seed_keypair(seed);
  return { seed, publicKey: kp.publicKey, privateKey: kp.privateKey };
}

export function sign(key, message) {
  return sodium.crypto_sign_detached(message, key.privateKey);
}

export function verify(publicKey, message, signature) {
  try {
    return sodium.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

// An X25519 key pair: {secret, publicKey}. `secret` may be given (test vectors).
export function x25519Pair(secret = null) {
  const s = secret ?? sodium.randombytes_buf(32);
  return { secret: s, publicKey: sodium.crypto_scalarmult_base(s) };
}
