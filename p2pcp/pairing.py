"""``p2pcp pair``: one device shows a code, the other types it. The two run a code transfer's
rendezvous and SPAKE2 (through a server, or on the LAN without one), then swap their long-term
public keys and host names sealed under the PAKE key, show the same fingerprint, ask (unless
``--yes``), and each stores the other only if both said yes. No WebRTC connection is made: the
sealed signaling already carries everything a pairing needs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import identity
from .code import Code, make_code
from .devicekeys import KEY_SIZE, fingerprint, pair_secret, pairing_fingerprint, public_bytes
from .devices import Device, DeviceStore, check_name, suggested_name
from .errors import PeerError, ProtocolError, RefusedError
from .events import CodeReady, EventSink, Paired, Searching
from .pake import RECEIVER, SENDER
from .rendezvous import RENDEZVOUS_TIMEOUT, handshake, join_room, receive_payload, send_sealed
from .signaling import RoomReopened, Signaling, Tls

if TYPE_CHECKING:
    from .lan import LanHost

DECISION_TIMEOUT = 300.0
"""Seconds one side waits for the other's user to answer the pairing question."""

ConfirmPair = Callable[[str, str, str], Awaitable[bool]]
"""Asks the user: pair with the device that calls itself ``offered`` (first argument), to be
stored as ``name`` (second), whose pairing fingerprint is the third? True to pair."""


@dataclass(frozen=True)
class PairOptions:
    """What ``p2pcp pair`` was asked to do."""

    code: Code | None
    """The code shown on the other device, or None to show one here."""
    server: str | None
    """Rendezvous server URL; None: meet on the LAN (mDNS), the showing side serving."""
    directory: Path
    """The config directory: this device's key and its paired devices."""
    name: str | None = None
    """What to call the other device here; None: after its host name."""
    policy: str = "ask"
    """What ``listen`` does with its sends."""
    tls: Tls = Tls()
    """How to check a wss:// server's certificate."""


async def pair(options: PairOptions, sink: EventSink, confirm: ConfirmPair) -> Device:
    """Pair this device with another; returns the stored device."""
    own = identity.load_or_create(options.directory)  # before any network: a clear error early
    lan: LanHost | None = None
    signaling: Signaling | None = None
    try:
        if options.code is None:
            url = options.server
            if url is None:
                from .lan import LanHost

                lan = LanHost()
                await lan.start()
                url = lan.url
            signaling = await Signaling.connect(url, options.tls)
            code = make_code(await signaling.allocate(lan.nameplate if lan is not None else None))
            sink.emit(CodeReady(str(code), options.server, None, command="pair"))
            role = SENDER
            while True:
                await signaling.wait_for_peer()
                try:
                    async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
                        box, _, shared = await handshake(signaling, code, role, None)
                    break
                except RoomReopened:
                    continue
        else:
            code, role = options.code, RECEIVER
            url = options.server
            if url is None:
                sink.emit(Searching(code.nameplate))
                from .lan import find_sender

                url = await find_sender(code.nameplate)
            signaling = await Signaling.connect(url, options.tls)
            signaling = await join_room(signaling, url, options.tls, code.nameplate, 0, sink, _no)
            async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
                box, _, shared = await handshake(signaling, code, role, None)
        mine = public_bytes(own)
        async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
            await send_sealed(
                signaling,
                box,
                {"type": "pair", "key": base64.b64encode(mine).decode(), "name": _host()},
            )
            theirs, offered = _peer_identity(await receive_payload(signaling, box, "pair"))
        if theirs == mine:
            raise PeerError("the other device has this device's own key: nothing was stored")
        secret = pair_secret(shared)
        shown = pairing_fingerprint(secret, mine, theirs)
        name = check_name(options.name) if options.name else suggested_name(offered)
        ok = await confirm(offered, name, shown)
        await send_sealed(signaling, box, {"type": "paired", "ok": ok})
        if not ok:
            raise RefusedError("pairing declined here; nothing was stored")
        async with asyncio.timeout(DECISION_TIMEOUT):
            answer = await receive_payload(signaling, box, "paired")
        if answer.get("ok") is not True:
            raise RefusedError("the other device declined the pairing; nothing was stored")
        device = DeviceStore(options.directory).add(
            Device(name, theirs, secret, time.time(), options.policy)
        )
        sink.emit(Paired(device.name, shown, fingerprint(theirs), device.policy))
        return device
    finally:
        if signaling is not None:
            await signaling.close()
        if lan is not None:
            await lan.close()


def _no(_: Signaling) -> None:
    """join_room's reconnection hook, never called without --wait."""


def _host() -> str:
    return socket.gethostname()[:64] or "device"


def _peer_identity(payload: dict[str, object]) -> tuple[bytes, str]:
    """The other device's public key and what it calls itself."""
    try:
        key = base64.b64decode(str(payload.get("key")), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise ProtocolError("the other device sent a malformed key")
    name = payload.get("name")
    return key, str(name)[:64] if isinstance(name, str) else "device"
