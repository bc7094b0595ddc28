"""TURN credentials handed out by p2pcp-signal, checked by a real coturn (Debian's turnserver)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import turn
from aioice.stun import TransactionFailed
from helpers import require, start_signal_server
from websockets.asyncio.client import connect

from signal_server.turn import mint

SECRET = "correct horse battery staple"
require("turnserver")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def coturn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    port = _free_udp_port()
    extra: list[str] = getattr(request, "param", [])
    log = (tmp_path / "turnserver.log").open("w")
    process = subprocess.Popen(
        [
            "turnserver",
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={port}",
            "--relay-ip=127.0.0.1",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=p2pcp.test",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
            "--allow-loopback-peers",
            "--min-port=50000",
            "--max-port=50200",
            f"--pidfile={tmp_path / 'turnserver.pid'}",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield port
    process.terminate()
    process.wait(10)


async def _allocate(port: int, username: str, password: str) -> None:
    """Ask coturn for a relayed address; raises TransactionFailed if it refuses the credentials."""
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), username, password
    )
    transport.close()


async def _welcome(url: str) -> list[dict[str, str]]:
    async with connect(url) as ws:
        servers: list[dict[str, str]] = json.loads(await ws.recv())["ice_servers"]
        return servers


async def _in_a_room(url: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The ICE servers of a sender (``allocated``) and of its receiver (``joined``)."""
    async with connect(url) as a, connect(url) as b:
        await a.recv(), await b.recv()
        await a.send(json.dumps({"type": "allocate"}))
        allocated = json.loads(await a.recv())
        await b.send(json.dumps({"type": "join", "nameplate": allocated["nameplate"]}))
        joined = json.loads(await b.recv())
        return allocated["ice_servers"], joined["ice_servers"]


def test_minted_credentials_are_accepted_then_expire(coturn: int, tmp_path: Path) -> None:
    server = start_signal_server(
        tmp_path / "signal.log",
        "--stun",
        f"stun:127.0.0.1:{coturn}",
        "--turn",
        f"turn:127.0.0.1:{coturn}?transport=udp",
        "--turn-secret",
        SECRET,
        "--turn-ttl",
        "3",
    )
    try:
        welcome = asyncio.run(_welcome(server.url))
        servers, other = asyncio.run(_in_a_room(server.url))
    finally:
        server.stop()
    # A connection alone gets STUN only; TURN comes with a room, minted for each client apart.
    assert welcome == [{"urls": f"stun:127.0.0.1:{coturn}"}]
    stun, relay = servers
    assert stun == {"urls": f"stun:127.0.0.1:{coturn}"}
    assert relay["urls"] == f"turn:127.0.0.1:{coturn}?transport=udp"
    stamp, client = relay["username"].split(":")
    expiry = int(stamp)
    assert 0 < expiry - time.time() <= 4
    assert len(client) == 16 and other[1]["username"].split(":")[1] != client

    async def check() -> None:
        deadline = time.monotonic() + 10
        while True:  # coturn may still be starting
            try:
                await _allocate(coturn, relay["username"], relay["credential"])
                break
            except (TransactionFailed, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        with pytest.raises(TransactionFailed):  # a wrong password is refused
            await _allocate(coturn, relay["username"], "bm90IHRoZSBwYXNzd29yZA==")
        await asyncio.sleep(max(0.0, expiry - time.time()) + 1.5)
        with pytest.raises(TransactionFailed):  # the same credentials, expired, are refused
            await _allocate(coturn, relay["username"], relay["credential"])

    asyncio.run(check())


@pytest.mark.parametrize("coturn", [["--max-allocate-lifetime=4"]], indirect=True)
def test_an_allocation_outlives_its_credentials(coturn: int) -> None:
    """Credentials valid for 2 s; the allocation (4 s lifetime, so aioice refreshes it after
    3.3 s) is refreshed and binds a channel after they expired: coturn checks the expiry for new
    allocations only, so a transfer under way keeps its relay with minutes-long TTLs."""
    username, password = mint(SECRET, 2, time.time(), "tester")

    async def check() -> None:
        deadline = time.monotonic() + 10
        while True:  # coturn may still be starting
            try:
                transport, _ = await turn.create_turn_endpoint(
                    asyncio.DatagramProtocol, ("127.0.0.1", coturn), username, password, lifetime=4
                )
                break
            except (TransactionFailed, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        inner = transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
        await asyncio.sleep(max(0.0, int(username.split(":")[0]) - time.time()) + 5)
        await inner.channel_bind(0x4001, ("127.0.0.1", 9))  # after expiry: still accepted
        assert inner.refresh_task is not None and not inner.refresh_task.done()  # refreshed
        transport.close()
        with pytest.raises(TransactionFailed):  # but a new allocation is refused
            await _allocate(coturn, username, password)

    asyncio.run(check())


def test_no_ice_servers_unless_configured(tmp_path: Path) -> None:
    server = start_signal_server(tmp_path / "signal.log")
    try:
        assert asyncio.run(_welcome(server.url)) == []
    finally:
        server.stop()
