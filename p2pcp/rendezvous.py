"""The rendezvous: the code's room on the signaling server, the PAKE handshake over it, the SDP
offer and answer sealed with the PAKE key, the retries while the sender's room is not open yet,
and watching the room until the data channel is up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from .code import Code
from .errors import (
    CodeError,
    ConnectError,
    P2pcpError,
    PeerError,
    ProtocolError,
)
from .escape import show
from .events import (
    Connected,
    EventSink,
    Verification,
    WaitingForSender,
)
from .netcheck import IceServer
from .pake import RECEIVER, SENDER, Pake, SealedChannel, SealError, verification_string
from .signaling import NoSender, PeerLeft, Signaling, Tls
from .transport import Transport

log = logging.getLogger(__name__)

RENDEZVOUS_TIMEOUT = 60.0
JOIN_RETRY_FIRST = 0.01
"""With ``--wait``, the first pause before asking again for the code's room; it doubles..."""
JOIN_RETRY_MAX = 0.5
"""...up to this, so a sender that starts a moment later is found within half a second..."""
JOIN_RETRY_SOON = 0.1
"""...and up to this for the first JOIN_SOON_SECONDS: a script that starts both sides at once
finds the sender within 0.1 s of its room opening (a sender behind a 20 ms link opens it about
half a second after start, when a doubling pause had grown to 0.3 s)."""
JOIN_SOON_SECONDS = 3.0
PEER_LEFT_GRACE = 5.0
"""Seconds the data channel may still take to open after the peer left the room."""
WRONG_CODE = "wrong code: the two sides typed different codes, or someone tried to guess it"


# -- rendezvous -----------------------------------------------------------------------------


class _PeerFoundNoPath(ConnectError):
    """The peer's ICE found no path (it said so in the room)."""


async def _peer_body(signaling: Signaling) -> dict[str, Any]:
    """The next message the peer relayed; its abort (during set-up) becomes an error."""
    body = await signaling.receive()
    if body.get("kind") == "abort":
        text = show(str(body.get("message")))[:300]
        if body.get("reason") == "no_path":
            raise _PeerFoundNoPath(f"the peer could not connect either: {text}")
        raise PeerError(f"the peer gave up: {text}")
    return body


async def handshake(
    signaling: Signaling, code: Code, role: str, sink: EventSink | None
) -> tuple[SealedChannel, str, bytes]:
    """Run SPAKE2 over the room and confirm both sides hold the same key; returns the sealing
    channel, the verification string (also emitted, if ``sink``) and the PAKE key."""
    pake = Pake(code.password)
    await signaling.send({"kind": "pake", "msg": base64.b64encode(pake.outbound).decode()})
    body = await _peer_body(signaling)
    try:
        inbound = base64.b64decode(str(body.get("msg")), validate=True)
    except (binascii.Error, ValueError):
        raise CodeError("the key exchange failed: the peer sent a malformed message") from None
    if body.get("kind") != "pake":
        raise CodeError("the key exchange failed: the peer sent an unexpected message")
    shared = pake.finish(inbound)
    box = await confirm_key(signaling, shared, role, WRONG_CODE)
    verification = verification_string(shared)
    if sink is not None:
        sink.emit(Verification(verification))
    return box, verification, shared


async def confirm_key(signaling: Signaling, shared: bytes, role: str, wrong: str) -> SealedChannel:
    """The sealing channel of ``shared``, once the peer proved it holds the same key (each side
    sends its role sealed, and opens the other's); CodeError with ``wrong`` if it does not."""
    box = SealedChannel.for_role(shared, role)
    other = RECEIVER if role == SENDER else SENDER
    await signaling.send({"kind": "sealed", "box": box.seal({"type": "confirm", "role": role})})
    try:
        confirm = box.open(str((await _peer_body(signaling)).get("box")))
    except SealError:
        raise CodeError(wrong) from None
    if confirm.get("type") != "confirm" or confirm.get("role") != other:
        raise CodeError("the key exchange failed: both sides claim the same role")
    return box


async def send_sealed(signaling: Signaling, box: SealedChannel, payload: dict[str, Any]) -> None:
    await signaling.send({"kind": "sealed", "box": box.seal(payload)})


async def receive_payload(signaling: Signaling, box: SealedChannel, kind: str) -> dict[str, Any]:
    """The next sealed payload from the peer, which must be of type ``kind``."""
    body = await _peer_body(signaling)
    try:
        payload = box.open(str(body.get("box")))
    except SealError:
        raise ProtocolError(
            "a signaling message failed authentication: the server or the network tampered "
            "with it; the transfer was stopped"
        ) from None
    if payload.get("type") != kind:
        raise ProtocolError(f"the peer sent an unexpected signaling message instead of {kind}")
    return payload


async def receive_sealed(signaling: Signaling, box: SealedChannel, kind: str) -> dict[str, Any]:
    """The peer's sealed SDP offer or answer."""
    payload = await receive_payload(signaling, box, kind)
    if not isinstance(payload.get("sdp"), str):
        raise ProtocolError(f"the peer sent an unexpected signaling message instead of {kind}")
    return payload


def all_ice_servers(signaling: Signaling, local: Sequence[IceServer]) -> list[IceServer]:
    return [*local, *(IceServer.from_json(s) for s in signaling.ice_servers if isinstance(s, dict))]


async def _watch_room(signaling: Signaling) -> None:
    """Raise as soon as the peer gives up; if the server goes away, wait forever (the peers may
    still meet). A peer that leaves the room is believed gone only after PEER_LEFT_GRACE: each
    side closes its rendezvous connection once its own data channel is open, which may be a
    moment before ours opens."""
    try:
        while True:
            await _peer_body(signaling)
    except _PeerFoundNoPath:
        raise
    except PeerLeft:
        await asyncio.sleep(PEER_LEFT_GRACE)
        raise
    except ConnectError:
        await asyncio.get_running_loop().create_future()


async def connected(transport: Transport, signaling: Signaling, sink: EventSink) -> None:
    """Wait for the data channel to open while watching the room, so that a peer that gives up
    during set-up is reported at once instead of after the ICE timeout."""
    opened = asyncio.ensure_future(transport.wait_open())
    watching = asyncio.ensure_future(_watch_room(signaling))
    try:
        await asyncio.wait({opened, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and not opened.done():
            watching.result()
        await opened
    finally:
        opened.cancel()
        watching.cancel()
    route, peer = transport.route()
    sink.emit(Connected(route, peer))


async def abort_rendezvous(signaling: Signaling | None, exc: BaseException) -> None:
    """Before the data channel exists, tell the peer through the room why we stop."""
    if signaling is None or isinstance(exc, PeerError):
        return
    text = exc.message if isinstance(exc, P2pcpError) else "cancelled"
    reason = "no_path" if isinstance(exc, ConnectError) else "error"
    body = {"kind": "abort", "reason": reason, "message": text}
    with contextlib.suppress(Exception):
        await asyncio.wait_for(signaling.send(body), 1.0)


async def join_room(
    signaling: Signaling,
    url: str,
    tls: Tls,
    nameplate: str,
    wait: float,
    sink: EventSink,
    reconnected: Callable[[Signaling], None],
) -> Signaling:
    """Join the room of ``nameplate``; for ``wait`` seconds, ask again (on a new connection,
    which ``reconnected`` is told of) while no sender holds it."""
    deadline = time.monotonic() + wait
    delay = JOIN_RETRY_FIRST
    while True:
        try:
            await signaling.join(nameplate)
            return signaling
        except NoSender:
            if time.monotonic() + delay > deadline:
                raise
        if delay == JOIN_RETRY_FIRST:
            sink.emit(WaitingForSender(nameplate, wait))
        await signaling.close()
        await asyncio.sleep(delay)
        soon = time.monotonic() + wait - deadline < JOIN_SOON_SECONDS
        delay = min(delay * 2, JOIN_RETRY_SOON if soon else JOIN_RETRY_MAX)
        signaling = await Signaling.connect(url, tls)
        reconnected(signaling)
