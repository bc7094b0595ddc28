"""A hostile sender built from p2pcp's own modules, for tests against a real ``p2pcp receive``.

It does the honest rendezvous (room, PAKE, sealed SDP, WebRTC) and then sends whatever frames
a test scenario crafts over the real data channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pcp import protocol as p
from p2pcp import rendezvous
from p2pcp.code import Code, make_code
from p2pcp.netcheck import IcePlan
from p2pcp.pake import SENDER
from p2pcp.signaling import Signaling
from p2pcp.transport import Transport

Scenario = Callable[["Wire"], Awaitable[None]]


class _NoSink:
    def emit(self, event: object) -> None:
        pass


@dataclass
class Outcome:
    """How the real receiver ended."""

    code: int
    stdout: str
    stderr: str

    @property
    def last_event(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


class Wire:
    """The hostile side of the data channel, with small helpers for scenarios."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def send(self, frame: bytes) -> None:
        await self.transport.send(frame)

    async def send_text(self, text: str) -> None:
        self.transport._channel.send(text)

    async def control(self, body: dict[str, Any]) -> None:
        await self.send(b"\x00" + json.dumps(body).encode())

    async def recv(self) -> p.Message:
        return p.decode(await self.transport.recv())

    async def hello(self, message: p.Hello | None = None) -> None:
        """Say hello (version 2 unless told: the scenarios script its order, ``accept`` then
        ``resume``) and read the receiver's."""
        await self.send(p.encode(message or p.Hello(version=2)))
        assert isinstance(await self.recv(), p.Hello)

    async def offer(self, entries: list[dict[str, Any]]) -> p.Message | None:
        """Send a raw offer; returns the receiver's answer, or None if it just hung up."""
        await self.control({"type": "offer", "entries": entries, "more": False})
        try:
            return await asyncio.wait_for(self.recv(), 20)
        except Exception:
            return None


async def _offer_and_answer(signaling: Signaling, code: Code, transport: Transport) -> None:
    """The honest sender's side of the rendezvous: wait for the peer, run the PAKE, send the
    sealed offer and apply the sealed answer."""
    await signaling.wait_for_peer()
    box, _, _ = await rendezvous.handshake(signaling, code, SENDER, _NoSink())
    await rendezvous.send_sealed(
        signaling, box, {"type": "offer", "sdp": await transport.create_offer()}
    )
    answer = await rendezvous.receive_sealed(signaling, box, "answer")
    await transport.accept_answer(answer["sdp"])


async def run(
    server_url: str,
    out: Path,
    scenario: Scenario,
    *receiver_args: str,
    json_mode: bool = True,
    leave_room_early: bool = False,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run ``scenario`` against a real receiver writing into ``out``. With
    ``leave_room_early``, this side closes its rendezvous connection right after the answer,
    before the data channel is open (as a peer whose channel opened first does). ``env`` is
    added to the receiver's environment."""
    signaling = await Signaling.connect(server_url)
    code = make_code(await signaling.allocate())
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pcp",
        "receive",
        "--server",
        server_url,
        "--yes",
        "-o",
        str(out),
        *(["--json"] if json_mode else []),
        *receiver_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")},
            "P2PCP_CONFIG": "/dev/null",
            "P2PCP_CODE": str(code),
            **(env or {}),
        },
    )
    transport = Transport(IcePlan([]))
    try:
        await _offer_and_answer(signaling, code, transport)
        if leave_room_early:
            await signaling.close()
        await transport.wait_open()
        # The scenario runs until the receiver exits (hanging up on it is the expected outcome).
        acting = asyncio.ensure_future(scenario(Wire(transport)))
        stdout, stderr = await asyncio.wait_for(receiver.communicate(), 60)
        acting.cancel()
        await asyncio.gather(acting, return_exceptions=True)
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
        await transport.close()
        await signaling.close()
    assert receiver.returncode is not None
    return Outcome(receiver.returncode, stdout.decode(), stderr.decode())


async def serve(server_url: str, scenario: Scenario) -> None:
    """Be a lying sender for any receiver (the browser page): print the code on stdout, then
    do the honest rendezvous and run ``scenario``."""
    signaling = await Signaling.connect(server_url)
    code = make_code(await signaling.allocate())
    print(code, flush=True)
    transport = Transport(IcePlan([]))
    try:
        await _offer_and_answer(signaling, code, transport)
        await transport.wait_open()
        await asyncio.wait_for(scenario(Wire(transport)), 60)
    finally:
        await transport.close()
        await signaling.close()


async def _wrong_hash(wire: Wire) -> None:
    """One honest file whose ``file_end`` carries a hash that does not match; print what the
    receiver answers."""
    await wire.hello()
    size = 1000
    answer = await wire.offer([{"path": "bad.bin", "kind": "file", "size": size}])
    assert isinstance(answer, p.Accept), answer
    await wire.control({"type": "resume", "offsets": []})
    await wire.send(b"\x01" + os.urandom(size))
    await wire.control({"type": "file_end", "index": 0, "sha256": "00" * 32})
    reply = await wire.transport.recv()
    print(json.dumps(json.loads(reply[1:])), flush=True)


async def _wrong_hash_in_a_folder(wire: Wire) -> None:
    """A folder of two files: the first honest, the second with a hash that does not match (a
    page receiving it into a zip must never offer the zip); print the receiver's answer."""
    await wire.hello()
    good = os.urandom(2000)
    entries: list[dict[str, Any]] = [
        {"path": "pics", "kind": "dir"},
        {"path": "pics/good.bin", "kind": "file", "size": len(good)},
        {"path": "pics/bad.bin", "kind": "file", "size": 1000},
    ]
    answer = await wire.offer(entries)
    assert isinstance(answer, p.Accept), answer
    await wire.control({"type": "resume", "offsets": []})
    await wire.send(b"\x01" + good)
    await wire.control({"type": "file_end", "index": 0, "sha256": hashlib.sha256(good).hexdigest()})
    await wire.send(b"\x01" + os.urandom(1000))
    await wire.control({"type": "file_end", "index": 1, "sha256": "00" * 32})
    while True:
        reply = json.loads((await wire.transport.recv())[1:])
        if reply.get("type") != "keepalive":
            break
    print(json.dumps(reply), flush=True)


SCENARIOS = {"wrong-hash": _wrong_hash, "wrong-hash-in-a-folder": _wrong_hash_in_a_folder}

if __name__ == "__main__":
    asyncio.run(serve(sys.argv[2], SCENARIOS[sys.argv[1]]))
