// Presence and status documents, as tether/presence.py (signed, retained), with the same
// bounds: a document past any of them is refused, so one agent's oversized or malformed
// presence cannot slow or break the Instances page.
import { b64d } from './encoding.mjs';
import { BadDocument, openDocument, peekDocument } from './signed.mjs';

export const DOMAIN = 'presence';
export const STATUS_DOMAIN = 'status';
export const HEARTBEAT = 60.0;

export const MAX_PRESENCE_BYTES = 32 * 1024;
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY = 64; // characters (code points, as Python counts)
export const MAX_LABEL_VALUE = 256;
export const MAX_TEXT = 256; // platform and version
export const MAX_CAPABILITIES = 16;
export const MAX_CAPABILITY = 32;
export const MAX_STATUS_BYTES = 1024;

const chars = (s) => [...s].length;
// A field that is absent takes its default; one that is present, even as null, is checked.
const field = (doc, name, absent) => (Object.hasOwn(doc, name) ? doc[name] : absent);
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

// Parse a presence document; verify it with the agent's key if known, else with the key
// inside the document itself (a self-signature, as `tether ls`).
export function readPresence(blob, expectedKey = null) {
  if (blob.length > MAX_PRESENCE_BYTES) {
    throw new BadDocument(`presence document of ${blob.length} bytes (at most ${MAX_PRESENCE_BYTES})`);
  }
  let key = expectedKey;
  if (key === null) {
    const doc = peekDocument(blob);
    try {
      key = b64d(doc.ed25519);
    } catch {
      throw new BadDocument('presence without a key');
    }
  }
  return checkPresence(openDocument(key, DOMAIN, blob));
}

// Every field of a presence document has its documented type and size (Presence.from_doc).
export function checkPresence(doc) {
  if (typeof doc.name !== 'string' || !NAME.test(doc.name) || doc.name === 'all') {
    throw new BadDocument('name is not a valid agent name');
  }
  if (typeof doc.online !== 'boolean') throw new BadDocument('online is not true or false');
  if (typeof doc.seen !== 'number' || !Number.isFinite(doc.seen)) throw new BadDocument('seen is not a time');
  for (const name of ['ed25519', 'x25519']) {
    let key = null;
    try {
      key = typeof doc[name] === 'string' && doc[name].length <= 64 ? b64d(doc[name]) : null;
    } catch {
      key = null;
    }
    if (key === null || key.length !== 32) throw new BadDocument(`${name} is not a 32-byte key`);
  }
  const labels = field(doc, 'labels', {});
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels) ||
      Object.keys(labels).length > MAX_LABELS) {
    throw new BadDocument(`labels are not an object of at most ${MAX_LABELS} entries`);
  }
  for (const [k, v] of Object.entries(labels)) {
    if (!(chars(k) >= 1 && chars(k) <= MAX_LABEL_KEY && typeof v === 'string' && chars(v) <= MAX_LABEL_VALUE)) {
      throw new BadDocument(`a label is not KEY (1-${MAX_LABEL_KEY} characters) = text (at most ${MAX_LABEL_VALUE})`);
    }
  }
  for (const name of ['platform', 'version']) {
    const value = field(doc, name, '');
    if (typeof value !== 'string' || chars(value) > MAX_TEXT) {
      throw new BadDocument(`${name} is not text of at most ${MAX_TEXT} characters`);
    }
  }
  const caps = field(doc, 'capabilities', []);
  if (!(Array.isArray(caps) && caps.length <= MAX_CAPABILITIES &&
        caps.every((c) => typeof c === 'string' && chars(c) <= MAX_CAPABILITY))) {
    throw new BadDocument('capabilities are not a short list of names');
  }
  return doc;
}

// A status document, verified, with `online` a boolean and `ts` a time.
export function readStatus(blob, key) {
  if (blob.length > MAX_STATUS_BYTES) {
    throw new BadDocument(`status document of ${blob.length} bytes (at most ${MAX_STATUS_BYTES})`);
  }
  const doc = openDocument(key, STATUS_DOMAIN, blob);
  if (typeof doc.online !== 'boolean') throw new BadDocument('online is not true or false');
  if (typeof doc.ts !== 'number' || !Number.isFinite(doc.ts)) throw new BadDocument('ts is not a time');
  return doc;
}
