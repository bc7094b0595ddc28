"""No server on a LAN: the sender runs the rendezvous server in-process and announces it with
mDNS/DNS-SD; the receiver finds it by nameplate.

The announcement is a ``_p2pcp._tcp`` service whose TXT record carries only the nameplate and the
protocol version, never the code's words. Everything after finding the server is unchanged:
room, PAKE, sealed signaling, WebRTC over host candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Collection

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from signal_server.server import Settings, SignalServer

from .errors import ConnectError

log = logging.getLogger(__name__)

SERVICE = "_p2pcp._tcp.local."
LOOKUP_SECONDS = 5.0
SURVEY_SECONDS = 1.0
MAX_NAMEPLATE = 999
ANNOUNCEMENT_VERSION = "1"
"""The announcement's own format (TXT ``version``): the data channel's protocol version is
agreed in the hellos, so a sender and a receiver of different p2pcp releases still meet."""


def local_addresses() -> list[str]:
    """This host's addresses a peer on the LAN can reach: IPv4 but loopback, and IPv6 but
    loopback and link-local (a link-local address needs its interface named to be used)."""
    addresses = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not address.is_loopback and not address.is_link_local:
                addresses.append(str(address))
    return addresses


def _zeroconf() -> AsyncZeroconf:
    """mDNS over IPv4, and over IPv6 too where this host has an IPv6 address to offer."""
    both = any(":" in a for a in local_addresses())
    return AsyncZeroconf(ip_version=IPVersion.All if both else IPVersion.V4Only)


async def browse(
    seconds: float, wanted: str | Collection[str] | None, own: str = ""
) -> dict[str, str]:
    """Nameplates announced on the network -> rendezvous URL (stops early at the first of
    ``wanted`` found), but for the service named ``own`` (this process's announcement)."""
    looking = None if wanted is None else {wanted} if isinstance(wanted, str) else set(wanted)
    aiozc = _zeroconf()
    names: asyncio.Queue[str] = asyncio.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Added and name != own:
            names.put_nowait(name)

    browser = AsyncServiceBrowser(aiozc.zeroconf, [SERVICE], handlers=[on_change])
    found: dict[str, str] = {}
    try:
        async with asyncio.timeout(seconds):
            while looking is None or not looking.intersection(found):
                name = await names.get()
                info = AsyncServiceInfo(SERVICE, name)
                if not await info.async_request(aiozc.zeroconf, 3000):
                    continue
                props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
                addresses = info.parsed_addresses(IPVersion.V4Only) or [
                    f"[{a}]" for a in info.parsed_addresses(IPVersion.V6Only)
                ]
                if props.get("version") != ANNOUNCEMENT_VERSION or not addresses or not info.port:
                    continue
                found[props.get("nameplate", "")] = f"ws://{addresses[0]}:{info.port}"
    except TimeoutError:
        pass
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
    return found


async def find_sender(nameplate: str, seconds: float = LOOKUP_SECONDS) -> str:
    """The rendezvous URL of the sender announcing ``nameplate`` on this network."""
    found = await browse(seconds, nameplate)
    if nameplate not in found:
        raise ConnectError(
            f"no sender with code number {nameplate} was found on this network: check the "
            "number (a mistyped one finds nobody), or if the sender is elsewhere, use a "
            "rendezvous server: --server URL or P2PCP_SERVER"
        )
    return found[nameplate]


class LanHost:
    """A sender's own rendezvous server, announced on the LAN (or a paired device's, announced
    under its pairings' rotating nameplates)."""

    def __init__(self) -> None:
        # Every address, IPv6 and IPv4, on one port: an IPv6-only LAN works too.
        self._server = SignalServer(Settings(host="::", port=0, page=False))
        self._zeroconf: AsyncZeroconf | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}
        self.nameplate = ""
        self.url = ""
        self._survey: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        """Start the server, announcing nothing yet."""
        try:
            await self._server.start()
        except OSError as exc:
            raise ConnectError(f"cannot start the local rendezvous server: {exc}") from None
        self.url = f"ws://127.0.0.1:{self._server.port}"

    async def start(self, nameplate: str | None = None) -> None:
        """Serve and announce ``nameplate`` (that of a code the user chose), or one drawn at
        random; warn if another sender on the network announces the same."""
        await self.serve()
        # Announce at once, so the code is on the screen without waiting (a chosen code, or
        # one of MAX_NAMEPLATE drawn at random: two senders on one network rarely draw the
        # same), and look for another sender with it meanwhile: a receiver that reaches the
        # other one fails the PAKE ("wrong code"), so say why.
        if nameplate is None:
            nameplate = str(1 + secrets.randbelow(MAX_NAMEPLATE))
        self.nameplate = nameplate
        own = await self.announce(nameplate)
        self._survey = asyncio.create_task(self._warn_of_twin(own))

    async def _warn_of_twin(self, own: str) -> None:
        if self.nameplate in await browse(SURVEY_SECONDS, None, own):
            log.warning(
                "another sender on this network announces number %s: its receiver may reach "
                "the wrong sender and fail with a wrong code",
                self.nameplate,
            )

    async def announce(self, nameplate: str) -> str:
        """Announce ``nameplate`` (beside any others); returns the service's name. The name
        holds 32 random bits, not the nameplate: a paired device's announcements then say
        nothing an observer could follow across windows but what the TXT record holds."""
        name = f"p2pcp-{secrets.token_hex(4)}.{SERVICE}"
        addresses = local_addresses()
        if not addresses:
            raise ConnectError("no network interface to announce the transfer on")
        info = AsyncServiceInfo(
            SERVICE,
            name,
            addresses=[
                socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                for a in addresses
            ],
            port=self._server.port,
            properties={"nameplate": nameplate, "version": ANNOUNCEMENT_VERSION},
        )
        if self._zeroconf is None:
            self._zeroconf = _zeroconf()
        # No probing for a name conflict (RFC 6762 8.1, three queries 250 ms apart): the
        # instance name carries 32 random bits, so no other host has it.
        await self._zeroconf.async_register_service(info, cooperating_responders=True)
        self._infos[nameplate] = info
        return name

    async def withdraw(self, nameplate: str) -> None:
        """Stop announcing ``nameplate``."""
        info = self._infos.pop(nameplate, None)
        if info is not None and self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.async_unregister_service(info)

    async def close(self) -> None:
        """Withdraw the announcement and stop the server."""
        if self._survey is not None:
            self._survey.cancel()
        if self._zeroconf is not None:
            for nameplate in list(self._infos):
                await self.withdraw(nameplate)
            with contextlib.suppress(Exception):
                await self._zeroconf.async_close()
        await self._server.close()
