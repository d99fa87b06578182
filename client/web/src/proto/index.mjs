export * as encoding from './encoding.mjs';
export * as authz from './authz.mjs';
export { ready, sodium } from './crypto.mjs';
export { ClientHandshake, HandshakeError, HandshakeRefused } from './handshake.mjs';
export { Channel } from './channel.mjs';
export { FrameCipher, FrameType, Direction } from './frames.mjs';
export { Topics } from './topics.mjs';
