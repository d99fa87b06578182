"""One sealed output stream with many readers (issue 11, "one stream"), without I/O.

The agent seals each output message once with the session's output key and publishes it
once; every reader (the client, the recorder, watchers) holds that key. A key shared by
many cannot authenticate the sender, so each reader also gets, over its own authenticated
link (its channel, or the recorder stream), the digest of every message: a reader accepts
a message only when its digest came that way. A reader that stole or was given the output
key can therefore make no other reader accept a forged, altered or reordered message.

Not on the wire yet (docs/protocol.md §18): sessions still send output on each reader's
channel. The message format this module defines:

    version u8 = 0x02 | seq u64 | XChaCha20-Poly1305(K_out, nonce, ad = version || seq, payload)
    nonce = "out" || 0^13 || seq (u64)        digest = BLAKE2b-256(person "tether-out-dig", message)

`seq` counts messages from 1. The reader delivers payloads in seq order, each once.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from tether.crypto import aead_open, aead_seal, personal_hash
from tether.errors import TetherError

VERSION = 0x02
HEADER = struct.Struct(">BQ")
TAG = 16
DIGEST_PERSON = b"tether-out-dig"
MAX_HELD = 1024  # messages or digests a reader holds while it waits for the other half


class OutStreamError(TetherError):
    """A message that is not a well-formed output message."""


def _nonce(seq: int) -> bytes:
    return b"out" + bytes(13) + seq.to_bytes(8, "big")


def digest(message: bytes) -> bytes:
    return personal_hash(DIGEST_PERSON, message)


class OutSealer:
    """The agent's end: seal a payload once; the digest goes to every reader's link."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the output key is 32 bytes")
        self._key = key
        self.seq = 0

    def seal(self, payload: bytes) -> tuple[int, bytes, bytes]:
        """(seq, message, digest) for the next payload."""
        self.seq += 1
        header = HEADER.pack(VERSION, self.seq)
        message = header + aead_seal(self._key, _nonce(self.seq), header, payload)
        return self.seq, message, digest(message)


@dataclass
class OutReader:
    """A reader's end: messages from the shared topic, digests from its own link; payloads
    out in order, each once, and only those whose digest came by the link."""

    key: bytes
    delivered: int = 0  # the highest seq delivered
    _messages: dict[int, bytes] = field(default_factory=dict)
    _digests: dict[int, bytes] = field(default_factory=dict)
    rejected: int = 0  # messages that did not match their digest or did not decrypt

    def offer_message(self, message: bytes) -> list[bytes]:
        """A message from the shared topic (anyone with the key could have made it)."""
        if len(message) < HEADER.size + TAG:
            raise OutStreamError("an output message is at least 25 bytes")
        version, seq = HEADER.unpack_from(message)
        if version != VERSION:
            raise OutStreamError(f"unknown output message version {version:#x}")
        if seq <= self.delivered or seq in self._messages:
            return []
        if seq > self.delivered + MAX_HELD:
            return []  # too far ahead to hold: it comes again
        expected = self._digests.get(seq)
        if expected is not None and not hmac.compare_digest(expected, digest(message)):
            self.rejected += 1
            return []
        self._messages[seq] = message
        return self._deliver()

    def offer_digest(self, seq: int, value: bytes) -> list[bytes]:
        """The digest of message `seq`, from this reader's own authenticated link."""
        if seq <= self.delivered or seq > self.delivered + MAX_HELD or len(value) != 32:
            return []
        self._digests[seq] = value
        held = self._messages.get(seq)
        if held is not None and not hmac.compare_digest(value, digest(held)):
            del self._messages[seq]  # a forgery got here first; the genuine one comes again
            self.rejected += 1
        return self._deliver()

    def _deliver(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            seq = self.delivered + 1
            message, value = self._messages.get(seq), self._digests.get(seq)
            if message is None or value is None:
                return out
            del self._messages[seq], self._digests[seq]
            if not hmac.compare_digest(value, digest(message)):
                self.rejected += 1
                return out
            payload = aead_open(self.key, _nonce(seq), message[:HEADER.size], message[HEADER.size:])
            if payload is None:
                # The agent's digest of a message that does not decrypt: not the agent's.
                self.rejected += 1
                return out
            self.delivered = seq
            out.append(payload)
