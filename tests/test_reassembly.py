"""p2pcp/webrtc/reassembly.py: looking for messages only when one can be complete gives the
same messages, in the same order, as aiortc's look after every chunk, whatever order the
chunks of several messages arrive in."""

from __future__ import annotations

import random

from aiortc import rtcsctptransport as sctp
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.webrtc.reassembly import InboundStream


def _chunks(sizes: list[int]) -> list[sctp.DataChunk]:
    """The DATA chunks of ordered messages of ``sizes`` chunks each, TSNs counting from 1."""
    chunks = []
    tsn = 1
    for seq, size in enumerate(sizes):
        for index in range(size):
            chunk = sctp.DataChunk()
            chunk.flags = (sctp.SCTP_DATA_FIRST_FRAG if index == 0 else 0) | (
                sctp.SCTP_DATA_LAST_FRAG if index == size - 1 else 0
            )
            chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = tsn, 0, seq, 53
            chunk.user_data = bytes([seq % 256, index % 256])
            chunks.append(chunk)
            tsn += 1
    return chunks


def _messages(stream: sctp.InboundStream, chunks: list[sctp.DataChunk], lazy: bool) -> list[bytes]:
    out = []
    for chunk in chunks:
        stream.add_chunk(chunk)
        if not lazy or not isinstance(stream, InboundStream) or stream.last_chunks:
            out += [message for _, _, message in stream.pop_messages()]
    return out


@given(st.lists(st.integers(1, 12), min_size=1, max_size=8), st.randoms(), st.integers(0, 6))
def test_the_same_messages_come_out_in_the_same_order(
    sizes: list[int], rng: random.Random, swaps: int
) -> None:
    arrivals = _chunks(sizes)
    for _ in range(swaps):  # some chunks overtake others
        i, j = rng.randrange(len(arrivals)), rng.randrange(len(arrivals))
        arrivals[i], arrivals[j] = arrivals[j], arrivals[i]
    ours = InboundStream()
    got = _messages(ours, arrivals, lazy=True)
    assert got == _messages(sctp.InboundStream(), arrivals, lazy=False)
    assert len(got) == len(sizes)  # every chunk arrived: every message came out
    assert ours.last_chunks == 0 and ours.reassembly == []


def test_in_order_chunks_are_looked_through_once_per_message() -> None:
    looks = 0

    class Counting(InboundStream):
        def pop_messages(self):  # type: ignore[no-untyped-def]
            nonlocal looks
            looks += 1
            yield from super().pop_messages()

    stream = Counting()
    assert len(_messages(stream, _chunks([221, 221, 221]), lazy=True)) == 3
    assert looks == 3  # aiortc looked 663 times, walking the queue each time
