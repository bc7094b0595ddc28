"""A plain aiortc data channel copying one file: the yardstick for what p2pcp adds or saves.

Usage (bench/compare.py runs it): python bench/plain_aiortc.py send FILE | receive OUT

The two processes exchange their complete SDP through the parent (one JSON line each way on
stdout/stdin). The sender sends the file in 64 KiB messages, waiting while aiortc holds more than
1 MiB, then an empty message; the receiver writes what arrives, answers the empty message with
one of its own and exits when the sender closes; the sender closes when that answer arrives.
Standard asyncio loop, standard aiortc, no p2pcp code, an explicit empty ICE server list.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

CHUNK = 64 * 1024
HIGH_WATER = 1024 * 1024


async def _line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _say(description: RTCSessionDescription) -> None:
    print(json.dumps({"sdp": description.sdp, "type": description.type}), flush=True)


async def send(path: str) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("bench", negotiated=True, id=0)
    opened = asyncio.Event()
    finished = asyncio.Event()
    low = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("message", lambda _: finished.set())
    channel.on("bufferedamountlow", low.set)
    channel.bufferedAmountLowThreshold = HIGH_WATER // 4
    await pc.setLocalDescription(await pc.createOffer())
    _say(pc.localDescription)
    answer = json.loads(await _line())
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await opened.wait()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            while channel.bufferedAmount > HIGH_WATER:
                low.clear()
                await low.wait()
            channel.send(block)
    channel.send(b"")
    await asyncio.wait_for(finished.wait(), 60)
    await pc.close()


async def receive(out: str) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("bench", negotiated=True, id=0)
    done = asyncio.Event()
    sink = open(out, "wb")  # noqa: SIM115 (closed below, after the last message)

    def on_message(message: bytes) -> None:
        if message:
            sink.write(message)
        else:
            sink.close()
            channel.send(b"")
            done.set()

    channel.on("message", on_message)
    closed = asyncio.Event()
    channel.on("close", closed.set)
    offer = json.loads(await _line())
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    await pc.setLocalDescription(await pc.createAnswer())
    _say(pc.localDescription)
    await done.wait()
    # Data sent just before a close can be lost: the sender closes once it has the answer.
    try:
        await asyncio.wait_for(closed.wait(), 10)
    except TimeoutError:
        pass
    await pc.close()


if __name__ == "__main__":
    role, target = sys.argv[1], sys.argv[2]
    asyncio.run(send(target) if role == "send" else receive(target))
