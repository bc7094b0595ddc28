"""SCTP packets cut into pieces, each its own DTLS record, and joined again: pure functions.

Between two p2pcp peers that both say so in their SDP (``transport.PIECES_LINE``), every SCTP
packet travels as one or more DTLS records whose plaintext starts with a 4-byte header: the
packet's number (16 bits, counting up), the piece's index and the number of pieces. A 64 KB
packet then crosses an Ethernet path as 47 datagrams of one record each, none of them larger
than the MTU: no IP fragmentation (which routers may drop, and whose reassembly memory in the
receiving kernel fills up on a lossy path until every fragment is dropped), and SCTP still pays
its per-packet work once per 64 KB. On the same host the records of a packet go out together
in one datagram, as before.

A packet whose pieces do not all arrive is dropped here, as a lost datagram would be, and SCTP
sends it again; at most MAX_PENDING incomplete packets are kept.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HBB")
"""Packet number, piece index, piece count."""
MAX_PIECES = 255
MAX_PENDING = 16
"""Incomplete packets kept at once: pieces arrive in order on most paths, so a packet still
incomplete when 16 later ones have started lost a piece."""


def cut(packet: bytes, number: int, piece_size: int) -> list[bytes]:
    """``packet`` as pieces of at most ``piece_size`` bytes of it, each behind its header."""
    count = max(1, -(-len(packet) // piece_size))
    if count > MAX_PIECES:
        raise ValueError(f"a packet of {len(packet)} bytes needs more than {MAX_PIECES} pieces")
    number &= 0xFFFF
    return [
        HEADER.pack(number, index, count) + packet[index * piece_size : (index + 1) * piece_size]
        for index in range(count)
    ]


class Joiner:
    """Joins pieces back into packets (one per direction of a connection)."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[int, dict[int, bytes]]] = {}
        """Packet number -> (its piece count, the pieces so far by index), oldest first."""
        self.dropped = 0
        """Incomplete packets given up, and pieces that made no sense."""

    def add(self, piece: bytes) -> bytes | None:
        """The packet ``piece`` completes, or None."""
        if len(piece) < HEADER.size:
            self.dropped += 1
            return None
        number, index, count = HEADER.unpack_from(piece)
        if count == 1 and index == 0:
            return piece[HEADER.size :]
        if index >= count:
            self.dropped += 1
            return None
        known = self._pending.get(number)
        if known is None:
            known = self._pending[number] = (count, {})
            if len(self._pending) > MAX_PENDING:
                del self._pending[next(iter(self._pending))]
                self.dropped += 1
        elif known[0] != count:
            self.dropped += 1
            return None
        pieces = known[1]
        pieces[index] = piece[HEADER.size :]
        if len(pieces) < count:
            return None
        del self._pending[number]
        return b"".join(pieces[i] for i in range(count))
