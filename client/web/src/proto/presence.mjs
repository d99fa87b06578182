// Presence and status documents, as tether/presence.py (signed, retained).
import { b64d } from './encoding.mjs';
import { BadDocument, openDocument, peekDocument } from './signed.mjs';

export const DOMAIN = 'presence';
export const STATUS_DOMAIN = 'status';
export const HEARTBEAT = 60.0;

// Parse a presence document; verify it with the agent's key if known, else with the key
// inside the document itself (a self-signature, as `tether ls`).
export function readPresence(blob, expectedKey = null) {
  if (expectedKey !== null) return openDocument(expectedKey, DOMAIN, blob);
  const doc = peekDocument(blob);
  let key;
  try {
    key = b64d(String(doc.ed25519));
  } catch {
    throw new BadDocument('presence without a key');
  }
  if (doc.ed25519 === undefined) throw new BadDocument('presence without a key');
  return openDocument(key, DOMAIN, blob);
}

export function readStatus(blob, key) {
  return openDocument(key, STATUS_DOMAIN, blob);
}
