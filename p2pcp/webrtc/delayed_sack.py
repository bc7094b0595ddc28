"""Delayed acknowledgements for aiortc's SCTP (RFC 4960 section 6.2).

aiortc acknowledges every packet that carried data. RFC 4960 lets a receiver acknowledge every
second packet, within 200 ms of the first unacknowledged one, and at once when data arrives
out of order or twice: so do we (within SACK_DELAY), and at once on a FORWARD TSN too. That
halves the SACKs this side builds, encrypts and sends, and the ones the sender parses: on
loopback 27.3 -> 31.7 MB/s, 4.0 -> 3.1 CPU seconds for the sender. It changes only what this
side sends, so any peer (Chromium, an unmodified aiortc) works with it. A plain RFC fix, written
up for upstream in docs/upstream/.

The received TSNs above a hole are kept and turned into gap blocks without sorting them all
for every packet: aiortc sorts and filters the whole set on every DATA chunk and walks it again
for every SACK, which with a hole in a window of hundreds of standard packets (a long lossy path,
where every packet past the hole is acknowledged at once) was the receiver's largest cost.
Ours advances the cumulative TSN by looking at the next TSN only, keeps the runs of TSNs
above it as they arrive (a new one usually extends the last run), and sorts, by offset from
the cumulative TSN (which stays right across the wrap of TSNs at 2^32, where aiortc's sort
of raw TSNs stopped the cumulative TSN for good), only when a hole below the top is filled.
"""

from __future__ import annotations

import asyncio

from aiortc import rtcsctptransport as sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.utils import uint32_gt, uint32_gte

from .association import STANDARD_DATA, SizedAssociation

SACK_EVERY = 2
"""Acknowledge at most every second packet with data (RFC 4960 section 6.2)..."""
SACK_BYTES = 8 * STANDARD_DATA
"""...and once that much data arrived since the last SACK: every 8 standard packets, every 2
large ones. Each SACK costs both sides a packet's worth of work (the receiver builds, encrypts
and sends it, the sender parses it): on the LAN lab with standard packets, a SACK every 8
instead of every 2 took 24.7 to 32.2 MB/s. The sender lets out what a SACK acknowledges at
once (congestion.BURST_BYTES), and slow start grows by as much (``sack_covers``). Only
towards a p2pcp peer: Chromium's sender lets out fewer packets than that per SACK and then
waits, so each round trip waited out SACK_DELAY (page -> CLI fell from 17 to 0.2 MB/s)."""


def sack_covers(packet: int) -> int:
    """User data one SACK of a p2pcp receiver acknowledges, with packets of ``packet`` bytes:
    SACK_BYTES (8 standard packets), or SACK_EVERY packets where those hold more (large
    ones)."""
    return max(SACK_EVERY * packet, SACK_BYTES)


QUICK_SACKS = 16
"""Packets with data acknowledged one by one at the start of an association (as Linux TCP's
quick acknowledgements): while the sender's window is a packet or two, waiting for a second
packet waits out SACK_DELAY every round trip (on the 20 ms lab, slow start from one 64000-byte
packet stalled 20 ms a round trip for its first few)."""
SACK_DELAY = 0.02
"""Longest delay (s) of an acknowledgement (RFC 4960 allows 200 ms; shorter keeps request and
answer exchanges quick)."""


class DelayedSack(SizedAssociation):
    """aiortc's SCTP acknowledging every second packet (RFC 4960 section 6.2)."""

    _runs: list[list[int]] | None = None
    """The TSNs received above the cumulative one as runs ``[first, last]``, in order (None:
    to be built from ``_sack_misordered``)."""

    def __init__(self, transport: RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        self.sack_every = SACK_EVERY
        """Packets with data per SACK (1: aiortc's own behaviour)."""
        self._unacked = 0
        """Packets with data received since the last SACK."""
        self._unacked_bytes = 0
        """User data received since the last SACK."""
        self._quick_sacks = QUICK_SACKS
        """SACKs still to be sent at once, for the first packets (QUICK_SACKS)."""
        self._sack_now = False
        """The next SACK goes out at once (the timer fired, or a FORWARD TSN came)."""
        self._sack_timer: asyncio.TimerHandle | None = None

    def _mark_received(self, tsn: int) -> bool:
        """aiortc 1.16.0's bookkeeping of a received TSN (True: a duplicate), linear: only
        the TSNs that follow the cumulative one are looked up to advance it."""
        last = self._last_received_tsn
        assert last is not None  # set by the handshake, before any data
        misordered = self._sack_misordered
        if uint32_gte(last, tsn) or tsn in misordered:
            self._sack_duplicates.append(tsn)
            return True
        misordered.add(tsn)
        modulo = sctp.SCTP_TSN_MODULO
        following = (last + 1) % modulo
        if following in misordered:
            while following in misordered:
                misordered.discard(following)
                last = following
                following = (last + 1) % modulo
            self._last_received_tsn = last
            self._runs = None if misordered else []
        elif self._runs is not None:
            runs = self._runs
            if runs and tsn == (runs[-1][1] + 1) % modulo:
                runs[-1][1] = tsn  # the usual case: the next TSN above a hole
            elif not runs or (tsn - last) % modulo > (runs[-1][1] - last) % modulo:
                runs.append([tsn, tsn])
            else:
                self._runs = None  # a hole below the top filled: built again when needed
        if self._sack_duplicates:
            self._sack_duplicates = [x for x in self._sack_duplicates if uint32_gt(x, last)]
        return False

    def _received_gaps(self) -> list[tuple[int, int]]:
        """The gap blocks of the TSNs received above the cumulative one (offsets from it),
        from the runs ``_mark_received`` keeps (built again from the set when it could not)."""
        last = self._last_received_tsn
        assert last is not None
        modulo = sctp.SCTP_TSN_MODULO
        if self._runs is None:
            runs: list[list[int]] = []
            for offset in sorted((tsn - last) % modulo for tsn in self._sack_misordered):
                if runs and offset == runs[-1][1] + 1:
                    runs[-1][1] = offset
                else:
                    runs.append([offset, offset])
            self._runs = [[(last + a) % modulo, (last + b) % modulo] for a, b in runs]
        return [((a - last) % modulo, (b - last) % modulo) for a, b in self._runs]

    async def _send_sack_now(self) -> None:
        """aiortc 1.16.0's ``_send_sack``, with ``_received_gaps``."""
        sack = sctp.SackChunk()
        sack.cumulative_tsn = self._last_received_tsn
        sack.advertised_rwnd = max(0, self._advertised_rwnd)
        sack.duplicates = self._sack_duplicates[:]
        sack.gaps = self._received_gaps()
        await self._send_chunk(sack)
        self._sack_duplicates.clear()
        self._sack_needed = False

    async def _receive_data_chunk(self, chunk: sctp.DataChunk) -> None:
        self._unacked_bytes += len(chunk.user_data)
        await super()._receive_data_chunk(chunk)

    async def _send_sack(self) -> None:
        pending = self._unacked + 1
        urgent, self._sack_now = self._sack_now, False
        if self._quick_sacks:
            self._quick_sacks -= 1
            urgent = True
        enough = pending >= self.sack_every and (
            self.sack_every == 1 or not self.peer_is_p2pcp or self._unacked_bytes >= SACK_BYTES
        )
        if urgent or enough or self._sack_misordered or self._sack_duplicates:
            self._unacked = self._unacked_bytes = 0
            if self._sack_timer is not None:
                self._sack_timer.cancel()
                self._sack_timer = None
            await self._send_sack_now()
            return
        self._unacked = pending
        if self._sack_timer is None:
            loop = asyncio.get_running_loop()
            self._sack_timer = loop.call_later(SACK_DELAY, self._sack_delay_over)

    def _sack_delay_over(self) -> None:
        self._sack_timer = None
        if self._sack_needed and self._association_state == self.State.ESTABLISHED:
            self._sack_now = True
            asyncio.ensure_future(self._send_sack())

    async def _receive_forward_tsn_chunk(self, chunk: sctp.ForwardTsnChunk) -> None:
        self._sack_now = True
        await super()._receive_forward_tsn_chunk(chunk)
        self._runs = None  # aiortc moved the cumulative TSN and filtered the set itself
