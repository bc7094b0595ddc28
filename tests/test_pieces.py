"""p2pcp/webrtc/pieces.py: packets cut into pieces and joined again, in any order, with any one
piece lost where a parity piece came, and nothing made of pieces that do not fit together."""

from __future__ import annotations

import os
import random

from hypothesis import given
from hypothesis import strategies as st

from p2pcp.webrtc import pieces


@given(st.binary(min_size=1, max_size=20_000), st.integers(1, 3000), st.randoms())
def test_pieces_in_any_order_join_into_the_packet(
    packet: bytes, size: int, rng: random.Random
) -> None:
    cut = pieces.cut(packet, 7, size)
    rng.shuffle(cut)
    joiner = pieces.Joiner()
    results = [joiner.add(piece) for piece in cut]
    assert results[-1] == packet and results[:-1] == [None] * (len(cut) - 1)


@given(st.binary(min_size=2, max_size=20_000), st.integers(1, 2000), st.data())
def test_any_one_lost_piece_is_rebuilt_from_the_parity_piece(
    packet: bytes, size: int, data: st.DataObject
) -> None:
    cut = pieces.cut(packet, 7, size, parity=True)
    if len(cut) == 1:  # one piece: no parity, nothing to rebuild
        return
    lost = data.draw(st.integers(0, len(cut) - 2))  # a data piece, not the parity piece
    joiner = pieces.Joiner()
    got = [joiner.add(piece) for i, piece in enumerate(cut) if i != lost]
    assert got[-1] == packet and joiner.rebuilt == 1


def test_two_lost_pieces_lose_the_packet_and_later_packets_still_join() -> None:
    packet = os.urandom(64_028)
    joiner = pieces.Joiner()
    cut = pieces.cut(packet, 1, 1384, parity=True)
    assert len(cut) == 48  # 47 pieces and the parity piece
    assert [joiner.add(piece) for piece in cut[2:]] == [None] * 46
    for number in range(2, 2 + pieces.MAX_PENDING + 1):  # the incomplete one is given up
        assert [joiner.add(p) for p in pieces.cut(packet, number, 1384)][-1] == packet
    assert joiner.dropped == 1


def test_a_late_parity_piece_of_a_complete_packet_is_ignored() -> None:
    packet = os.urandom(5000)
    joiner = pieces.Joiner()
    *data, parity = pieces.cut(packet, 3, 1000, parity=True)
    assert [joiner.add(piece) for piece in data][-1] == packet
    assert joiner.add(parity) is None and joiner.dropped == 0


def test_pieces_that_do_not_fit_together_make_nothing() -> None:
    joiner = pieces.Joiner()
    assert joiner.add(b"\x00") is None  # shorter than a header
    assert joiner.add(pieces.HEADER.pack(1, 5, 3) + b"x") is None  # index past the count
    assert joiner.add(pieces.HEADER.pack(2, 0, 3) + b"a") is None
    assert joiner.add(pieces.HEADER.pack(2, 1, 4) + b"b") is None  # another count
    assert joiner.dropped == 3
    # a parity piece whose length does not match the pieces rebuilds nothing
    bad = pieces.HEADER.pack(3, pieces.PARITY, 2) + pieces.LENGTH.pack(999) + b"zz"
    assert joiner.add(pieces.HEADER.pack(3, 0, 2) + b"ab") is None
    assert joiner.add(bad) is None and joiner.rebuilt == 0


def test_a_packet_needing_too_many_pieces_is_refused() -> None:
    try:
        pieces.cut(b"x" * 300, 1, 1)
    except ValueError:
        return
    raise AssertionError("300 one-byte pieces were cut")
