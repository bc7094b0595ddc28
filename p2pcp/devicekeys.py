"""The keys of paired devices, with no I/O: the pairing secret, the rendezvous identifiers that
rotate with time, the fingerprint both screens show, and the key agreement that replaces the
code once two devices are paired.

Pairing runs a code transfer's SPAKE2 and then swaps long-term X25519 public keys over the
sealed channel; both sides keep the other's key and a 32-byte secret derived from the PAKE key.
Later, the two meet in a room named by an HMAC of that secret and the current time window (an
8-digit nameplate the server cannot link to a device or to the previous window), and agree a
fresh key by three X25519 exchanges: ephemeral-ephemeral (forward secrecy) and each side's
long-term key with the other's ephemeral (so only the holder of each private key gets it), with
the pairing secret as the HKDF salt. The result feeds the same sealed channel, key confirmation
and sealed SDP (DTLS fingerprints) as a code's PAKE key.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import CodeError
from .pake import APP_ID, derive_key

KEY_SIZE = 32
WINDOW = 3600.0
"""Seconds one rendezvous identifier lasts: the server sees a new one every hour."""
SKEW = 300.0
"""Clock difference tolerated between two paired devices: near a window's edge both windows'
identifiers are tried."""
NAMEPLATE_DIGITS = 8


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _grouped(digest: bytes) -> str:
    text = digest.hex()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def fingerprint(public: bytes) -> str:
    """One device's key as a user reads it: 80 bits of its SHA-256 in groups of four."""
    return _grouped(hashlib.sha256(b"p2pcp device key " + public).digest()[:10])


def pairing_fingerprint(secret: bytes, first: bytes, second: bytes) -> str:
    """What both screens show after pairing: the same on both only if both hold the same
    secret and the same two keys."""
    low, high = sorted((first, second))
    return _grouped(derive_key(secret, "fingerprint " + (low + high).hex(), 10))


def pair_secret(shared: bytes) -> bytes:
    """The pairing's long-term secret, from the pairing's PAKE key."""
    return derive_key(shared, "pair secret")


def windows(now: float) -> list[int]:
    """The time windows whose identifiers count at ``now`` (Unix seconds): the current one, and
    the neighbour within SKEW of it, in order."""
    found: list[int] = []
    for moment in (now, now - SKEW, now + SKEW):
        window = math.floor(moment / WINDOW)
        if window not in found:
            found.append(window)
    return found


def nameplate(secret: bytes, window: int) -> str:
    """The room of a pairing in one time window: an 8-digit nameplate (10000000-99999999), from
    an HMAC of the window under the pairing secret."""
    mac = hmac.new(
        secret, APP_ID + b" rendezvous " + window.to_bytes(8, "big", signed=True), "sha256"
    ).digest()
    low = 10 ** (NAMEPLATE_DIGITS - 1)
    return str(low + int.from_bytes(mac[:8], "big") % (9 * low))


class PairedPake:
    """One side of the key agreement between two paired devices (the counterpart of
    ``pake.Pake``): send ``outbound``, then ``finish`` with the peer's message."""

    def __init__(self, own: X25519PrivateKey, peer: bytes, secret: bytes) -> None:
        self._own = own
        self._own_public = public_bytes(own)
        if peer == self._own_public:
            raise CodeError("a device cannot be paired with itself")
        self._peer = X25519PublicKey.from_public_bytes(peer)
        self._peer_public = peer
        self._secret = secret
        self._ephemeral = X25519PrivateKey.generate()
        self.outbound: bytes = public_bytes(self._ephemeral)
        """This side's ephemeral public key, to send to the peer."""

    def finish(self, inbound: bytes) -> bytes:
        """The shared key, given the peer's ephemeral public key. Only the holder of the
        peer's long-term private key can have sent a message that gives both sides one key;
        anything else shows up at the key confirmation."""
        if len(inbound) != KEY_SIZE:
            raise CodeError("the peer's key exchange message was malformed")
        try:
            theirs = X25519PublicKey.from_public_bytes(inbound)
            ephemeral_ephemeral = self._ephemeral.exchange(theirs)
            mine_with_theirs = self._ephemeral.exchange(self._peer)  # our e, their long-term s
            theirs_with_mine = self._own.exchange(theirs)  # our s, their e
        except ValueError:  # a low-order point: the exchange would be all zeroes
            raise CodeError("the peer's key exchange message was malformed") from None
        low_first = self._own_public < self._peer_public
        # Both sides order the terms by whose long-term key is lower, so they agree.
        e_low_s_high, s_low_e_high = (
            (mine_with_theirs, theirs_with_mine)
            if low_first
            else (theirs_with_mine, mine_with_theirs)
        )
        ephemerals = (self.outbound + inbound) if low_first else (inbound + self.outbound)
        keys = (
            (self._own_public + self._peer_public)
            if low_first
            else (self._peer_public + self._own_public)
        )
        material = ephemeral_ephemeral + e_low_s_high + s_low_e_high
        transcript = hashlib.sha256(keys + ephemerals).hexdigest()
        return derive_key(self._secret + material, "paired " + transcript)
