// Topic layout, as tether/topics.py, plus the console's audit topics (console contract).
export const DEFAULT_PREFIX = 'tether/v1';
export const C2A = 'c2a';
export const A2C = 'a2c';

export function validName(name) {
  if (typeof name !== 'string' || name.length < 1 || name.length > 64) return false;
  if ('-.'.includes(name[0]) || name === 'all') return false;
  return /^[A-Za-z0-9_.-]+$/.test(name);
}

export class Topics {
  constructor(prefix = DEFAULT_PREFIX) {
    this.prefix = prefix;
  }
  presence(agent) { return `${this.prefix}/a/${agent}/presence`; }
  status(agent) { return `${this.prefix}/a/${agent}/presence/status`; }
  allPresence() { return `${this.prefix}/a/+/presence/#`; }
  handshake(agent, client) { return `${this.prefix}/a/${agent}/hs/${client}`; }
  session(agent, client, sid, leg) { return `${this.prefix}/a/${agent}/s/${client}/${sid}/${leg}`; }
  authzRequest(principal) { return `${this.prefix}/authz/req/${principal}`; }
  authzReply(principal) { return `${this.prefix}/authz/rep/${principal}`; }
  bulletin() { return `${this.prefix}/authz/bulletin`; }
  // Audit over MQTT (console contract): queries to a recorder, its sealed replies.
  recorderQuery(recorder, slot) { return `${this.prefix}/rec/${recorder}/q/${slot}`; }
  recorderReply(recorder, slot) { return `${this.prefix}/rec/${recorder}/r/${slot}`; }

  // For presence topics: {agent, kind: 'presence'|'status'} or null.
  parsePresence(topic) {
    const pre = this.prefix.split('/');
    const parts = topic.split('/');
    if (parts.slice(0, pre.length).join('/') !== this.prefix) return null;
    const rest = parts.slice(pre.length);
    if (rest[0] !== 'a' || rest[2] !== 'presence') return null;
    if (rest.length === 3) return { agent: rest[1], kind: 'presence' };
    if (rest.length === 4 && rest[3] === 'status') return { agent: rest[1], kind: 'status' };
    return null;
  }
}
