"""SPAKE2, key derivation and sealing, as pure functions."""

from __future__ import annotations

import base64

import pytest

from p2pcp.errors import CodeError
from p2pcp.pake import Pake, SealedChannel, SealError, derive_key, verification_string


def _agree(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    one, two = Pake(a), Pake(b)
    return one.finish(two.outbound), two.finish(one.outbound)


def _channels(key_a: bytes, key_b: bytes) -> tuple[SealedChannel, SealedChannel]:
    return SealedChannel.for_role(key_a, "sender"), SealedChannel.for_role(key_b, "receiver")


def test_same_code_same_keys() -> None:
    key_a, key_b = _agree(b"7-guitar-ocean", b"7-guitar-ocean")
    assert key_a == key_b and len(key_a) == 32
    sender, receiver = _channels(key_a, key_b)
    assert receiver.open(sender.seal({"sdp": "x"})) == {"sdp": "x"}
    assert sender.open(receiver.seal({"n": 1})) == {"n": 1}
    assert verification_string(key_a) == verification_string(key_b)


def test_keys_differ_per_purpose_and_direction() -> None:
    key, _ = _agree(b"1-a-b", b"1-a-b")
    keys = {derive_key(key, p) for p in ("seal:sender", "seal:receiver", "verify", "other")}
    assert len(keys) == 4


def test_wrong_code_fails_to_open() -> None:
    key_a, key_b = _agree(b"7-guitar-ocean", b"7-guitar-oasis")
    assert key_a != key_b
    sender, receiver = _channels(key_a, key_b)
    with pytest.raises(SealError):
        receiver.open(sender.seal({"type": "confirm"}))


def test_tampered_message_is_rejected() -> None:
    sender, receiver = _channels(*_agree(b"k", b"k"))
    box = bytearray(base64.b64decode(sender.seal({"sdp": "fingerprint AA:BB"})))
    box[5] ^= 1
    with pytest.raises(SealError):
        receiver.open(base64.b64encode(bytes(box)).decode())


def test_replayed_message_is_rejected() -> None:
    sender, receiver = _channels(*_agree(b"k", b"k"))
    first = sender.seal({"n": 1})
    receiver.open(first)
    with pytest.raises(SealError):
        receiver.open(first)


def test_reordered_messages_are_rejected() -> None:
    sender, receiver = _channels(*_agree(b"k", b"k"))
    first, second = sender.seal({"n": 1}), sender.seal({"n": 2})
    with pytest.raises(SealError):
        receiver.open(second)
    assert receiver.open(first) == {"n": 1}


def test_truncated_message_is_rejected() -> None:
    sender, receiver = _channels(*_agree(b"k", b"k"))
    box = base64.b64decode(sender.seal({"n": 1}))
    with pytest.raises(SealError):
        receiver.open(base64.b64encode(box[:-1]).decode())
    with pytest.raises(SealError):
        receiver.open("not base64!")


def test_a_message_cannot_be_reflected_back() -> None:
    sender, _ = _channels(*_agree(b"k", b"k"))
    with pytest.raises(SealError):
        sender.open(sender.seal({"n": 1}))


def test_malformed_pake_message_is_a_code_error() -> None:
    with pytest.raises(CodeError):
        Pake(b"k").finish(b"\x00" * 5)


def test_pake_messages_have_the_checked_shape() -> None:
    message = Pake(b"k").outbound
    assert len(message) == 33 and message[:1] == b"S"
    with pytest.raises(CodeError):
        Pake(b"k").finish(b"A" + message[1:])
    with pytest.raises(CodeError):
        Pake(b"k").finish(message + b"\x00")
