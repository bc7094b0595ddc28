"""SPAKE2 key agreement, key derivation and sealing of signaling payloads. No I/O.

Both peers run symmetric SPAKE2 (the ``spake2`` package) with the whole code as the password and
:data:`APP_ID` bound in. From the shared key, HKDF-SHA256 derives one key per direction and
purpose, so no key is ever used for two things. Every signaling payload after the PAKE is sealed
with AES-256-GCM under a per-direction key; the nonce is a message counter that both sides keep,
so a replayed, reordered, dropped-and-later-delivered, truncated or tampered message fails to open.
A wrong code gives the two sides different keys, and the first sealed message (the key
confirmation) fails to open on both.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_Symmetric
from spake2.spake2 import SPAKEError

from .errors import CodeError

APP_ID = b"p2pcp.dev/v1"
MESSAGE_SIZE = 33
SIDE_SYMMETRIC = b"S"
SENDER = "sender"
RECEIVER = "receiver"


class SealError(Exception):
    """A sealed message failed to open (wrong key, tampered, replayed or out of order)."""


def derive_key(shared: bytes, purpose: str, length: int = 32) -> bytes:
    """An HKDF-SHA256 subkey of the PAKE key for one ``purpose``."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=APP_ID + b" " + purpose.encode()
    ).derive(shared)


class Pake:
    """One side of a symmetric SPAKE2 exchange."""

    def __init__(self, password: bytes) -> None:
        self._spake = SPAKE2_Symmetric(password, idSymmetric=APP_ID)
        self.outbound: bytes = self._spake.start()
        """The message to send to the peer."""

    def finish(self, inbound: bytes) -> bytes:
        """The shared key, given the peer's message (a malformed one raises CodeError)."""
        # spake2 checks some malformed input only with assert (gone under python -O), so the
        # shape is checked here: one side byte for "symmetric", then one 32-byte element.
        if len(inbound) != MESSAGE_SIZE or inbound[:1] != SIDE_SYMMETRIC:
            raise CodeError("the peer's key exchange message was malformed")
        try:
            key: bytes = self._spake.finish(inbound)
        except (SPAKEError, ValueError, AssertionError, TypeError) as exc:
            raise CodeError("the peer's key exchange message was malformed") from exc
        return key


@dataclass
class SealedChannel:
    """Seals outgoing and opens incoming JSON payloads for one side of the conversation."""

    send_key: bytes
    """Key for what this side sends."""
    recv_key: bytes
    """Key for what the peer sends."""
    sent: int = 0
    """Messages sealed so far (the next nonce)."""
    received: int = 0
    """Messages opened so far (the nonce expected next)."""
    _send_aead: AESGCM = field(init=False, repr=False)
    _recv_aead: AESGCM = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._send_aead = AESGCM(self.send_key)
        self._recv_aead = AESGCM(self.recv_key)

    @classmethod
    def for_role(cls, shared: bytes, role: str) -> SealedChannel:
        """The channel of ``role`` (``sender`` or ``receiver``) from the PAKE key."""
        other = RECEIVER if role == SENDER else SENDER
        return cls(derive_key(shared, f"seal:{role}"), derive_key(shared, f"seal:{other}"))

    def seal(self, payload: dict[str, Any]) -> str:
        """Encrypt and authenticate ``payload``; returns base64 text for the signaling message."""
        plain = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        box = self._send_aead.encrypt(_nonce(self.sent), plain, APP_ID)
        self.sent += 1
        return base64.b64encode(box).decode("ascii")

    def open(self, text: str) -> dict[str, Any]:
        """Decrypt and check the next payload from the peer."""
        try:
            box = base64.b64decode(text.encode("ascii"), validate=True)
            plain = self._recv_aead.decrypt(_nonce(self.received), box, APP_ID)
            payload = json.loads(plain)
        except (InvalidTag, ValueError, UnicodeError, RecursionError) as exc:
            raise SealError("a sealed message failed to open") from exc
        if not isinstance(payload, dict):
            raise SealError("a sealed message did not hold an object")
        self.received += 1
        return payload


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def verification_string(shared: bytes) -> str:
    """A short string both sides can compare by eye (same key -> same string)."""
    digest = derive_key(shared, "verify", 5)
    return "-".join(f"{b:02x}" for b in digest)
