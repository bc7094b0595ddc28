"""Reassembly that looks for a complete message only when one can be complete.

aiortc looks for complete messages in a stream's reassembly queue after every DATA chunk, and
each look walks the queue from its start: a message of n chunks costs n * n / 2 steps. With
standard 1160-byte chunks a 256 KB frame is 221 chunks, about 24,000 steps; that was the
receiver's largest cost (18% in the first profile, docs/performance.md). A message can only be
complete once its last chunk is in the queue, so the stream counts the last chunks it holds,
and the association looks only when the arriving chunk is a last one, or when a last one is
already waiting for a gap to be filled. The same messages come out in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiortc import rtcsctptransport as sctp

from .association import SizedAssociation


class InboundStream(sctp.InboundStream):
    """aiortc's inbound stream, counting the last chunks of messages in its queue."""

    def __init__(self) -> None:
        super().__init__()
        self.last_chunks = 0
        """Chunks in the reassembly queue that end a message."""

    def add_chunk(self, chunk: sctp.DataChunk) -> None:
        super().add_chunk(chunk)
        if chunk.flags & sctp.SCTP_DATA_LAST_FRAG:
            self.last_chunks += 1

    def pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        for message in super().pop_messages():
            self.last_chunks -= 1  # each message leaves with its last chunk
            yield message

    def prune_chunks(self, tsn: int) -> int:
        size = super().prune_chunks(tsn)
        self.last_chunks = sum(
            1 for chunk in self.reassembly if chunk.flags & sctp.SCTP_DATA_LAST_FRAG
        )
        return size


class Reassembly(SizedAssociation):
    """aiortc's SCTP whose streams are looked through only when a message can be complete."""

    def _get_inbound_stream(self, stream_id: int) -> sctp.InboundStream:
        if stream_id not in self._inbound_streams:
            self._inbound_streams[stream_id] = InboundStream()
        return self._inbound_streams[stream_id]

    async def _receive_data_chunk(self, chunk: sctp.DataChunk) -> None:
        """aiortc 1.16.0's DATA chunk handling, looking for messages only when one can be
        complete."""
        self._sack_needed = True

        # mark as received
        if self._mark_received(chunk.tsn):
            return

        # find stream
        inbound_stream = self._get_inbound_stream(chunk.stream_id)

        # defragment data
        inbound_stream.add_chunk(chunk)
        self._advertised_rwnd -= len(chunk.user_data)
        if not isinstance(inbound_stream, InboundStream) or inbound_stream.last_chunks:
            for message in inbound_stream.pop_messages():
                self._advertised_rwnd += len(message[2])
                await self._receive(*message)

        await self._reset_deferred_streams()
