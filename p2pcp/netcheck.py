"""What the network between us and the STUN/TURN servers allows, found out with STUN and TURN.

Two users: the transfer itself, which must pick the TURN server to hand aiortc (aiortc uses only
the first TURN URL it is given, so on a network that blocks UDP a UDP TURN server listed first
hides a working TCP one), and ``p2pcp doctor``, which reports what this host looks like from
outside. The STUN and TURN wire formats are aioice's; the little I/O here is our own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from aioice import stun, turn

from .errors import ConnectError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.5
"""How long a STUN server may take to answer before UDP to it counts as blocked."""
DEFAULT_PORT = {"stun": 3478, "turn": 3478, "turns": 5349}


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server."""

    urls: str
    """``stun:host:port`` or ``turn:host:port?transport=udp``."""
    username: str | None = None
    """TURN user name."""
    credential: str | None = None
    """TURN password."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> IceServer:
        """Parse one entry of the server's ``ice_servers`` list."""
        urls = raw.get("urls")
        if isinstance(urls, list):
            urls = urls[0] if urls else None
        if not isinstance(urls, str):
            raise ConnectError("the rendezvous server sent a malformed ICE server")
        return cls(urls, raw.get("username"), raw.get("credential"))


@dataclass(frozen=True)
class ServerUrl:
    """A parsed ``stun:``/``turn:``/``turns:`` URL."""

    scheme: str
    host: str
    port: int
    transport: str
    """``udp`` or ``tcp`` (``turns`` is always TLS over TCP)."""

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        suffix = f"?transport={self.transport}" if self.is_turn else ""
        return f"{self.scheme}:{self.host}:{self.port}{suffix}"


def parse_url(url: str) -> ServerUrl | None:
    """The parts of a STUN/TURN URL, or None if it is not one we can use."""
    scheme, _, rest = url.partition(":")
    if scheme not in DEFAULT_PORT or not rest:
        return None
    rest, _, query = rest.partition("?")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = rest.partition(":")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT[scheme]
    except ValueError:
        return None
    transport = parse_qs(query).get("transport", ["tcp" if scheme == "turns" else "udp"])[0]
    if not host or transport not in ("udp", "tcp") or (scheme == "turns" and transport != "tcp"):
        return None
    return ServerUrl(scheme, host, port, transport)


@dataclass(frozen=True)
class IcePlan:
    """The ICE servers to use, in the order aiortc should see them, and what the probe saw."""

    servers: list[IceServer]
    udp_blocked: bool = False
    """No STUN/TURN server answered over UDP (only probed when the choice mattered)."""

    @property
    def has_turn(self) -> bool:
        return any((u := parse_url(s.urls)) is not None and u.is_turn for s in self.servers)


class _StunClient(asyncio.DatagramProtocol):
    """One UDP socket asking STUN servers for our address as they see it."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[stun.Message]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        future = self.waiting.pop(message.transaction_id, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def binding(self, server: tuple[str, int], timeout: float) -> tuple[str, int] | None:
        """Our reflexive address as ``server`` sees it, or None if it does not answer in time.
        Retransmits as RFC 5389 does (doubling from 250 ms)."""
        assert self.transport is not None
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        future = asyncio.get_running_loop().create_future()
        self.waiting[request.transaction_id] = future
        deadline = time.monotonic() + timeout
        interval = 0.25
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.transport.sendto(bytes(request), server)
                with contextlib.suppress(TimeoutError):
                    message = await asyncio.wait_for(asyncio.shield(future), min(interval, left))
                    mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
                    return (str(mapped[0]), int(mapped[1])) if mapped else None
                interval *= 2
            return None
        finally:
            self.waiting.pop(request.transaction_id, None)


async def _resolve(host: str, port: int) -> tuple[str, int] | None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
        )
    except OSError:
        return None
    return (str(infos[0][4][0]), int(infos[0][4][1])) if infos else None


async def reflexive_addresses(
    servers: list[ServerUrl], timeout: float = PROBE_TIMEOUT
) -> tuple[tuple[str, int] | None, list[tuple[ServerUrl, tuple[str, int] | None]]]:
    """From one local UDP socket, ask each server (STUN or TURN over UDP) for our address.
    Returns the socket's local address and each server's answer (None: no answer)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_StunClient, local_addr=("0.0.0.0", 0))
    try:
        local = transport.get_extra_info("sockname")

        async def ask(url: ServerUrl) -> tuple[ServerUrl, tuple[str, int] | None]:
            address = await _resolve(url.host, url.port)
            return url, (await client.binding(address, timeout) if address else None)

        answers = await asyncio.gather(*(ask(u) for u in servers))
        return (str(local[0]), int(local[1])), list(answers)
    finally:
        transport.close()


async def plan_ice(servers: list[IceServer]) -> IcePlan:
    """The servers to hand aiortc: as given, unless the first TURN server is over UDP, a TCP/TLS
    one is also offered, and no STUN/TURN server answers over UDP: then only TURN over TCP/TLS."""
    parsed = [(s, parse_url(s.urls)) for s in servers]
    turns = [(s, u) for s, u in parsed if u is not None and u.is_turn]
    if not turns or turns[0][1].transport == "tcp" or all(u.transport == "udp" for _, u in turns):
        return IcePlan(list(servers), udp_blocked=False)
    udp = [u for _, u in parsed if u is not None and u.transport == "udp"]
    _, answers = await reflexive_addresses(udp)
    if any(mapped is not None for _, mapped in answers):
        return IcePlan(list(servers), udp_blocked=False)
    # STUN over UDP would only hold up candidate gathering until it times out.
    log.info("no STUN/TURN server answers over UDP: TURN over TCP only")
    return IcePlan([s for s, u in turns if u.transport == "tcp"], udp_blocked=True)


@dataclass(frozen=True)
class Allocation:
    """The outcome of asking one TURN server for a relayed address."""

    url: ServerUrl
    relayed: tuple[str, int] | None
    error: str | None


async def try_turn(server: IceServer, url: ServerUrl, timeout: float = 5.0) -> Allocation:
    """Allocate (and release) a relayed address on ``url`` with ``server``'s credentials."""
    protocol: Any = None
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                url.address,
                server.username,
                server.credential,
                ssl=url.scheme == "turns",
                transport=url.transport,
            )
            relayed = transport.get_extra_info("sockname")
            transport.close()
            return Allocation(url, (str(relayed[0]), int(relayed[1])), None)
    except TimeoutError:
        return Allocation(url, None, f"no answer in {timeout:.0f} s")
    except stun.TransactionFailed as exc:
        return Allocation(url, None, f"refused: {exc.response.error_code} {exc}")
    except (OSError, ConnectionError, stun.TransactionError) as exc:
        return Allocation(url, None, str(exc) or type(exc).__name__)


PRIVATE_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
]


def is_private(host: str) -> bool:
    """Whether ``host`` is an address in a range the internet does not route (RFC 1918,
    carrier-grade NAT, link-local, unique local). Names and public addresses are not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in PRIVATE_NETWORKS)
