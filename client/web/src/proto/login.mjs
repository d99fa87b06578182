// Console login (docs/protocol.md §13.1, tether/console_login.py): the Ed25519 identity
// key is derived in the browser from the passphrase with Argon2id, and the broker login
// of the console slot NAME.c is a one-time token signed with it, made for each connection;
// neither the server nor the broker ever sees the passphrase or the signing key, and no
// token logs in twice.
//   salt = BLAKE2b(digest 16, person "tether-console", authority_ed25519 || utf8(username))
//   out  = Argon2id13(64 bytes, passphrase, salt, OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
//   seed = out[0:32]  (out[32:64] is the CLI slots' broker password, unused here)
//   token = "tc1." b64url(ts (u64 BE) || nonce (16) || Ed25519(seed, "tether-console-mqtt-v1" 0
//           username 0 client_id 0 ts nonce))
import { blake2b } from './blake2b.mjs';
import { randomBytes, sign, signingKeyFromSeed, sodium } from './crypto.mjs';
import { b64e, concat, u64, utf8 } from './encoding.mjs';

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

// A one-time broker password for the console slot (username = client id = NAME.c).
export function brokerToken(key, username, clientId, now, nonce = randomBytes(16)) {
  const tsNonce = concat(u64(Math.floor(now)), nonce);
  const zero = new Uint8Array(1);
  const message = concat(utf8('tether-console-mqtt-v1'), zero, utf8(username), zero, utf8(clientId), zero, tsNonce);
  return `tc1.${b64e(concat(tsNonce, sign(key, message)))}`;
}
