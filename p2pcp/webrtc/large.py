"""Large SCTP packets between two p2pcp peers whose route carries them.

aiortc pays per packet, so on one host most of the speed comes from packets of 64 KB instead of
1.2 KB. The SCTP packet (64028 bytes) is more than one DTLS record holds (16384 bytes of
plaintext at most), so it goes out as consecutive records in one UDP datagram (RFC 6347 section
4.1.1 allows several records per datagram) and the receiver joins the records of a datagram back
into one packet (``dtls.py``). Each side says in its SDP that it takes them
(``transport.LARGE_LINE``); then a padded HEARTBEAT checks that the path carries one each way,
and the association sends DATA chunks of that size from then on (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiortc import rtcsctptransport as sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from .association import SizedAssociation

log = logging.getLogger(__name__)

LARGE_PACKETS = os.environ.get("P2PCP_LARGE_PACKETS", "1") != "0"
"""Whether to probe for large packets at all (P2PCP_LARGE_PACKETS=0 turns it off, for tests
and for comparison)."""
LARGE_DATA = 64000
"""User data per DATA chunk once large packets are on: four DTLS records in one datagram."""
SINGLE_RECORD_DATA = 16000
"""The large size of earlier p2pcp versions, whose SCTP packet (16028 bytes) fits one record:
used with a peer that says it takes only that much."""
MAX_RECORD = 16384
"""Largest DTLS record plaintext (2^14)."""
RECORD_OVERHEAD = 64
"""Bytes a record adds to its plaintext, at most (AES-GCM adds 37: header, nonce, tag)."""
SCTP_OVERHEAD = 28
"""SCTP common header (12) and DATA chunk header (16)."""
PROBE_TIMEOUT = 1.0
PROBE_MARK = b"p2pcp-large-packet-probe:"
IP_MTU = 14  # Linux <linux/in.h>; the socket module does not export it


def needed_mtu(size: int) -> int:
    """The path MTU that carries a DATA packet of ``size`` user bytes unfragmented: the SCTP
    packet, the overhead of each DTLS record it takes, UDP's 8 bytes and IPv6's 40."""
    packet = size + SCTP_OVERHEAD
    records = -(-packet // MAX_RECORD)
    return packet + records * RECORD_OVERHEAD + 8 + 40


def path_mtu(address: tuple[str, int]) -> int:
    """The MTU of this machine's route to ``address`` (Linux IP_MTU on a connected UDP socket;
    0 where unknown). Large packets are only worth it where they need no IP fragmentation: on
    the same host (the loopback route, MTU 65536) or on jumbo-frame links. A fragmented 64 KB
    packet is lost when any of its 44 fragments is, which multiplies the loss of a lossy path."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return 0


class LargePackets(SizedAssociation):
    """aiortc's SCTP that can switch its association to larger DATA chunks after a probe."""

    def __init__(self, transport: RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        self._probe_info: bytes | None = None
        self._probe_echo: asyncio.Future[None] | None = None

    async def probe_large_packets(self, data_size: int = LARGE_DATA) -> bool:
        """Send one HEARTBEAT padded to the size of a DATA packet of ``data_size`` user bytes;
        if its echo comes back within PROBE_TIMEOUT, the peer took a packet that large (its DTLS
        and SCTP accept them: only a peer with these changes does, an unmodified aiortc's
        1500-byte buffer cuts the record) and the path carried one each way. Then this
        association sends DATA chunks of that size from now on. A HEARTBEAT is never
        retransmitted, so a lost probe costs nothing: the standard size simply stays."""
        if not LARGE_PACKETS:
            return False
        # HEARTBEAT: chunk header 4, parameter header 4, info; DATA: chunk header 16, user data.
        self._probe_info = PROBE_MARK + os.urandom(data_size + 8 - len(PROBE_MARK))
        self._probe_echo = asyncio.get_running_loop().create_future()
        chunk = sctp.HeartbeatChunk()
        chunk.params = [(1, self._probe_info)]
        try:
            await self._send_chunk(chunk)
            await asyncio.wait_for(self._probe_echo, PROBE_TIMEOUT)
        except (TimeoutError, ConnectionError, OSError):
            log.debug("large packets: no echo of the probe, standard size kept (%d)", data_size)
            return False
        finally:
            self._probe_info = self._probe_echo = None
        self.data_size = data_size
        log.debug("large packets: the probe came back, DATA chunks of %d bytes", data_size)
        return True

    async def _receive_chunk(self, chunk: sctp.Chunk) -> None:
        if isinstance(chunk, sctp.HeartbeatAckChunk) and self._probe_echo is not None:
            for _, value in chunk.params:
                if value == self._probe_info and not self._probe_echo.done():
                    self._probe_echo.set_result(None)
        await super()._receive_chunk(chunk)
