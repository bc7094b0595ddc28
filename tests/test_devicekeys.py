"""The keys of paired devices: rendezvous identifiers, fingerprints, and the key agreement
that replaces a code between paired devices (pure functions, no I/O)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2pcp.devicekeys import (
    SKEW,
    WINDOW,
    PairedPake,
    fingerprint,
    nameplate,
    pair_secret,
    pairing_fingerprint,
    public_bytes,
    windows,
)
from p2pcp.errors import CodeError
from p2pcp.pake import derive_key

SECRET = bytes(range(32))


def test_the_rendezvous_nameplate_is_an_hmac_of_the_window() -> None:
    # Computed here from the definition: HMAC-SHA256(secret, APP_ID " rendezvous " window).
    mac = hmac.new(SECRET, b"p2pcp.dev/v1 rendezvous " + (5).to_bytes(8, "big"), "sha256")
    expected = 10_000_000 + int.from_bytes(mac.digest()[:8], "big") % 90_000_000
    assert nameplate(SECRET, 5) == str(expected)
    assert len(nameplate(SECRET, 5)) == 8


def test_identifiers_change_between_windows_and_between_pairings() -> None:
    seen = {nameplate(SECRET, w) for w in range(200)}
    assert len(seen) == 200  # no window repeats another's identifier
    other = bytes(32)
    assert all(nameplate(SECRET, w) != nameplate(other, w) for w in range(50))


def test_the_windows_that_count_cover_the_clock_skew() -> None:
    middle = 10 * WINDOW + WINDOW / 2
    assert windows(middle) == [10]
    assert windows(10 * WINDOW + 1) == [10, 9]  # just after an edge: the previous one too
    assert windows(11 * WINDOW - 1) == [10, 11]  # just before one: the next one too
    # Two clocks up to SKEW apart always share a window.
    for now in (10 * WINDOW + 7, 11 * WINDOW - 7, 10 * WINDOW + SKEW / 2):
        assert set(windows(now)) & set(windows(now + SKEW))
        assert set(windows(now)) & set(windows(now - SKEW))


def test_fingerprints_are_grouped_hashes() -> None:
    key = bytes([7]) * 32
    digest = hashlib.sha256(b"p2pcp device key " + key).hexdigest()[:20]
    assert fingerprint(key) == " ".join(digest[i : i + 4] for i in range(0, 20, 4))
    a, b = bytes([1]) * 32, bytes([2]) * 32
    assert pairing_fingerprint(SECRET, a, b) == pairing_fingerprint(SECRET, b, a)
    assert pairing_fingerprint(SECRET, a, b) != pairing_fingerprint(bytes(32), a, b)
    assert pair_secret(SECRET) == derive_key(SECRET, "pair secret")


def _pair() -> tuple[X25519PrivateKey, X25519PrivateKey]:
    return X25519PrivateKey.generate(), X25519PrivateKey.generate()


def test_paired_devices_agree_on_a_fresh_key_each_time() -> None:
    a, b = _pair()
    keys = set()
    for _ in range(3):
        one = PairedPake(a, public_bytes(b), SECRET)
        two = PairedPake(b, public_bytes(a), SECRET)
        shared = one.finish(two.outbound)
        assert shared == two.finish(one.outbound)
        keys.add(shared)
    assert len(keys) == 3  # fresh ephemerals: a new key every time


def test_a_device_without_the_private_key_gets_another_key() -> None:
    a, b = _pair()
    impostor = X25519PrivateKey.generate()
    # The impostor knows the secret and both public keys, but claims b's identity with its own.
    honest = PairedPake(a, public_bytes(b), SECRET)
    fake = PairedPake(impostor, public_bytes(a), SECRET)
    assert honest.finish(fake.outbound) != fake.finish(honest.outbound)


def test_a_device_without_the_pairing_secret_gets_another_key() -> None:
    a, b = _pair()
    one = PairedPake(a, public_bytes(b), SECRET)
    two = PairedPake(b, public_bytes(a), bytes(32))
    assert one.finish(two.outbound) != two.finish(one.outbound)


def test_a_replayed_message_gives_another_key() -> None:
    a, b = _pair()
    old = PairedPake(b, public_bytes(a), SECRET)  # a message an attacker recorded
    first = PairedPake(a, public_bytes(b), SECRET)
    recorded = first.finish(old.outbound)
    again = PairedPake(a, public_bytes(b), SECRET)
    assert again.finish(old.outbound) != recorded  # our fresh ephemeral changes the key
    # and whoever replays cannot compute it: b's side computes it with b's own ephemeral only.


def test_malformed_and_low_order_messages_are_refused() -> None:
    a, b = _pair()
    side = PairedPake(a, public_bytes(b), SECRET)
    with pytest.raises(CodeError):
        side.finish(b"short")
    with pytest.raises(CodeError):
        side.finish(bytes(32))  # the all-zero point: every exchange with it is zero
    with pytest.raises(CodeError):
        PairedPake(a, public_bytes(a), SECRET)
