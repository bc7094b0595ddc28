"""The websockets adapter of the rendezvous server, and its wire protocol.

Wire protocol (version 1). Every WebSocket message is one UTF-8 JSON object with a ``type``.

Server to client, on connect::

    {"type": "welcome", "version": 1, "ice_servers": [{"urls": "stun:..."}], "page": true}

``ice_servers`` lists the STUN servers the operator configured (empty by default); ``page``
says whether the browser page is served at ``/`` (a client may point people there). TURN servers
come only to a client in a room: ``allocated`` and ``joined`` carry the full list, TURN included,
with credentials minted for that client alone in coturn's ``use-auth-secret`` scheme (user name
``<expiry>:<random id>``, valid ``--turn-ttl`` seconds, 10 minutes by default).

Client to server, then the server's answer:

- ``{"type": "allocate"}`` -> ``{"type": "allocated", "nameplate": "7", "ice_servers": [...]}``:
  a new room with a random free nameplate of the shortest length that has one (1-9, then 10-99,
  ...), with this connection as its first side. With ``"nameplate": "42"`` it claims that
  nameplate (error ``nameplate_taken`` if in use).
- ``{"type": "join", "nameplate": "7"}`` -> ``{"type": "joined", "nameplate": "7",
  "ice_servers": [...]}``, and the side already there gets ``{"type": "peer_joined"}``.
- ``{"type": "relay", "body": ANY}`` -> the other side gets ``{"type": "relay", "body": ANY}``
  verbatim. The server never reads ``body`` (the peers seal it).

Server to client at any time:

- ``{"type": "peer_left", "reopened": false}``: the other side's connection closed. ``reopened``
  is true when the side that joined left without relaying anything (it made no guess at the
  code): the room is open again for another join, and the code is still good. Once the joiner
  has relayed a message (its SPAKE2 message), the room is spent: no other side may join.
- ``{"type": "error", "reason": R, "message": M}`` with ``R`` one of ``bad_message``,
  ``no_such_nameplate``, ``nameplate_taken``, ``crowded``, ``already_joined``, ``no_room``,
  ``no_peer``, ``too_many_rooms``, ``expired``, and for the abuse limits ``too_big`` (a message
  over ``--max-message-bytes``; twice that closes the connection with code 1009),
  ``rate_limited`` (over ``--messages-per-second``), ``connection_rate`` (over
  ``--connections-per-minute-per-ip``; then the connection is closed), ``unavailable`` (the
  room store, e.g. Redis, failed), ``room_rate`` (over
  ``--rooms-per-minute-per-ip``), ``too_many_connections`` (over ``--max-connections-per-ip``,
  then the connection is closed) and ``shutdown`` (the server is stopping). ``expired`` and
  ``shutdown`` also close the connection. A refused message is dropped; the connection and
  every other room carry on.

``GET /healthz`` answers ``200 ok`` and ``GET /metrics`` the Prometheus text format, over plain
HTTP on the same port; other plain GETs get the browser page (``page.py``; ``/`` is the page,
unknown paths 404) unless ``--no-page``. A client that does not finish the WebSocket handshake
within ``--handshake-timeout`` seconds is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import secrets
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .limits import Metrics, SlidingWindow, TokenBucket, client_address, client_key
from .page import Page
from .rooms import RoomError
from .store import MemoryStore, RedisStore, RoomStore
from .turn import mint

log = logging.getLogger("signal_server")

PROTOCOL_VERSION = 1
EXPIRED = {"type": "error", "reason": "expired", "message": "the room expired"}
_EXPIRED_TEXT = json.dumps(EXPIRED)


@dataclass(frozen=True)
class Settings:
    """Server configuration."""

    host: str = "0.0.0.0"
    """Interface to listen on."""
    port: int = 8765
    """TCP port; 0 picks a free one."""
    max_message_bytes: int = 64 * 1024
    """Largest WebSocket message accepted."""
    room_idle_seconds: float = 3600.0
    """A room with no activity for this long is closed."""
    max_rooms: int = 100_000
    """Rooms open at once."""
    messages_per_second: float = 20.0
    """Messages one connection may send per second on average (bursts of twice that)."""
    rooms_per_minute_per_ip: int = 30
    """New rooms one client address (an IPv6 client: its /64) may open per minute."""
    max_connections_per_ip: int = 50
    """Open connections from one client address (an IPv6 client: its /64)."""
    connections_per_minute_per_ip: int = 120
    """New connections one client address (an IPv6 client: its /64) may open per minute."""
    handshake_timeout: float = 10.0
    """Seconds a client has to complete the WebSocket handshake."""
    tls_cert: str | None = None
    """PEM certificate chain: serve wss:// (with ``tls_key``)."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert``."""
    stun: tuple[str, ...] = ()
    """STUN server URLs handed to clients."""
    turn: tuple[str, ...] = ()
    """TURN server URLs handed to clients, with credentials minted from ``turn_secret``."""
    turn_secret: str | None = None
    """The secret shared with the TURN server (coturn ``static-auth-secret``)."""
    turn_ttl: float = 600.0
    """Seconds minted TURN credentials stay valid for new allocations. An allocation made in
    time keeps working after that: coturn accepts its refreshes and channel binds
    (tests/test_turn.py)."""
    redis: str | None = None
    """``redis://`` URL: share rooms with every server process using the same Redis."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of reverse proxies (a load balancer) whose ``X-Forwarded-For`` names the client."""
    page: bool = True
    """Serve the browser page (``signal_server/web/``) at ``/``."""


def _dual_stack(port: int) -> socket.socket | None:
    """A listening socket on every IPv6 and IPv4 address with one port (``--host ::``), or
    None where this host has no IPv6 (then ``::`` is left to asyncio)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    return sock


class SignalServer:
    """Pairs connections by nameplate and relays between the two sides of each room."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: RoomStore = (
            RedisStore(settings.redis, settings.max_rooms)
            if settings.redis
            else MemoryStore(settings.max_rooms)
        )
        self._nameplate_of: dict[str, str] = {}
        self._connections: dict[str, ServerConnection] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self._per_ip: dict[str, int] = defaultdict(int)
        self._room_rate = SlidingWindow(settings.rooms_per_minute_per_ip, 60.0)
        self._connection_rate = SlidingWindow(settings.connections_per_minute_per_ip, 60.0)
        self._buckets: dict[str, TokenBucket] = {}
        self._ips: dict[str, str] = {}
        self._page = Page() if settings.page else None
        self._trusted = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies
        )

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        """``wss`` when serving TLS, else ``ws``."""
        return "wss" if self.settings.tls_cert else "ws"

    def _tls(self) -> ssl.SSLContext | None:
        if not self.settings.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return context

    async def start(self) -> None:
        """Connect the room store, bind and start serving."""
        await self.store.start(self._deliver)
        dual = _dual_stack(self.settings.port) if self.settings.host == "::" else None
        self._server = await serve(
            self._handle,
            None if dual else self.settings.host,
            None if dual else self.settings.port,
            sock=dual,
            # Frames up to twice the limit are read and answered with an error; larger ones
            # close the connection (code 1009) without being buffered.
            max_size=2 * self.settings.max_message_bytes,
            open_timeout=self.settings.handshake_timeout,
            close_timeout=2,  # a client that ignores the closing handshake cannot hold us up
            # No permessage-deflate: signaling messages are small and mostly sealed (random)
            # bytes, so compressing them costs CPU and memory per connection and saves nothing.
            compression=None,
            ssl=self._tls(),
            process_request=self._http,
        )
        self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        """Stop accepting, tell every client the server is going away, close every connection."""
        if self._reaper is not None:
            self._reaper.cancel()
        for connection in list(self._connections.values()):
            await self._error(connection, "shutdown", "the rendezvous server is shutting down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.store.close()

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if request.path == "/metrics":
            rooms = await self.store.count()
            response = connection.respond(HTTPStatus.OK, self.metrics.render(rooms))
            response.headers["Content-Type"] = "text/plain; version=0.0.4"
            return response
        return self._page.respond(request) if self._page is not None else None

    async def _handle(self, connection: ServerConnection) -> None:
        side = f"{self.store.server_id}:{next(self._ids)}"
        peer = str(connection.remote_address[0]) if connection.remote_address else "-"
        forwarded = (
            connection.request.headers.get_all("X-Forwarded-For") if connection.request else []
        )
        ip = client_key(client_address(peer, forwarded, self._trusted))
        if not self._connection_rate.allow(ip, time.time()):
            self._reject(side, "connection_rate")
            await self._error(
                connection, "connection_rate", "too many new connections from your address"
            )
            await connection.close(1008, "too many new connections")
            return
        if self._per_ip[ip] >= self.settings.max_connections_per_ip:
            self._reject(side, "too_many_connections")
            await self._error(
                connection, "too_many_connections", "too many connections from your address"
            )
            await connection.close(1008, "too many connections")
            return
        self._per_ip[ip] += 1
        self._ips[side] = ip
        rate = self.settings.messages_per_second
        self._buckets[side] = TokenBucket(rate, 2 * rate)
        self._connections[side] = connection
        self.metrics.connections_total += 1
        self.metrics.connections_open += 1
        log.info("connect side=%s", side)
        try:
            await self._send(
                connection,
                {
                    "type": "welcome",
                    "version": PROTOCOL_VERSION,
                    "ice_servers": self._ice(turn=False),
                    "page": self._page is not None,
                },
            )
            async for raw in connection:
                await self._dispatch(side, connection, raw)
        except ConnectionClosed:
            pass
        finally:
            del self._connections[side], self._buckets[side], self._ips[side]
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            self.metrics.connections_open -= 1
            nameplate = self._nameplate_of.pop(side, None)
            log.info("disconnect side=%s nameplate=%s", side, nameplate or "-")
            if nameplate is not None:
                with contextlib.suppress(Exception):  # the store may be gone at shutdown
                    other, reopened = await self.store.leave(nameplate, side)
                    if other is not None:
                        await self.store.send(other, {"type": "peer_left", "reopened": reopened})

    def _ice(self, turn: bool = True) -> list[dict[str, Any]]:
        """The ICE servers for one client: STUN as configured, and with ``turn`` TURN with
        fresh credentials of its own (a random user id: coturn's per-user quotas then count
        each client apart)."""
        servers: list[dict[str, Any]] = [{"urls": url} for url in self.settings.stun]
        if turn and self.settings.turn and self.settings.turn_secret:
            username, credential = mint(
                self.settings.turn_secret, self.settings.turn_ttl, time.time(), secrets.token_hex(8)
            )
            servers += [
                {"urls": url, "username": username, "credential": credential}
                for url in self.settings.turn
            ]
        return servers

    async def _dispatch(self, side: str, connection: ServerConnection, raw: str | bytes) -> None:
        now = time.time()  # wall clock: room activity is compared across server processes
        self.metrics.messages_total += 1
        if len(raw) > self.settings.max_message_bytes:
            await self._refuse(side, connection, "too_big", "message too big")
            return
        if not self._buckets[side].allow(now):
            await self._refuse(side, connection, "rate_limited", "too many messages; slow down")
            return
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: "[" * 60000 and the like
            await self._refuse(side, connection, "bad_message", "messages must be JSON objects")
            return
        kind = message.get("type")
        try:
            if kind == "allocate":
                if not self._room_rate.allow(self._ips[side], now):
                    await self._refuse(
                        side,
                        connection,
                        "room_rate",
                        "too many new rooms from your address; try later",
                    )
                    return
                wanted = message.get("nameplate")
                if wanted is not None and not isinstance(wanted, str):
                    await self._error(connection, "bad_message", "a nameplate is a string")
                    return
                if side in self._nameplate_of:
                    raise RoomError("already_joined", "this connection is already in a room")
                nameplate = await self.store.allocate(side, now, wanted)
                self._nameplate_of[side] = nameplate
                log.info("allocate side=%s nameplate=%s", side, nameplate)
                await self._send(
                    connection,
                    {"type": "allocated", "nameplate": nameplate, "ice_servers": self._ice()},
                )
            elif kind == "join":
                wanted = message.get("nameplate")
                if not isinstance(wanted, str):
                    await self._error(connection, "bad_message", "join needs a nameplate")
                    return
                if side in self._nameplate_of:
                    raise RoomError("already_joined", "this connection is already in a room")
                others = await self.store.join(wanted, side, now)
                self._nameplate_of[side] = wanted
                log.info("join side=%s nameplate=%s", side, wanted)
                await self._send(
                    connection, {"type": "joined", "nameplate": wanted, "ice_servers": self._ice()}
                )
                for other in others:
                    await self.store.send(other, {"type": "peer_joined"})
            elif kind == "relay":
                await self._relay(side, connection, message.get("body"), now)
            else:
                await self._refuse(side, connection, "bad_message", "unknown message type")
        except RoomError as exc:
            await self._refuse(side, connection, exc.reason, exc.message)
        except Exception as exc:  # the room store failed (Redis down): refuse, keep serving
            log.error("store error side=%s: %s", side, exc)
            await self._refuse(
                side, connection, "unavailable", "the server cannot reach its room store; try again"
            )

    def _reject(self, side: str, reason: str) -> None:
        self.metrics.reject(reason)
        log.info("refuse side=%s reason=%s", side, reason)

    async def _refuse(
        self, side: str, connection: ServerConnection, reason: str, message: str
    ) -> None:
        self._reject(side, reason)
        await self._error(connection, reason, message)

    async def _relay(self, side: str, connection: ServerConnection, body: Any, now: float) -> None:
        nameplate = self._nameplate_of.get(side)
        if nameplate is None:
            await self._refuse(side, connection, "no_room", "join a room before relaying")
            return
        if await self.store.relay(nameplate, side, now, {"type": "relay", "body": body}) is None:
            await self._refuse(side, connection, "no_peer", "the other side is not here")
            return
        self.metrics.relayed_total += 1

    async def _reap(self) -> None:
        idle = self.settings.room_idle_seconds
        while True:
            await asyncio.sleep(max(0.5, min(idle / 4, 30.0)))
            # Per-address records go once idle: memory follows the clients of the last minute.
            now = time.time()
            self._connection_rate.forget_idle(now)
            self._room_rate.forget_idle(now)
            with contextlib.suppress(Exception):  # a store outage must not stop the reaper
                for nameplate, sides in await self.store.expire(time.time(), idle):
                    log.info("expire nameplate=%s", nameplate)
                    for side in sides:
                        await self.store.send(side, EXPIRED)

    async def _deliver(self, side: str, text: str) -> None:
        """Hand a message's JSON ``text`` to ``side`` if it is connected to this process."""
        connection = self._connections.get(side)
        if connection is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await connection.send(text)
        if text == _EXPIRED_TEXT:
            self._nameplate_of.pop(side, None)
            await connection.close()

    @staticmethod
    async def _send(connection: ServerConnection, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(json.dumps(message))

    async def _error(self, connection: ServerConnection, reason: str, message: str) -> None:
        await self._send(connection, {"type": "error", "reason": reason, "message": message})
