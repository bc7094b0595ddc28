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
import time
from collections.abc import Callable

from aiortc import rtcsctptransport as sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from .association import STANDARD_DATA, SizedAssociation
from .dtls import MAX_RECORD, RECORD_OVERHEAD

log = logging.getLogger(__name__)

LARGE_PACKETS = os.environ.get("P2PCP_LARGE_PACKETS", "1") != "0"
"""Whether to probe for large packets at all (P2PCP_LARGE_PACKETS=0 turns it off, for tests
and for comparison)."""
PIECES = os.environ.get("P2PCP_PIECES", "1") != "0"
"""Whether to offer pieces (pieces.py) in the SDP (P2PCP_PIECES=0 plays an earlier p2pcp, for
tests)."""
LARGE_DATA = 64000
"""User data per DATA chunk once large packets are on: four DTLS records in one datagram."""
SINGLE_RECORD_DATA = 16000
"""The large size of earlier p2pcp versions, whose SCTP packet (16028 bytes) fits one record:
used with a peer that says it takes only that much."""
SCTP_OVERHEAD = 28
"""SCTP common header (12) and DATA chunk header (16)."""
LOSS_WINDOW = 256
"""DATA chunks sent between two looks at the loss rate (or LOSS_SECONDS, whichever is first)."""
LOSS_SECONDS = 1.0
TIMEOUTS_PER_PACKET = 1 / 32
"""Retransmission timeouts per packet sent above which a size steps down whatever the loss
count says: SCTP recovers a lost packet by fast retransmit while enough packets follow it, and
falls back on the timeout (200 ms at least) when they do not, as on a path that loses most of
them. More than one in 32 is a path this size does not suit (on the LAN lab at 1% loss, 64000-
byte packets ran at 1.4 MB/s from timeout to timeout)."""
MAX_FRAME_LOSS = {LARGE_DATA: 0.009, SINGLE_RECORD_DATA: 0.02}
"""Loss per datagram above which a size costs more than the next smaller one saves (LAN lab,
MTU 1500, 1 Gbit/s: 64000-byte packets beat 16000 at 0.5% loss and lose to them at 1%;
16000 beat the standard size at 1% and lose at 3%). The path's loss per datagram comes from
the packets lost (``datagram_loss``, which counts the parity piece: with it, at 1% per datagram
only 7.5% of 45-datagram packets are lost, which without it read as 0.16%, and 64000-byte
packets stayed on the 100 ms + 1% lab at 2.3-2.8 MB/s where 16000 ran at 3.6-3.7). 0.9%, not
less: at 0.5% (the lossy LAN lab) one window in a few read 0.77-0.80% and stepped a transfer
down for good (37-40 MB/s against 41-45)."""
MAX_FRAME_LOSS_LONG = {LARGE_DATA: 0.005, SINGLE_RECORD_DATA: 0.02}
"""The same where the round trip is LONG_RTT or more: a packet lost twice waits for a timeout
(200 ms at least) and its window starts again from one packet, which costs a long path far more
than a LAN, and its windows of LOSS_SECONDS hold few packets, so their estimate is rough."""
LONG_RTT = 0.03
PROBE_TRIES = 3
"""Probes of one size before the next smaller is tried: on a lossy path one probe of 47
datagrams each way may well be lost while most packets get through."""
PROBE_TIMEOUT = 1.0
"""Seconds to wait for a probe's echo (less, 8 round trips and at least 0.3 s, once SCTP has
measured one)."""
PROBE_MARK = b"p2pcp-large-packet-probe:"
IP_MTU = 14  # Linux <linux/in.h>; the socket module does not export it


def datagram_loss(packet_loss: float, datagrams: int, parity: bool) -> float:
    """The path's loss per datagram that loses ``packet_loss`` of packets of ``datagrams``
    datagrams each: a packet is lost with any of them, or with a parity piece (pieces.py)
    with any two of its ``datagrams + 1``. Without parity that is ``1 - (1 - P) ** (1 / n)``;
    with it, found by bisection (packet loss grows with the datagram loss)."""
    if packet_loss <= 0:
        return 0.0
    if not parity or datagrams <= 1:
        return float(1 - (1 - packet_loss) ** (1 / max(datagrams, 1)))
    n = datagrams + 1
    low, high = 0.0, 1.0
    for _ in range(40):
        p = (low + high) / 2
        lost = 1 - (1 - p) ** n - n * p * (1 - p) ** (n - 1)
        low, high = (p, high) if lost < packet_loss else (low, p)
    return (low + high) / 2


def needed_mtu(size: int) -> int:
    """The path MTU that carries a DATA packet of ``size`` user bytes unfragmented: the SCTP
    packet, the overhead of each DTLS record it takes, UDP's 8 bytes and IPv6's 40."""
    packet = size + SCTP_OVERHEAD
    records = -(-packet // MAX_RECORD)
    return packet + records * RECORD_OVERHEAD + 8 + 40


def fragments(size: int, mtu: int) -> int:
    """The IPv4 fragments a DATA packet of ``size`` user bytes takes on a route of ``mtu``
    (1: it fits; 0 where the MTU is unknown)."""
    if mtu <= 0:
        return 0
    payload = needed_mtu(size) - 40  # the UDP datagram: UDP header and its DTLS records
    per_fragment = (mtu - 20) // 8 * 8
    return -(-payload // per_fragment)


def path_mtu(address: tuple[str, int]) -> int:
    """The MTU of this machine's route to ``address`` (Linux IP_MTU on a connected UDP socket;
    0 where unknown): the loopback route's is 65536, Ethernet's 1500."""
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
        self.sizes: list[int] = [STANDARD_DATA]
        """The sizes this association may send, largest first (those the probes passed, then
        the standard size); it steps down along them when too many packets are lost."""
        self.echo_probes: Callable[[], bool] = lambda: True
        """Whether to answer the peer's probes now (no, while this side's path is a TURN relay
        over TCP: coturn drops bursts it cannot put on the TCP connection at once, so a probe
        gets through where a stream of large packets does not)."""
        self.datagrams: dict[int, int] = {}
        """Datagrams a packet of each size takes on this path (set before probing; 1 if
        missing)."""
        self._window = (0, 0, 0, 0.0)
        """``packets_sent``, ``packets_lost``, ``timeouts`` and the time when the loss was last
        looked at."""

    async def probe_large_packets(self, data_size: int = LARGE_DATA) -> bool:
        """Send a HEARTBEAT padded to the size of a DATA packet of ``data_size`` user bytes, up
        to PROBE_TRIES times; if an echo comes back within PROBE_TIMEOUT, the peer took a packet
        that large (its DTLS and SCTP accept them: only a peer with these changes does, an
        unmodified aiortc's 1500-byte buffer cuts the record) and the path carried one each
        way. Then this association sends DATA chunks of that size from now on. A HEARTBEAT is
        never retransmitted, so a lost probe costs nothing: the standard size simply stays."""
        if not LARGE_PACKETS:
            return False
        for _ in range(PROBE_TRIES):
            if await self._probe(data_size):
                self.data_size = data_size
                self.sizes = [data_size, *(s for s in MAX_FRAME_LOSS if s < data_size)]
                self.sizes.append(STANDARD_DATA)
                self._start_window()
                log.debug("large packets: the probe came back, DATA chunks of %d bytes", data_size)
                return True
        log.debug("large packets: no echo of the probe, standard size kept (%d)", data_size)
        return False

    async def _probe(self, data_size: int) -> bool:
        # HEARTBEAT: chunk header 4, parameter header 4, info; DATA: chunk header 16, user data.
        self._probe_info = PROBE_MARK + os.urandom(data_size + 8 - len(PROBE_MARK))
        self._probe_echo = asyncio.get_running_loop().create_future()
        chunk = sctp.HeartbeatChunk()
        chunk.params = [(1, self._probe_info)]
        try:
            await self._send_chunk(chunk)
            srtt = self._srtt  # none yet right after the handshake
            timeout = PROBE_TIMEOUT if srtt is None else min(PROBE_TIMEOUT, max(0.3, 8 * srtt))
            await asyncio.wait_for(self._probe_echo, timeout)
        except (TimeoutError, ConnectionError, OSError):
            return False
        finally:
            self._probe_info = self._probe_echo = None
        return True

    def _start_window(self) -> None:
        now = time.monotonic()
        self._window = (self.packets_sent, self.packets_lost, self.timeouts, now)

    def _adapt_size(self) -> None:
        """Every LOSS_WINDOW packets (or LOSS_SECONDS), estimate the path's loss per datagram
        from the packets lost, and step down to the next smaller size when it is over
        MAX_FRAME_LOSS (MAX_FRAME_LOSS_LONG on a long path) for this one, or when timeouts are
        doing the recovering. Never up: a path that lost that much will again."""
        long_path = self._srtt is not None and self._srtt >= LONG_RTT
        limit = (MAX_FRAME_LOSS_LONG if long_path else MAX_FRAME_LOSS).get(self.data_size)
        if limit is None:
            return
        sent_before, lost_before, timeouts_before, since = self._window
        sent = self.packets_sent - sent_before
        timeouts = self.timeouts - timeouts_before
        stalling = timeouts >= 3  # little new data goes out while timeouts do the recovering
        if (
            sent < LOSS_WINDOW
            and (sent < 8 or time.monotonic() - since < LOSS_SECONDS)
            and not stalling
        ):
            return
        lost = self.packets_lost - lost_before
        self._start_window()
        packet_loss = min(lost / max(sent, 1), 0.99)
        parity = bool(getattr(getattr(self.transport, "_ssl", None), "parity", False))
        frame_loss = datagram_loss(packet_loss, self.datagrams.get(self.data_size, 1), parity)
        log.debug(
            "large packets: %d sent, %d lost, %d timeouts at %d bytes",
            sent,
            lost,
            timeouts,
            self.data_size,
        )
        send_parity = getattr(self.transport, "send_parity", None)  # dtls.py's transport
        if send_parity is not None:
            send_parity(lost > 0)  # on a lossy path one lost piece per packet is rebuilt
        if (
            not stalling
            and frame_loss <= limit
            and (timeouts < 2 or timeouts / sent <= TIMEOUTS_PER_PACKET)
        ):
            return
        smaller = [size for size in self.sizes if size < self.data_size]
        log.debug(
            "large packets: %d of the last %d lost (%.2f%% per datagram), %d timeouts; down "
            "from %d to %d",
            lost,
            sent,
            frame_loss * 100,
            timeouts,
            self.data_size,
            smaller[0],
        )
        self.data_size = smaller[0]

    async def _transmit(self) -> None:
        self._adapt_size()
        await super()._transmit()

    async def _receive_chunk(self, chunk: sctp.Chunk) -> None:
        if (
            isinstance(chunk, sctp.HeartbeatChunk)
            and any(value.startswith(PROBE_MARK) for _, value in chunk.params)
            and not self.echo_probes()
        ):
            log.debug("large packets: the peer's probe left unanswered (TURN over TCP here)")
            return
        if isinstance(chunk, sctp.HeartbeatAckChunk) and self._probe_echo is not None:
            for _, value in chunk.params:
                if value == self._probe_info and not self._probe_echo.done():
                    self._probe_echo.set_result(None)
        await super()._receive_chunk(chunk)
