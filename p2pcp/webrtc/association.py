"""One SCTP association with its own packet size: the base of our SCTP changes.

aiortc cuts messages into DATA chunks of a module constant (``USERDATA_MAX_LENGTH``), which it
also uses for its congestion window arithmetic. A per-process switch would leak from one
association to the next (two peers in one test process, or the pages a server embeds), so the
size is a field of the association, and the methods of aiortc 1.16.0 that read the constant are
copied here (``_send``) and in ``congestion.py`` with ``self.data_size`` in its place.
"""

from __future__ import annotations

import math

from aiortc import rtcsctptransport as sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.utils import uint16_add

STANDARD_DATA = sctp.USERDATA_MAX_LENGTH
"""aiortc's user data per DATA chunk (1160 bytes: a packet that fits IPv6's minimum MTU)."""


class SizedAssociation(sctp.RTCSctpTransport):
    """aiortc's SCTP transport whose DATA chunk size belongs to the association."""

    def __init__(self, transport: RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        self.peer_is_p2pcp = False
        """Whether the peer is a p2pcp (its SDP says so): it then acknowledges fewer packets
        and takes larger bursts (delayed_sack, congestion), which other stacks' senders and
        receivers (Chromium's) answer by stalling."""
        self.data_size: int = STANDARD_DATA
        """User data per DATA chunk this association sends (large after a probe)."""
        self.packets_sent = 0
        """DATA chunks sent for the first time (counted by ``congestion``)."""
        self.packets_lost = 0
        """DATA chunks whose first transmission was taken as lost (counted by ``congestion``)."""
        self.timeouts = 0
        """Retransmission timeouts (counted by ``congestion``)."""

    async def _send(
        self,
        stream_id: int,
        pp_id: int,
        user_data: bytes,
        expiry: float | None = None,
        max_retransmits: int | None = None,
        ordered: bool = True,
    ) -> None:
        """aiortc 1.16.0's ``_send``, cutting at ``self.data_size``."""
        if ordered:
            stream_seq = self._outbound_stream_seq.get(stream_id, 0)
        else:
            stream_seq = 0

        size = self.data_size
        fragments = math.ceil(len(user_data) / size)
        pos = 0
        for fragment in range(0, fragments):
            chunk = sctp.DataChunk()
            chunk.flags = 0
            if not ordered:
                chunk.flags = sctp.SCTP_DATA_UNORDERED
            if fragment == 0:
                chunk.flags |= sctp.SCTP_DATA_FIRST_FRAG
            if fragment == fragments - 1:
                chunk.flags |= sctp.SCTP_DATA_LAST_FRAG
            chunk.tsn = self._local_tsn
            chunk.stream_id = stream_id
            chunk.stream_seq = stream_seq
            chunk.protocol = pp_id
            chunk.user_data = user_data[pos : pos + size]

            chunk._abandoned = False
            chunk._acked = False
            chunk._book_size = len(chunk.user_data)
            chunk._expiry = expiry
            chunk._in_flight = False
            chunk._max_retransmits = max_retransmits
            chunk._misses = 0
            chunk._retransmit = False
            chunk._sent_count = 0
            chunk._sent_time = None

            pos += size
            self._local_tsn = sctp.tsn_plus_one(self._local_tsn)
            self._outbound_queue.append(chunk)

        if ordered:
            self._outbound_stream_seq[stream_id] = uint16_add(stream_seq, 1)

        await self._transmit()
