"""SCTP packets cut into pieces, each its own DTLS record, and joined again: pure functions.

Between two p2pcp peers that both say so in their SDP (``transport.PIECES_LINE``), every SCTP
packet travels as one or more DTLS records whose plaintext starts with a 4-byte header: the
packet's number (16 bits, counting up), the piece's index and the number of pieces. A 64 KB
packet then crosses an Ethernet path as 47 datagrams of one record each, none of them larger
than the MTU: no IP fragmentation (which routers may drop, and whose reassembly memory in the
receiving kernel fills up on a lossy path until every fragment is dropped), and SCTP still pays
its per-packet work once per 64 KB. On the same host the records of a packet go out together
in one datagram, as before.

A packet of several pieces may carry one more, a parity piece (index PARITY): the packet's
length, then the XOR of its pieces, each padded to the first one's length. With it, any one
lost piece is rebuilt from the others, so a path that loses 0.5% of its datagrams loses 2.5%
of 48-piece packets instead of 21% (the sender adds it once it sees loss). A packet missing
more is dropped here, as a lost datagram would be, and SCTP sends it again; at most MAX_PENDING
incomplete packets are kept.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HBB")
"""Packet number, piece index (or PARITY), piece count."""
PARITY = 0xFF
"""The index of a parity piece."""
LENGTH = struct.Struct("!I")
"""The packet's length, at the start of a parity piece."""
MAX_PIECES = 254
MAX_PENDING = 16
"""Incomplete packets kept at once: pieces arrive in order on most paths, so a packet still
incomplete when 16 later ones have started lost a piece."""


def _xor(parts: list[bytes], size: int) -> bytes:
    """The XOR of ``parts``, each padded with zeros to ``size`` bytes."""
    total = 0
    for part in parts:
        total ^= int.from_bytes(part, "little")
    return total.to_bytes(size, "little")


def cut(packet: bytes, number: int, piece_size: int, parity: bool = False) -> list[bytes]:
    """``packet`` as pieces of at most ``piece_size`` bytes of it, each behind its header,
    and with ``parity`` a parity piece last (when there are several)."""
    count = max(1, -(-len(packet) // piece_size))
    if count > MAX_PIECES:
        raise ValueError(f"a packet of {len(packet)} bytes needs more than {MAX_PIECES} pieces")
    number &= 0xFFFF
    parts = [packet[i * piece_size : (i + 1) * piece_size] for i in range(count)]
    pieces = [HEADER.pack(number, index, count) + part for index, part in enumerate(parts)]
    if parity and count > 1:
        check = LENGTH.pack(len(packet)) + _xor(parts, piece_size)
        pieces.append(HEADER.pack(number, PARITY, count) + check)
    return pieces


class Joiner:
    """Joins pieces back into packets (one per direction of a connection)."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[int, dict[int, bytes]]] = {}
        """Packet number -> (its piece count, the pieces so far by index), oldest first."""
        self._done: dict[int, None] = {}
        """Numbers of the packets lately completed (a late parity piece finds them here)."""
        self.dropped = 0
        """Incomplete packets given up, and pieces that made no sense."""
        self.rebuilt = 0
        """Pieces rebuilt from a parity piece."""

    def add(self, piece: bytes) -> bytes | None:
        """The packet ``piece`` completes, or None."""
        if len(piece) < HEADER.size:
            self.dropped += 1
            return None
        number, index, count = HEADER.unpack_from(piece)
        if count == 1 and index == 0:
            return piece[HEADER.size :]
        if count == 0 or (index >= count and index != PARITY) or number in self._done:
            self.dropped += number not in self._done
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
        data = len(pieces) - (PARITY in pieces)
        if data == count:
            return self._complete(number, [pieces[i] for i in range(count)])
        if data == count - 1 and PARITY in pieces:
            return self._rebuild(number, count, pieces)
        return None

    def _complete(self, number: int, parts: list[bytes]) -> bytes:
        del self._pending[number]
        for older in [n for n in self._pending if MAX_PENDING < (number - n) % 65536 < 32768]:
            del self._pending[older]  # 16 packets later: a piece of it was lost
            self.dropped += 1
        self._done[number] = None
        if len(self._done) > MAX_PENDING:
            del self._done[next(iter(self._done))]
        return b"".join(parts)

    def _rebuild(self, number: int, count: int, pieces: dict[int, bytes]) -> bytes | None:
        """The packet, its one missing piece rebuilt from the parity piece."""
        check = pieces[PARITY]
        if len(check) <= LENGTH.size:
            self.dropped += 1
            return None
        (length,) = LENGTH.unpack_from(check)
        size = len(check) - LENGTH.size
        missing = next(i for i in range(count) if i not in pieces)
        others = [part for i, part in pieces.items() if i != PARITY]
        part = _xor([check[LENGTH.size :], *others], size)
        if missing == count - 1:
            part = part[: length - (count - 1) * size]
        if not 0 < len(part) <= size or length != (count - 1) * size + len(
            pieces.get(count - 1, part)
        ):
            self.dropped += 1
            return None
        pieces[missing] = part
        self.rebuilt += 1
        return self._complete(number, [pieces[i] for i in range(count)])
