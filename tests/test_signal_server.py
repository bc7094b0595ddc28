"""The rendezvous server's limits and operations, against the real p2pcp-signal process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SignalServer, start_signal_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def _run(coro: Any) -> None:
    """Run a test coroutine, then close every client it opened (a tidy client, as real ones)."""

    async def main() -> None:
        try:
            await coro
        finally:
            for ws in OPENED:
                await ws.close()
            OPENED.clear()

    asyncio.run(main())


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Any]:
    started: list[SignalServer] = []

    def start(*flags: str) -> SignalServer:
        server = start_signal_server(tmp_path / f"server{len(started)}.log", *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


OPENED: list[ClientConnection] = []


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, max_size=1 << 22)
    OPENED.append(ws)
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


async def _ask(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return reply


async def _pair_still_relays(url: str) -> None:
    """Another room on the same server works: proof the server kept serving."""
    a, b = await _open(url), await _open(url)
    nameplate = (await _ask(a, {"type": "allocate"}))["nameplate"]
    assert (await _ask(b, {"type": "join", "nameplate": nameplate}))["type"] == "joined"
    assert json.loads(await a.recv())["type"] == "peer_joined"
    await b.send(json.dumps({"type": "relay", "body": {"hello": 1}}))
    assert json.loads(await asyncio.wait_for(a.recv(), 10)) == {
        "type": "relay",
        "body": {"hello": 1},
    }
    await a.close()
    await b.close()


def _metrics(server: SignalServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_bad_json_unknown_types_and_oversize_messages(server_with: Any) -> None:
    server = server_with("--max-message-bytes", "1000")

    async def main() -> None:
        ws = await _open(server.url)
        assert (await _ask(ws, "{not json"))["reason"] == "bad_message"
        assert (await _ask(ws, "[1, 2]"))["reason"] == "bad_message"
        assert (await _ask(ws, {"type": "teleport"}))["reason"] == "bad_message"
        big = {"type": "relay", "body": "x" * 1500}
        assert (await _ask(ws, big))["reason"] == "too_big"
        assert (await _ask(ws, {"type": "allocate"}))["type"] == "allocated"  # still usable
        with pytest.raises(ConnectionClosed) as closed:  # far over the limit: closed, 1009
            await _ask(ws, {"type": "relay", "body": "x" * 5000})
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await _pair_still_relays(server.url)

    _run(main())
    assert 'p2pcp_signal_rejections_total{reason="too_big"} 1' in _metrics(server)
    assert "refuse side=" in server.log_text() and "reason=bad_message" in server.log_text()


def test_deeply_nested_json_is_a_bad_message_not_a_crash(server_with: Any) -> None:
    """`[` * 60000 makes Python's JSON parser raise RecursionError: the server answers
    bad_message, keeps the connection and keeps serving (not 1011)."""
    server = server_with()

    async def main() -> None:
        ws = await _open(server.url)
        for deep in ("[" * 60000, '{"type": "relay", "body": ' + "[" * 60000):
            assert (await _ask(ws, deep))["reason"] == "bad_message"
        assert (await _ask(ws, {"type": "allocate"}))["type"] == "allocated"  # still usable
        await _pair_still_relays(server.url)

    _run(main())
    assert "Traceback" not in server.log_text()


def test_messages_per_second(server_with: Any) -> None:
    server = server_with("--messages-per-second", "5")

    async def main() -> None:
        ws = await _open(server.url)
        replies = [await _ask(ws, {"type": "relay", "body": i}) for i in range(30)]
        limited = [r for r in replies if r.get("reason") == "rate_limited"]
        assert 10 <= len(limited) < 30  # a burst of 10 passes (as no_room), the rest do not
        assert "slow down" in limited[0]["message"]
        await _pair_still_relays(server.url)

    _run(main())


def test_new_rooms_per_minute_per_address(server_with: Any) -> None:
    server = server_with("--rooms-per-minute-per-ip", "3")

    async def main() -> None:
        sockets = [await _open(server.url) for _ in range(4)]
        replies = [await _ask(ws, {"type": "allocate"}) for ws in sockets]
        assert [r["type"] for r in replies[:3]] == ["allocated"] * 3
        assert replies[3]["reason"] == "room_rate"

    _run(main())


def test_total_rooms(server_with: Any) -> None:
    server = server_with("--max-rooms", "2")

    async def main() -> None:
        sockets = [await _open(server.url) for _ in range(3)]
        replies = [await _ask(ws, {"type": "allocate"}) for ws in sockets]
        assert replies[2]["reason"] == "too_many_rooms"
        await sockets[0].close()
        await asyncio.sleep(0.2)
        assert (await _ask(sockets[2], {"type": "allocate"}))["type"] == "allocated"

    _run(main())


def test_idle_rooms_expire(server_with: Any) -> None:
    server = server_with("--room-idle", "1")

    nameplates: list[str] = []

    async def main() -> None:
        ws = await _open(server.url)
        nameplates.append((await _ask(ws, {"type": "allocate"}))["nameplate"])
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["reason"] == "expired"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)

    _run(main())
    assert f"expire nameplate={nameplates[0]}" in server.log_text()


def test_connections_per_address(server_with: Any) -> None:
    server = server_with("--max-connections-per-ip", "3")

    async def main() -> None:
        kept = [await _open(server.url) for _ in range(3)]
        extra = await connect(server.url)
        first = json.loads(await extra.recv())
        assert first["reason"] == "too_many_connections"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(extra.recv(), 10)
        await kept[0].close()
        await asyncio.sleep(0.2)
        again = await _open(server.url)  # a freed slot can be used again
        assert (await _ask(again, {"type": "allocate"}))["type"] == "allocated"

    _run(main())


def test_new_connections_per_minute_per_address(server_with: Any) -> None:
    """Beside the limit on open connections, one on new ones: a prober that opens and closes
    connections to count through nameplates is cut off after N a minute."""
    server = server_with("--connections-per-minute-per-ip", "5")

    async def main() -> None:
        for _ in range(5):
            ws = await _open(server.url)
            await ws.close()
        extra = await connect(server.url)
        assert json.loads(await extra.recv())["reason"] == "connection_rate"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(extra.recv(), 10)

    _run(main())
    assert 'p2pcp_signal_rejections_total{reason="connection_rate"} 1' in _metrics(server)


def test_handshake_timeout(server_with: Any) -> None:
    server = server_with("--handshake-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        silent.settimeout(10)
        assert silent.recv(1024) == b""  # the server hangs up on a client that says nothing
        assert time.monotonic() - started < 5


def test_health_and_metrics(server_with: Any) -> None:
    server = server_with()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ok\n"

    async def main() -> None:
        await _pair_still_relays(server.url)

    _run(main())
    text = _metrics(server)
    assert "p2pcp_signal_connections_total 2" in text
    assert "p2pcp_signal_relayed_total 1" in text
    assert "# TYPE p2pcp_signal_rooms gauge" in text


def test_sigterm_tells_clients_and_exits_0(server_with: Any) -> None:
    server = server_with()

    async def main() -> None:
        ws = await _open(server.url)
        await _ask(ws, {"type": "allocate"})
        server.process.send_signal(signal.SIGTERM)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["reason"] == "shutdown"

    _run(main())
    assert server.process.wait(10) == 0
    assert "shutting down" in server.log_text()
