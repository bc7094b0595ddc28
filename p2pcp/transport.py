"""The WebRTC transport: the only user of aiortc's API (the ``webrtc`` package alone changes
the internals of aiortc and aioice).

It builds the one ICE configuration (explicit server list, empty unless configured, so aiortc
never falls back to a public STUN server), negotiates one reliable, ordered, pre-negotiated data
channel, and exposes it as frames in and frames out with backpressure on both ends: ``send``
waits while aiortc holds more than :data:`SEND_HIGH_WATER` bytes, and the receive queue is
bounded by the protocol's credit window (a peer that ignores it is cut off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from . import webrtc
from .errors import ConnectError, PeerError, ProtocolError
from .netcheck import IcePlan, IceServer
from .webrtc import dtls, ice, large
from .webrtc.association import STANDARD_DATA
from .webrtc.sctp import SctpTransport

log = logging.getLogger(__name__)

CHANNEL_LABEL = "p2pcp"
CHANNEL_ID = 0
LOCAL_MAX_MESSAGE = 256 * 1024
DEFAULT_REMOTE_MAX_MESSAGE = 65536
SEND_HIGH_WATER = 1024 * 1024
SEND_LOW_WATER = 256 * 1024
CLOSE_TIMEOUT = 3.0
CONSENT_POLL = 1.0
LOST = (
    "the connection to the peer was lost (no answer for "
    f"{ice.CONSENT_INTERVAL * ice.CONSENT_FAILURES:.0f} s)"
)
OPEN_TIMEOUT = 20.0
"""Seconds ICE and DTLS may take. A path that exists is found in a few seconds, even through a
TURN relay on a lossy 100 ms link; waiting longer only delays the error."""


def ice_configuration(servers: list[IceServer]) -> RTCConfiguration:
    """The one place the peer connection's ICE configuration is built. Never None: an empty
    list means host candidates only, where None would make aiortc use Google's STUN server."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers
        ]
    )


LARGE_LINE = "a=x-p2pcp-large-packets:"
LARGE_ATTRIBUTE = f"{LARGE_LINE}{large.LARGE_DATA}"
"""Session-level SDP line: this side takes SCTP packets of up to LARGE_DATA bytes of user data,
in DTLS records of up to 16 KiB each, several to a datagram. Earlier p2pcp versions send 16000
here: they take packets of one record. Unknown attributes are ignored by other stacks (aiortc,
browsers), which therefore never get a large packet, not even the probe."""
PIECES_LINE = "a=x-p2pcp-pieces:1"
"""Session-level SDP line: this side cuts every SCTP packet into pieces, one DTLS record each
behind a 4-byte header, and joins the peer's (p2pcp/webrtc/pieces.py). Where both sides say
so, a large packet crosses an Ethernet path as datagrams that fit its MTU."""
MIN_MTU = 1280
"""IPv6's minimum MTU: assumed where the route's is unknown."""
TURN_OVERHEAD = 36
"""What a TURN relay's framing adds to a datagram at most (a Send or Data indication; a
ChannelData message adds 4)."""
IP_UDP_OVERHEAD = 48
"""IPv6 and UDP headers: what a datagram may carry is the path's MTU less this."""


def advertised_large_data(sdp: str) -> int:
    """The user data per DATA chunk the peer's SDP says it takes (0: the standard size)."""
    for line in sdp.splitlines():
        if line.startswith(LARGE_LINE) and line[len(LARGE_LINE) :].isdigit():
            return int(line[len(LARGE_LINE) :])
    return 0


def large_sizes(peer_takes: int, several_records: bool = True) -> list[int]:
    """Our large sizes that the peer takes and the DTLS connection carries (packets of several
    records, or only of one), largest first; empty: the standard size stays."""
    return [
        size
        for size in (large.LARGE_DATA, large.SINGLE_RECORD_DATA)
        if size <= peer_takes and (several_records or size + large.SCTP_OVERHEAD <= dtls.MAX_RECORD)
    ]


def _takes_pieces() -> bool:
    """Whether this side cuts packets into pieces: our DTLS transport is in force (pinned
    pyOpenSSL), whether large packets are on or not (a standard packet is one piece)."""
    return large.PIECES and webrtc.dtls_substituted()


def _with_p2pcp_lines(sdp: str, pieces: bool = True) -> str:
    """``sdp`` with LARGE_ATTRIBUTE (where large packets are on) and PIECES_LINE (where this
    side takes pieces and ``pieces``: an answer has it only if the offer had) before its first
    media section."""
    lines = [LARGE_ATTRIBUTE] if webrtc.in_force("large packets") else []
    lines += [PIECES_LINE] if pieces and _takes_pieces() else []
    if not lines or "\nm=" not in sdp:
        return sdp
    head, media = sdp.split("\nm=", 1)
    return head + "\n" + "".join(f"{line}\r\n" for line in lines) + "m=" + media


class Transport:
    """One peer connection with one data channel, carrying binary frames."""

    def __init__(self, plan: IcePlan) -> None:
        self._plan = plan
        webrtc.install()  # our subclasses where aiortc builds its transports (p2pcp/webrtc/)
        self._pc = RTCPeerConnection(ice_configuration(plan.servers))
        self._channel = self._pc.createDataChannel(
            CHANNEL_LABEL, negotiated=True, id=CHANNEL_ID, ordered=True
        )
        self._channel.bufferedAmountLowThreshold = SEND_LOW_WATER
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._inbox_bytes = 0
        self.max_inbox_bytes = 64 * 1024 * 1024
        """Bytes the peer may have queued with us unread before it is cut off."""
        self._opened = asyncio.get_running_loop().create_future()
        self._low = asyncio.Event()
        self._closed = asyncio.Event()
        self._failure: Exception | None = None
        self.last_sent = self.last_heard = time.monotonic()
        """When a frame last left and last arrived (for keep-alives, ``heartbeat.py``)."""
        self.remote_max_message = DEFAULT_REMOTE_MAX_MESSAGE
        self._watchdog: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[bool] | None = None
        self.peer_large_data = 0
        """User data per DATA chunk the peer's SDP says it takes (another p2pcp; 0 otherwise)."""
        self.peer_takes_pieces = False
        """Whether both sides cut packets into pieces (the peer's SDP says it takes them)."""
        self._wire()

    def _wire(self) -> None:
        channel = self._channel

        @channel.on("open")
        def on_open() -> None:
            if not self._opened.done():
                self._opened.set_result(None)

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            if isinstance(message, str):
                self._fail(ProtocolError("peer sent a text message on the data channel"))
                return
            self.last_heard = time.monotonic()
            self._inbox_bytes += len(message)
            if self._inbox_bytes > self.max_inbox_bytes:
                self._fail(ProtocolError("peer ignored flow control"))
                return
            self._inbox.put_nowait(message)

        @channel.on("bufferedamountlow")
        def on_low() -> None:
            self._low.set()

        @channel.on("close")
        def on_close() -> None:
            if self._path_lost():
                self._fail(PeerError(LOST))
            self._fail(PeerError("the peer closed the connection"))

        @self._pc.on("connectionstatechange")
        def on_state() -> None:
            state = self._pc.connectionState
            log.debug("connection state: %s", state)
            if state in ("failed", "closed"):
                self._fail(PeerError("the connection to the peer was lost"))

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._closed.set()
        self._low.set()
        self._inbox.put_nowait(None)
        if not self._opened.done():
            self._opened.set_exception(ConnectError(self._no_path()))

    def _no_path(self) -> str:
        """Why no connection could be made, in the user's terms."""
        if self._plan.udp_blocked:
            return (
                "could not connect to the peer: UDP seems blocked on this network, and not even "
                "the TURN relay over TCP got through"
            )
        if self._plan.has_turn:
            return "could not connect to the peer, not even through the TURN relay"
        return (
            "could not connect to the peer: there is no direct network path (NAT or firewall) "
            "and no TURN relay is configured; the rendezvous server's operator can add one "
            "(p2pcp-signal --turn), or pass --ice-server turn:..."
        )

    def _stalled(self) -> str:
        """Which step of setting up the connection did not finish: ICE (no path), DTLS or
        SCTP (a path, but the handshakes over it did not get through)."""
        if self._pc.iceConnectionState not in ("connected", "completed"):
            return self._no_path()
        sctp_transport = self._pc.sctp
        if sctp_transport is None or sctp_transport.transport.state != "connected":
            step = "the encryption (DTLS) handshake"
        else:
            step = "the data channel (SCTP) handshake"
        return (
            f"found a network path to the peer ({self.route()[0]}), but {step} over it did not "
            "complete; the link may be losing most packets"
        )

    # -- negotiation (SDP strings only leave this module) -----------------------------------

    async def create_offer(self) -> str:
        """Gather candidates and return the complete offer SDP."""
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return _with_p2pcp_lines(str(self._pc.localDescription.sdp))

    async def accept_offer(self, sdp: str) -> str:
        """Apply the peer's offer and return the complete answer SDP."""
        await self._set_remote(sdp, "offer")
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return _with_p2pcp_lines(str(self._pc.localDescription.sdp), self.peer_takes_pieces)

    async def accept_answer(self, sdp: str) -> None:
        """Apply the peer's answer."""
        await self._set_remote(sdp, "answer")

    async def _set_remote(self, sdp: str, kind: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except (ValueError, KeyError, IndexError) as exc:
            raise ProtocolError(f"the peer sent an unusable session description: {exc}") from None
        self.peer_large_data = advertised_large_data(sdp)
        peer_pieces = PIECES_LINE in sdp.splitlines()
        self.peer_takes_pieces = peer_pieces and _takes_pieces()
        association = self._pc.sctp
        if isinstance(association, SctpTransport):
            association.echo_probes = lambda: not self._relayed_over_tcp()
            association.peer_is_p2pcp = self.peer_large_data > 0 or peer_pieces
            connection = self._ice_connection()
            if isinstance(connection, ice.IceConnection):
                connection.own_relay_first = association.peer_is_p2pcp
            if self.peer_takes_pieces and isinstance(association.transport, dtls.DtlsTransport):
                association.transport.take_pieces(dtls.MAX_DATAGRAM)
        match = re.search(r"^a=max-message-size:(\d+)", sdp, re.MULTILINE)
        if match:
            self.remote_max_message = int(match.group(1)) or LOCAL_MAX_MESSAGE

    async def wait_open(self, timeout: float = OPEN_TIMEOUT) -> None:
        """Wait for the data channel to open; ConnectError if ICE/DTLS fails or times out."""
        try:
            await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        except TimeoutError:
            raise ConnectError(f"{self._stalled()} (gave up after {timeout:.0f} s)") from None
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_consent())
        if self._probe is None and self.peer_large_data and self._pc.sctp is not None:
            self._probe = asyncio.create_task(self._large_packets())

    async def _large_packets(self) -> bool:
        """Larger SCTP packets where the peer said it takes them (its SDP) and a probe of that
        size crosses the path both ways (p2pcp/webrtc/large.py): the largest size whose probe
        comes back. Where both sides take pieces (p2pcp/webrtc/pieces.py), a large packet
        crosses a route of a smaller MTU as datagrams that fit it, also through a TURN relay
        (whose framing takes up to TURN_OVERHEAD bytes of each); with an earlier p2pcp, only
        sizes a direct route carries whole are tried."""
        first_hop = self._first_hop()
        if first_hop is None or self._pc.sctp is None:
            return False
        relayed = self.route()[0] == "relay"
        if relayed and not self.peer_takes_pieces:
            return False
        association = self._pc.sctp
        if not isinstance(association, SctpTransport) or not isinstance(
            association.transport, dtls.DtlsTransport
        ):
            log.debug("large packets: our SCTP and DTLS transports are not in force")
            return False
        sizes = large_sizes(self.peer_large_data, dtls.several_records(association.transport))
        if not sizes:
            log.debug("large packets: the peer takes %d, standard size kept", self.peer_large_data)
            return False
        mtu = large.path_mtu(first_hop) or MIN_MTU  # a UDP connect: no I/O waits
        if relayed:
            mtu -= TURN_OVERHEAD
        if self.peer_takes_pieces:
            association.transport.take_pieces(mtu - IP_UDP_OVERHEAD)
        else:  # an earlier p2pcp: only what the route carries whole
            sizes = [size for size in sizes if large.needed_mtu(size) <= mtu]
            if not sizes:
                log.debug("large packets: the route's MTU is %d, standard size kept", mtu)
        association.datagrams = {
            size: large.fragments(size, mtu) if self.peer_takes_pieces else 1 for size in sizes
        }
        _, pair = self._selected_pair()
        for size in sizes:
            log.debug(
                "large packets: probing %d bytes; the route's MTU is %d (%d datagrams); "
                "pair %s -> %s",
                size,
                mtu,
                association.datagrams[size],
                pair.local_candidate.type,
                pair.remote_candidate.type,
            )
            if await association.probe_large_packets(size):
                return True
        return False

    async def _watch_consent(self) -> None:
        """Fail as soon as aioice's consent checks (RFC 7675) give up on the path, about 30 s
        after it died. aioice marks that at once (``_closing``) but then, before it reports the
        close, tries for a minute to release the TURN allocation over the dead path (aioice
        0.13), so we look rather than wait."""
        while not self._closed.is_set():
            if self._path_lost():
                self._fail(PeerError(LOST))
                return
            await asyncio.sleep(CONSENT_POLL)

    def _path_lost(self) -> bool:
        """Whether ICE gave up on the path while we still used it."""
        connection = self._ice_connection()
        return bool(getattr(connection, "_closing", False)) and not self._closed.is_set()

    def _ice_connection(self) -> Any:
        sctp = self._pc.sctp
        return sctp.transport.transport._connection if sctp else None

    @property
    def max_message(self) -> int:
        """Largest frame both ends accept, rounded down to whole SCTP packets (a 256 KiB frame
        would take 4 large packets and a fifth of 6 KB)."""
        limit = min(self.remote_max_message, LOCAL_MAX_MESSAGE)
        association = self._pc.sctp
        packet = association.data_size if isinstance(association, SctpTransport) else STANDARD_DATA
        return limit - limit % packet if limit > packet else limit

    def _selected_pair(self) -> tuple[Any, Any]:
        """aioice's connection and the candidate pair data goes out on (None before one is
        selected): the selected pair, or our own relay's (webrtc/ice.py, fix 6)."""
        connection = self._ice_connection()
        if connection is None:
            return None, None
        if isinstance(connection, ice.IceConnection):
            return connection, connection.sending_pair()
        return connection, connection._nominated.get(1)

    def route(self) -> tuple[str, str | None]:
        """``("direct" | "relay", peer address)`` of the selected ICE candidate pair."""
        _, pair = self._selected_pair()
        if pair is None:
            return "direct", None
        local, remote = pair.local_candidate, pair.remote_candidate
        kind = "relay" if "relay" in (local.type, remote.type) else "direct"
        host = f"[{remote.host}]" if ":" in remote.host else remote.host  # IPv6 in brackets
        return kind, f"{host}:{remote.port}"

    def _relayed_over_tcp(self) -> bool:
        """Whether this side's end of the selected pair is a TURN relay reached over TCP."""
        connection, pair = self._selected_pair()
        return bool(
            pair is not None
            and pair.local_candidate.type == "relay"
            and connection.turn_transport == "tcp"
        )

    def _first_hop(self) -> tuple[str, int] | None:
        """Where this side's datagrams go first on the selected pair: the TURN server for a
        relayed local candidate, else the peer's candidate (None before a pair is selected)."""
        connection, pair = self._selected_pair()
        if pair is None:
            return None
        if pair.local_candidate.type == "relay" and connection.turn_server:
            return tuple(connection.turn_server)
        return tuple(pair.remote_addr)

    def _direct_peer(self) -> tuple[str, int] | None:
        """The peer's host and port on the selected pair; None when the pair is relayed (or
        none is selected yet)."""
        route, peer = self.route()
        if route != "direct" or peer is None:
            return None
        host, port = peer.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def peer_on_this_host(self) -> bool:
        """Whether the selected pair leads straight to one of this machine's own addresses:
        then no network lies between the peers, and nothing is gained by sending fewer bytes.
        (A relayed pair always crosses the network to the relay and back.)"""
        peer = self._direct_peer()
        if peer is None:
            return False
        host = peer[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as own:
            try:
                own.bind((host, 0))  # succeeds only for an address of this machine
            except OSError:
                return False
        return True

    # -- frames ---------------------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Queue one frame, first waiting while aiortc holds too much unsent data."""
        while self._channel.bufferedAmount > SEND_HIGH_WATER and self._failure is None:
            self._low.clear()
            await self._low.wait()
        if self._failure is not None:
            raise self._failure
        self._channel.send(frame)
        self.last_sent = time.monotonic()

    def fail(self, exc: Exception) -> None:
        """End the connection's use with ``exc``: every wait on it raises it."""
        self._fail(exc)

    async def recv(self) -> bytes:
        """The next frame from the peer."""
        frame = await self._inbox.get()
        if frame is None:
            self._inbox.put_nowait(None)
            assert self._failure is not None
            raise self._failure
        self._inbox_bytes -= len(frame)
        return frame

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until aiortc has handed all queued data to SCTP."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._channel.bufferedAmount > 0 and self._failure is None:
                    await asyncio.sleep(0.01)

    async def wait_closed(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the peer to close the connection."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout)

    async def linger(self, timeout: float) -> None:
        """After this side's last message: let it reach the peer, and wait for the peer to close
        (data sent just before a close can be lost)."""
        await self.drain(timeout)
        await self.wait_closed(timeout)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the peer connection. Over a dead path aioice keeps asking the TURN server to
        release the allocation for half a minute; the server frees it when it expires anyway."""
        if self._failure is None:
            self._failure = PeerError("the connection was closed")
        self._closed.set()
        for task in (self._watchdog, self._probe):
            if task is not None:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pc.close(), timeout)
