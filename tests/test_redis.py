"""Scale-out: two p2pcp-signal processes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import (
    finish,
    free_port,
    p2pcp,
    require,
    sha256_file,
    start_redis,
    start_send,
    start_signal_server,
)
from websockets.asyncio.client import ClientConnection, connect

require("redis-server")


async def _open(url: str) -> ClientConnection:
    ws = await connect(url)
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


async def _pair_relays(first_url: str, second_url: str) -> None:
    """Two sides, possibly on two servers, meet in a room and relay both ways."""
    a, b = await _open(first_url), await _open(second_url)
    await a.send(json.dumps({"type": "allocate"}))
    nameplate = json.loads(await a.recv())["nameplate"]
    await b.send(json.dumps({"type": "join", "nameplate": nameplate}))
    assert json.loads(await b.recv())["type"] == "joined"
    assert json.loads(await asyncio.wait_for(a.recv(), 10))["type"] == "peer_joined"
    for sender, receiver, body in ((a, b, "ping"), (b, a, "pong")):
        await sender.send(json.dumps({"type": "relay", "body": body}))
        assert json.loads(await asyncio.wait_for(receiver.recv(), 10))["body"] == body
    await a.close()
    await b.close()


def test_peers_on_two_servers_meet_and_a_dead_server_harms_no_other_room(
    redis_url: str, tmp_path: Path
) -> None:
    one = start_signal_server(tmp_path / "one.log", "--redis", redis_url)
    two = start_signal_server(tmp_path / "two.log", "--redis", redis_url)
    try:
        asyncio.run(_pair_relays(one.url, two.url))

        # A real transfer: the sender on server one, the receiver on server two.
        (tmp_path / "data.bin").write_bytes(os.urandom(2_000_000))
        out = tmp_path / "out"
        out.mkdir()
        sender, code = start_send(one, str(tmp_path / "data.bin"))
        got = finish(p2pcp("receive", "--server", two.url, "--json", "--yes", "-o", str(out), code))
        assert finish(sender).code == 0 and got.code == 0, got.stderr
        assert sha256_file(out / "data.bin") == sha256_file(tmp_path / "data.bin")

        # A room entirely on server two, then server one dies: the room carries on.
        async def room_survives() -> None:
            a, b = await _open(two.url), await _open(two.url)
            await a.send(json.dumps({"type": "allocate"}))
            nameplate = json.loads(await a.recv())["nameplate"]
            await b.send(json.dumps({"type": "join", "nameplate": nameplate}))
            assert json.loads(await b.recv())["type"] == "joined"
            assert json.loads(await a.recv())["type"] == "peer_joined"
            one.process.send_signal(signal.SIGKILL)
            one.process.wait(10)
            await b.send(json.dumps({"type": "relay", "body": "still here"}))
            assert json.loads(await asyncio.wait_for(a.recv(), 10))["body"] == "still here"
            await a.close()
            await b.close()

        asyncio.run(room_survives())
        asyncio.run(_pair_relays(two.url, two.url))
    finally:
        one.stop()
        two.stop()


def test_a_code_is_spent_across_servers(redis_url: str, tmp_path: Path) -> None:
    one = start_signal_server(tmp_path / "one.log", "--redis", redis_url)
    two = start_signal_server(tmp_path / "two.log", "--redis", redis_url)

    async def main() -> None:
        a, b, c = await _open(one.url), await _open(two.url), await _open(one.url)
        await a.send(json.dumps({"type": "allocate"}))
        nameplate = json.loads(await a.recv())["nameplate"]
        await b.send(json.dumps({"type": "join", "nameplate": nameplate}))
        assert json.loads(await b.recv())["type"] == "joined"
        await c.send(json.dumps({"type": "join", "nameplate": nameplate}))
        assert json.loads(await c.recv())["reason"] == "crowded"
        for ws in (a, b, c):
            await ws.close()

    try:
        asyncio.run(main())
    finally:
        one.stop()
        two.stop()


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "signal_server",
            "--port",
            "0",
            "--redis",
            f"redis://127.0.0.1:{free_port()}/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_servers_carry_on_after_redis_restarts(tmp_path: Path) -> None:
    """Redis goes away and comes back empty (scripts and subscriptions gone): each server
    reconnects its command connection, loads its scripts again and subscribes again, so new
    rooms work across the two servers with neither restarted."""
    port = free_port()
    redis = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    one = start_signal_server(tmp_path / "one.log", "--redis", url)
    two = start_signal_server(tmp_path / "two.log", "--redis", url)
    try:
        asyncio.run(_pair_relays(one.url, two.url))
        redis.terminate()
        redis.wait(10)

        async def refused_while_down() -> None:
            a = await _open(one.url)
            await a.send(json.dumps({"type": "allocate"}))
            assert json.loads(await asyncio.wait_for(a.recv(), 10))["reason"] == "unavailable"
            await a.close()

        asyncio.run(refused_while_down())
        redis = start_redis(port, tmp_path)
        deadline = time.monotonic() + 20
        while not all("resubscribed to redis" in s.log_text() for s in (one, two)):
            assert time.monotonic() < deadline, (one.log_text(), two.log_text())
            time.sleep(0.1)
        asyncio.run(_pair_relays(one.url, two.url))
        asyncio.run(_pair_relays(two.url, one.url))
    finally:
        one.stop()
        two.stop()
        redis.terminate()
        redis.wait(10)
