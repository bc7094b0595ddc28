"""The sans-I/O protocol: message encoding and the state machine, with no I/O at all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp import protocol as p
from p2pcp.errors import ProtocolError

SHA = "a" * 64


class Pair:
    """A sender and a receiver wired back to back (like h11's ConnectionPair), both saying
    ``version`` in their hellos. Most tests here run version 2's order (``accept``, then
    ``resume``); version 3's (``holding`` and ``resume`` before ``accept``) has its own."""

    def __init__(self, version: int = 2) -> None:
        self.version = version
        self.sender = p.Peer(p.Role.SENDER)
        self.receiver = p.Peer(p.Role.RECEIVER)

    def s2r(self, message: p.Message) -> p.Message:
        return self.receiver.receive(self.sender.send(message))

    def r2s(self, message: p.Message) -> p.Message:
        return self.sender.receive(self.receiver.send(message))

    def hello(self) -> None:
        # Both sides send their hello first thing, before reading anything.
        to_receiver = self.sender.send(p.Hello(version=self.version))
        to_sender = self.receiver.send(p.Hello(version=self.version))
        self.receiver.receive(to_receiver)
        self.sender.receive(to_sender)

    def offer(self, *entries: p.Entry) -> None:
        self.hello()
        self.s2r(p.Offer(entries))


def _state(machine: Any) -> p.State:
    """The machine's state, read anew (an ``assert ... is`` before narrows it for mypy)."""
    state: p.State = machine.state
    return state


def test_roundtrip_of_every_message() -> None:
    messages: list[p.Message] = [
        p.Hello(),
        p.Offer((p.Entry("d", "dir"), p.Entry("d/f", "file", 3, True), p.Entry("s", "file"))),
        p.Accept(10),
        p.Accept(10, (p.Held(0, 5, SHA), p.Held(3, 0, SHA))),
        p.Resume(((0, 5), (3, 0))),
        p.Decline("declined", "no"),
        p.Credit(5),
        p.Data(b"\x00\x01abc"),
        p.FileEnd(0, SHA),
        p.Done(),
        p.Verified(2),
        p.Abort("cancelled", "bye"),
    ]
    for message in messages:
        assert p.decode(p.encode(message)) == message


def test_happy_path_reaches_done_on_both_sides() -> None:
    pair = Pair()
    pair.offer(p.Entry("d", "dir"), p.Entry("d/a", "file", 3), p.Entry("b", "file", 0))
    assert pair.receiver.state is p.State.DECIDING
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    pair.s2r(p.Data(b"abc"))
    pair.s2r(p.FileEnd(0, SHA))
    pair.s2r(p.FileEnd(1, SHA))
    pair.r2s(p.Credit(3))
    pair.s2r(p.Done())
    assert _state(pair.receiver) is p.State.VERIFYING
    pair.r2s(p.Verified(2))
    assert pair.sender.state is p.State.DONE and _state(pair.receiver) is p.State.DONE
    assert pair.sender.ended_by == p.RECV and pair.receiver.ended_by == p.SEND
    assert pair.sender.credit == 100 and pair.receiver.credit == 100


def test_offer_in_parts() -> None:
    pair = Pair()
    pair.hello()
    pair.s2r(p.Offer((p.Entry("a", "file", 1),), more=True))
    assert pair.receiver.state is p.State.AWAIT_OFFER
    assert pair.sender.state is p.State.READY
    pair.s2r(p.Offer((p.Entry("b", "file", 1),)))
    assert _state(pair.receiver) is p.State.DECIDING
    assert [e.path for e in pair.receiver.entries] == ["a", "b"]
    assert pair.receiver.file_count == 2


def test_decline_ends_both_with_receiver_speaking_last() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 1))
    pair.r2s(p.Decline("declined"))
    assert pair.sender.state is p.State.DECLINED and pair.receiver.state is p.State.DECLINED
    assert pair.receiver.ended_by == p.SEND and pair.sender.ended_by == p.RECV


@pytest.mark.parametrize(
    "frame_for_receiver",
    [
        p.encode(p.Data(b"x")),
        p.encode(p.Done()),
        p.encode(p.FileEnd(0, SHA)),
        p.encode(p.Accept(1)),
        p.encode(p.Verified(0)),
    ],
)
def test_unexpected_before_offer(frame_for_receiver: bytes) -> None:
    pair = Pair()
    pair.hello()
    with pytest.raises(ProtocolError, match="while await-offer"):
        pair.receiver.receive(frame_for_receiver)


def test_message_before_hello_is_rejected() -> None:
    receiver = p.Peer(p.Role.RECEIVER)
    receiver.send(p.Hello())
    with pytest.raises(ProtocolError, match="'offer' while await-hello"):
        receiver.receive(p.encode(p.Offer((p.Entry("a", "file", 1),))))


def test_sender_rejects_receiver_only_messages() -> None:
    pair = Pair()
    pair.hello()
    with pytest.raises(ProtocolError):
        pair.sender.receive(p.encode(p.Offer(())))
    with pytest.raises(ProtocolError):
        p.Peer(p.Role.SENDER).send(p.Accept(1))


def test_version_mismatch_is_a_clear_error() -> None:
    receiver = p.Peer(p.Role.RECEIVER)
    receiver.send(p.Hello())
    with pytest.raises(ProtocolError, match="protocol version 0.*versions 1 to 3"):
        receiver.receive(p.encode(p.Hello(version=0)))


@pytest.mark.parametrize(("theirs", "spoken"), [(1, 1), (2, 2), (3, 3), (4, 3)])
def test_both_sides_speak_the_lower_version(theirs: int, spoken: int) -> None:
    receiver = p.Peer(p.Role.RECEIVER)
    receiver.send(p.Hello())
    receiver.receive(p.encode(p.Hello(version=theirs)))
    assert receiver.version == spoken


def _v2_pair_holding(size: int) -> Pair:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10))
    pair.r2s(p.Accept(100, (p.Held(0, size),)))
    return pair


def test_version_2_resume_the_receiver_decides_from_the_senders_hashes() -> None:
    pair = _v2_pair_holding(4)
    pair.s2r(p.Resume(prefixes=((0, 4, "ab" * 32),)))
    assert _state(pair.sender) is p.State.AWAIT_START
    assert _state(pair.receiver) is p.State.STARTING
    pair.r2s(p.Start(((0, 4),)))
    assert _state(pair.sender) is _state(pair.receiver) is p.State.TRANSFERRING
    pair.s2r(p.Data(b"x" * 6))  # only the rest
    pair.s2r(p.FileEnd(0, "cd" * 32))


@pytest.mark.parametrize(
    "bad",
    [
        p.Resume(prefixes=((0, 5, "ab" * 32),)),  # not the size held
        p.Resume(prefixes=((1, 4, "ab" * 32),)),  # not a file held
        p.Resume(((0, 4),), ((0, 4, "ab" * 32),)),  # both kinds at once
    ],
)
def test_version_2_prefixes_must_match_what_is_held(bad: p.Resume) -> None:
    pair = _v2_pair_holding(4)
    with pytest.raises(ProtocolError):
        pair.receiver.receive(p.encode(bad))


def test_version_2_start_offsets_are_held_sizes_or_zero() -> None:
    pair = _v2_pair_holding(4)
    pair.s2r(p.Resume(prefixes=((0, 4, "ab" * 32),)))
    with pytest.raises(ProtocolError, match="resume offset"):
        pair.sender.receive(p.encode(p.Start(((0, 3),))))


def test_a_version_2_receiver_sends_no_hash() -> None:
    frame = p.encode(p.Accept(100, (p.Held(0, 4),)))
    assert b"sha256" not in frame
    assert p.decode(frame) == p.Accept(100, (p.Held(0, 4),))


def test_more_bytes_than_declared() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 2))
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    pair.s2r(p.Data(b"ab"))
    with pytest.raises(ProtocolError, match="more bytes than declared"):
        pair.receiver.receive(p.encode(p.Data(b"c")))


def test_fewer_bytes_than_declared() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 5))
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    pair.s2r(p.Data(b"ab"))
    with pytest.raises(ProtocolError, match="2 bytes for a file declared as 5"):
        pair.receiver.receive(p.encode(p.FileEnd(0, SHA)))


def test_file_end_out_of_order() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 0), p.Entry("b", "file", 0))
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    with pytest.raises(ProtocolError, match="out of order"):
        pair.receiver.receive(p.encode(p.FileEnd(1, SHA)))


def test_data_after_last_file() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 0))
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    pair.s2r(p.FileEnd(0, SHA))
    with pytest.raises(ProtocolError, match="after the last file"):
        pair.receiver.receive(p.encode(p.Data(b"x")))


def test_done_before_all_files() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 0), p.Entry("b", "file", 0))
    pair.r2s(p.Accept(100))
    pair.s2r(p.Resume())
    pair.s2r(p.FileEnd(0, SHA))
    with pytest.raises(ProtocolError, match="before every file"):
        pair.receiver.receive(p.encode(p.Done()))


def test_data_beyond_credit_is_refused_on_both_sides() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10))
    pair.r2s(p.Accept(4))
    pair.s2r(p.Resume())
    pair.s2r(p.Data(b"abcd"))
    with pytest.raises(ProtocolError, match="more data than the receiver allowed"):
        pair.sender.send(p.Data(b"e"))
    with pytest.raises(ProtocolError, match="more data than the receiver allowed"):
        pair.receiver.receive(p.encode(p.Data(b"e")))


def test_stream_of_unknown_size_has_no_size_limit() -> None:
    pair = Pair()
    pair.offer(p.Entry("stdin", "file", None))
    pair.r2s(p.Accept(1000))
    pair.s2r(p.Resume())
    for _ in range(10):
        pair.s2r(p.Data(b"x" * 50))
    pair.s2r(p.FileEnd(0, SHA))
    pair.s2r(p.Done())
    assert pair.receiver.state is p.State.VERIFYING


def test_verified_with_wrong_count() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 0))
    pair.r2s(p.Accept(1))
    pair.s2r(p.Resume())
    pair.s2r(p.FileEnd(0, SHA))
    pair.s2r(p.Done())
    with pytest.raises(ProtocolError, match="wrong number"):
        pair.sender.receive(p.encode(p.Verified(3)))


def test_abort_from_any_live_state_and_not_after_end() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 1))
    pair.r2s(p.Abort("cancelled"))
    assert pair.sender.state is p.State.ABORTED and pair.sender.ended_by == p.RECV
    with pytest.raises(ProtocolError, match="after the transfer ended"):
        pair.sender.receive(p.encode(p.Abort("error")))
    with pytest.raises(ProtocolError):
        pair.sender.receive(p.encode(p.Credit(1)))


def _control(obj: object) -> bytes:
    return b"\x00" + json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"", "empty frame"),
        (b"\x07abc", "unknown kind 7"),
        (b"\x00{not json", "malformed control"),
        (b"\x00\xff\xfe", "malformed control"),
        (_control([1, 2]), "not an object"),
        (_control({"type": "teleport"}), "unknown message type"),
        (_control({"type": "hello", "version": 1}), "does not speak"),
        (_control({"type": "hello", "protocol": "p2pcp", "version": "1"}), "'version'"),
        (_control({"type": "accept", "credit": -1}), "'credit'"),
        (_control({"type": "accept", "credit": True}), "'credit'"),
        (_control({"type": "accept", "credit": 1.5}), "'credit'"),
        (_control({"type": "offer", "entries": "x"}), "without entries"),
        (_control({"type": "offer", "entries": [5]}), "malformed offer entry"),
        (_control({"type": "offer", "entries": [{"path": "a", "kind": "link"}]}), "unknown kind"),
        (_control({"type": "offer", "entries": [{"path": 3, "kind": "file"}]}), "'path'"),
        (
            _control(
                {"type": "offer", "entries": [{"path": "a", "kind": "file", "size": 1 << 63}]}
            ),
            "impossible size",
        ),
        (_control({"type": "offer", "entries": [], "more": "yes"}), "'more'"),
        (_control({"type": "file_end", "index": 0, "sha256": "xyz"}), "malformed file hash"),
        (_control({"type": "file_end", "index": 0, "sha256": "A" * 64}), "malformed file hash"),
        (b"\x00" + b"{" + b" " * p.MAX_CONTROL_SIZE + b"}", "oversized"),
    ],
)
def test_malformed_frames(frame: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        p.decode(frame)


@given(st.binary(max_size=300))
def test_decode_raises_only_protocol_errors(frame: bytes) -> None:
    try:
        p.decode(frame)
    except ProtocolError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "type",
                        "entries",
                        "path",
                        "kind",
                        "size",
                        "index",
                        "sha256",
                        "credit",
                        "bytes",
                        "more",
                        "protocol",
                        "version",
                        "reason",
                        "message",
                        "files",
                    ]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
)
def test_decode_of_hostile_json_raises_only_protocol_errors(obj: object) -> None:
    for kind in ("offer", "accept", "file_end", "hello", "decline", "credit", "verified"):
        body = dict(obj) if isinstance(obj, dict) else {"junk": obj}
        body["type"] = kind
        try:
            p.decode(_control(body))
        except ProtocolError:
            pass


def test_resume_starts_a_file_at_the_held_offset() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10), p.Entry("b", "file", 4))
    pair.r2s(p.Accept(100, (p.Held(0, 6, SHA), p.Held(1, 4, SHA))))
    pair.s2r(p.Resume(((0, 6), (1, 0))))
    pair.s2r(p.Data(b"7890"))  # only the 4 missing bytes of a
    with pytest.raises(ProtocolError, match="more bytes than declared"):
        p.Peer.receive(pair.receiver, p.encode(p.Data(b"x")))


def test_resume_offsets_are_checked() -> None:
    for offsets, match in [
        (((0, 5),), "did not offer"),  # neither 0 nor the held size
        (((1, 0),), "did not offer"),  # a file the receiver does not hold
        (((0, 6), (0, 6)), "did not offer"),  # twice
    ]:
        pair = Pair()
        pair.offer(p.Entry("a", "file", 10), p.Entry("b", "file", 4))
        pair.r2s(p.Accept(100, (p.Held(0, 6, SHA),)))
        with pytest.raises(ProtocolError, match=match):
            pair.receiver.receive(p.encode(p.Resume(offsets)))


def test_have_cannot_claim_more_than_declared_or_a_stream() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10), p.Entry("s", "file", None))
    with pytest.raises(ProtocolError, match="cannot hold"):
        pair.sender.receive(p.encode(p.Accept(100, (p.Held(0, 11, SHA),))))
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10), p.Entry("s", "file", None))
    with pytest.raises(ProtocolError, match="cannot hold"):
        pair.sender.receive(p.encode(p.Accept(100, (p.Held(1, 1, SHA),))))


def test_data_before_resume_is_refused() -> None:
    pair = Pair()
    pair.offer(p.Entry("a", "file", 10))
    pair.r2s(p.Accept(100))
    with pytest.raises(ProtocolError, match="'data' while accepted"):
        pair.receiver.receive(p.encode(p.Data(b"x")))


# -- version 3: what is here is compared before the receiver asks ------------------------------


def _v3_pair_compared(*entries: p.Entry, held: tuple[p.Held, ...]) -> Pair:
    pair = Pair(3)
    pair.offer(*entries)
    pair.r2s(p.Holding(held))
    assert _state(pair.sender) is _state(pair.receiver) is p.State.COMPARING
    pair.s2r(p.Resume(prefixes=tuple((h.index, h.size, "ab" * 32) for h in held)))
    assert _state(pair.receiver) is p.State.DECIDING
    assert _state(pair.sender) is p.State.AWAIT_ANSWER
    return pair


def test_version_3_accept_says_where_data_starts_and_what_is_left_out() -> None:
    files = (p.Entry("a", "file", 10), p.Entry("b", "file", 4), p.Entry("c", "file", 3))
    pair = _v3_pair_compared(*files, held=(p.Held(0, 6), p.Held(1, 4)))
    pair.r2s(p.Accept(100, offsets=((0, 6), (1, 4)), skip=(2,)))
    assert _state(pair.sender) is _state(pair.receiver) is p.State.TRANSFERRING  # no resume
    pair.s2r(p.Data(b"7890"))  # the rest of a
    pair.s2r(p.FileEnd(0, SHA))
    pair.s2r(p.FileEnd(1, SHA))  # b is here whole: its end only
    with pytest.raises(ProtocolError, match="end of file 2"):  # c is left out: nothing of it
        pair.receiver.receive(p.encode(p.FileEnd(2, SHA)))
    pair.s2r(p.Done())
    pair.r2s(p.Verified(3))
    assert _state(pair.sender) is p.State.DONE


def test_version_3_leaving_out_every_file_goes_straight_to_done() -> None:
    pair = Pair(3)
    pair.offer(p.Entry("a", "file", 10), p.Entry("b", "file", 2))
    pair.r2s(p.Accept(100, skip=(0, 1)))  # nothing held: no 'holding' needed
    with pytest.raises(ProtocolError, match="file data after the last file"):
        p.Peer.receive(pair.receiver, p.encode(p.Data(b"x")))
    pair = Pair(3)
    pair.offer(p.Entry("a", "file", 10), p.Entry("b", "file", 2))
    pair.r2s(p.Accept(100, skip=(0, 1)))
    pair.s2r(p.Done())
    assert _state(pair.receiver) is p.State.VERIFYING


@pytest.mark.parametrize(
    ("accept", "match"),
    [
        (p.Accept(100, offsets=((0, 5),)), "did not offer"),  # not the size held
        (p.Accept(100, offsets=((1, 2),)), "gave no hash"),  # never held, never hashed
        (p.Accept(100, offsets=((0, 6),), skip=(0,)), "leave out"),  # both at once
        (p.Accept(100, skip=(1, 1)), "leave out"),  # twice
        (p.Accept(100, skip=(7,)), "leave out"),  # no such file
        (p.Accept(100, (p.Held(0, 6),)), "'have' list"),  # version 2's field
    ],
)
def test_version_3_accept_is_checked_against_the_comparison(accept: p.Accept, match: str) -> None:
    files = (p.Entry("a", "file", 10), p.Entry("b", "file", 4))
    pair = _v3_pair_compared(*files, held=(p.Held(0, 6),))
    with pytest.raises(ProtocolError, match=match):
        pair.sender.receive(p.encode(accept))


def test_version_3_holding_comes_once_and_only_in_version_3() -> None:
    pair = _v3_pair_compared(p.Entry("a", "file", 10), held=(p.Held(0, 6),))
    with pytest.raises(ProtocolError, match="'holding' twice"):
        pair.sender.receive(p.encode(p.Holding((p.Held(0, 6),))))
    pair = Pair(2)
    pair.offer(p.Entry("a", "file", 10))
    with pytest.raises(ProtocolError, match="outside protocol version 3"):
        pair.sender.receive(p.encode(p.Holding((p.Held(0, 6),))))
    pair = Pair(2)
    pair.offer(p.Entry("a", "file", 10))
    with pytest.raises(ProtocolError, match="before protocol version 3"):
        pair.sender.receive(p.encode(p.Accept(100, skip=(0,))))


def test_version_3_messages_roundtrip() -> None:
    for message in (
        p.Holding((p.Held(0, 5), p.Held(2, 1))),
        p.Accept(10, offsets=((0, 5),), skip=(1, 3)),
    ):
        assert p.decode(p.encode(message)) == message
    assert b"sha256" not in p.encode(p.Holding((p.Held(0, 5),)))
