// Console login (console contract): an Ed25519 identity key and the broker password are
// both derived in the browser from the passphrase with Argon2id; neither the server nor
// the broker ever sees the passphrase or the signing key.
//   salt = BLAKE2b(digest 16, person "tether-console", authority_ed25519 || utf8(username))
//   out  = Argon2id13(64 bytes, passphrase, salt, OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
//   seed = out[0:32]; mqtt_password = b64url(out[32:64])
import { blake2b } from './blake2b.mjs';
import { signingKeyFromSeed, sodium } from './crypto.mjs';
import { b64e, concat, utf8 } from './encoding.mjs';

export function loginSalt(authorityEd25519, username) {
  return blake2b(concat(authorityEd25519, utf8(username)), { digestSize: 16, person: utf8('tether-console') });
}

export function deriveLogin(authorityEd25519, username, passphrase) {
  const out = sodium.crypto_pwhash(
    64,
    utf8(passphrase),
    loginSalt(authorityEd25519, username),
    sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE,
    sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
  return { key: signingKeyFromSeed(out.slice(0, 32)), mqttPassword: b64e(out.slice(32, 64)) };
}

// The console's broker username: one console slot per user.
export const consoleSlot = (username) => `${username}.c`;
