"""The client side of the rendezvous server's wire protocol: the only client module that
speaks WebSocket.

It opens a room (``allocate``) or joins one by nameplate, waits for the peer, and relays JSON
bodies to it. It knows nothing of keys or SDP beyond passing their (sealed) text along; the
server's protocol is described in ``signal_server/server.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .errors import CodeError, ConnectError, PeerError, UsageError


class NoSender(CodeError):
    """No room holds this nameplate (yet): the sender has not opened it, or has gone."""


class NameplateTaken(CodeError):
    """Another room holds the nameplate asked for."""


class PeerLeft(PeerError):
    """The peer's rendezvous connection closed (it may have done so because its data channel
    opened a moment before ours)."""


class RoomReopened(PeerLeft):
    """The side that joined left without relaying anything: it made no guess at the code, and
    the server opened the room again for the next one."""


log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
"""Seconds to wait for the server to acknowledge a close (the path may be dead)."""
CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True)
class Tls:
    """How to check a wss:// server's certificate."""

    ca_file: str | None = None
    """Trust this PEM CA bundle (instead of the system's)."""
    insecure: bool = False
    """Do not verify at all (for testing only)."""

    def context(self) -> ssl.SSLContext:
        """The client TLS context."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the CA file {self.ca_file}: {exc}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class Signaling:
    """One connection to the rendezvous server."""

    def __init__(self, url: str, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.url = url
        self._ws = ws
        self.ice_servers: list[dict[str, Any]] = list(welcome.get("ice_servers") or [])
        """ICE servers the rendezvous server recommends (may be empty)."""
        self.serves_page = False
        """Whether the server serves the browser page at ``/`` (its welcome says ``page``)."""

    @classmethod
    async def connect(cls, url: str, tls: Tls | None = None) -> Signaling:
        """Connect and read the server's welcome; any failure is a :class:`ConnectError`.

        A ``wss://`` server's certificate is verified against the system's CAs, or only against
        ``tls.ca_file`` when given; ``tls.insecure`` turns verification off (for testing).
        """
        context = (tls or Tls()).context() if url.startswith("wss://") else None
        try:
            ws = await asyncio.wait_for(
                connect(
                    url,
                    open_timeout=CONNECT_TIMEOUT,
                    close_timeout=CLOSE_TIMEOUT,
                    max_size=1 << 20,
                    ssl=context,
                    compression=None,  # sealed signaling is random bytes; the server offers none
                ),
                CONNECT_TIMEOUT,
            )
        except InvalidURI:
            raise ConnectError(f"the server URL {url!r} is not a ws:// or wss:// URL") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(
                f"the certificate of {url} is not trusted ({exc.verify_message}): pass --ca-file "
                "with the CA that signed it (or --insecure, for testing only)"
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ConnectError(f"cannot reach the rendezvous server at {url}: {detail}") from None
        self = cls(url, ws, {})
        welcome = await self._next()
        if welcome.get("type") != "welcome":
            await ws.close()
            raise ConnectError(f"{url} is not a p2pcp rendezvous server")
        self.ice_servers = list(welcome.get("ice_servers") or [])
        self.serves_page = welcome.get("page") is True
        return self

    def page_url(self, code: str) -> str | None:
        """The browser page's address with ``code`` in its fragment (which browsers never send
        to the server), or None when the server does not serve the page."""
        if not self.serves_page:
            return None
        return re.sub(r"^ws", "http", self.url.rstrip("/"), count=1) + f"/#{code}"

    async def _next(self) -> dict[str, Any]:
        try:
            raw = await self._ws.recv()
        except ConnectionClosed:
            raise ConnectError("the rendezvous server closed the connection") from None
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            raise ConnectError("the rendezvous server sent a malformed message") from None
        if not isinstance(message, dict):
            raise ConnectError("the rendezvous server sent a malformed message")
        return message

    async def _request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        await self._send(message)
        reply = await self._next()
        if reply.get("type") != expect:
            self._raise(reply)
        return reply

    def _raise(self, reply: dict[str, Any]) -> NoReturn:
        if reply.get("type") == "error":
            reason = reply.get("reason")
            if reason == "no_such_nameplate":
                raise NoSender(
                    "no sender is waiting with this code: check the number, or the sender may "
                    "have stopped; a sender started without a server is found on its own "
                    "network only (leave out --server and P2PCP_SERVER there)"
                )
            if reason == "crowded":
                raise CodeError("this code is already in use or was used before; ask for a new one")
            if reason == "nameplate_taken":
                raise NameplateTaken(
                    "the number of that code is in use on the server: choose another code"
                )
            if reason == "shutdown":
                raise ConnectError("the rendezvous server is shutting down; try again later")
            if reason == "expired":
                raise ConnectError("the rendezvous room expired before the peer came")
            raise ConnectError(f"the rendezvous server refused: {str(reply.get('message'))[:200]}")
        if reply.get("type") == "peer_left":
            if reply.get("reopened") is True:
                raise RoomReopened(
                    "someone joined with this code's number and left without trying the code"
                )
            raise PeerLeft("the peer left before the connection was set up")
        raise ConnectError(f"unexpected message from the rendezvous server: {reply.get('type')!r}")

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(message))
        except ConnectionClosed:
            raise ConnectError("the rendezvous server closed the connection") from None

    async def allocate(self, nameplate: str | None = None) -> str:
        """Open a new room (with the given nameplate, if any); returns its nameplate."""
        request: dict[str, Any] = {"type": "allocate"}
        if nameplate is not None:
            request["nameplate"] = nameplate
        reply = await self._request(request, "allocated")
        self._take_ice_servers(reply)
        nameplate = reply.get("nameplate")
        if not isinstance(nameplate, str):
            raise ConnectError("the rendezvous server sent a malformed nameplate")
        return nameplate

    async def join(self, nameplate: str) -> None:
        """Join the room of ``nameplate`` (CodeError if it does not exist or is used)."""
        self._take_ice_servers(
            await self._request({"type": "join", "nameplate": nameplate}, "joined")
        )

    def _take_ice_servers(self, reply: dict[str, Any]) -> None:
        """A server mints TURN credentials only for a client in a room: ``allocated`` and
        ``joined`` carry the full list (``welcome`` only STUN). An older server sends it all in
        ``welcome`` and nothing here."""
        servers = reply.get("ice_servers")
        if isinstance(servers, list):
            self.ice_servers = [s for s in servers if isinstance(s, dict)]

    async def wait_for_peer(self) -> None:
        """Block until the other side joins our room. A ``no_peer`` refusal is passed over: it
        answers a relay sent to a joiner that had already left (the room opened again)."""
        reply = await self._next()
        while reply.get("type") == "error" and reply.get("reason") == "no_peer":
            reply = await self._next()
        if reply.get("type") != "peer_joined":
            self._raise(reply)

    async def send(self, body: dict[str, Any]) -> None:
        """Relay ``body`` to the peer."""
        await self._send({"type": "relay", "body": body})

    async def receive(self) -> dict[str, Any]:
        """The next body the peer relayed."""
        reply = await self._next()
        body = reply.get("body")
        if reply.get("type") != "relay":
            self._raise(reply)
        if not isinstance(body, dict):
            raise PeerError("the peer relayed a malformed message")
        return body

    async def close(self) -> None:
        """Leave the room and close the connection."""
        await self._ws.close()
