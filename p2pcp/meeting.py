"""How two paired devices meet without a code. The receiving side (``receive --from``,
``listen``) holds a room for each device it waits for, named by the pairing's nameplate of the
current time window (two near a window's edge), on the rendezvous server or on its own LAN
server announced by mDNS. The sending side (``send --to``) joins it, polling while it is not
there. In the room both run the paired key agreement (``devicekeys.PairedPake``) and confirm
the key as a code's PAKE is confirmed; the holder then sends its verdict (sealed): go on, or
refused, and why. From there on it is a code transfer.

A peer that joins without the pairing's keys (a stranger who drew the same nameplate, or a
hostile server) fails the confirmation: the holder says so and opens the room again; the
sender is told that the device could not prove who it is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .devicekeys import PairedPake, nameplate, windows
from .devices import Device, DeviceStore
from .errors import CodeError, ConnectError, RefusedError
from .events import EventSink, Notice, WaitingForDevice
from .pake import SealedChannel, verification_string
from .rendezvous import _peer_body, confirm_key, receive_payload, send_sealed
from .signaling import NameplateTaken, RoomReopened, Signaling, Tls

if TYPE_CHECKING:
    from .lan import LanHost

log = logging.getLogger(__name__)

DEVICE_WAIT = 600.0
"""Seconds ``send --to`` keeps looking for the device before it gives up (exit 4)."""
POLL = 1.0
"""Seconds between two looks for the device's room."""
REFRESH = 20.0
"""Seconds between two checks of which windows' rooms a holder should hold."""
NOT_PROVEN = (
    "the device answering as {name} could not prove it is {name}: it no longer has this "
    "pairing (it removed this device, or was reset), or someone in between is not it"
)
STRANGER = (
    "someone without this pairing's keys joined the room of {name} and was refused (still waiting)"
)
VERDICTS = {
    "removed": "{name} has removed this device: pair the two again (p2pcp pair)",
    "refused": "{name} refuses sends from this device (its policy for it is 'refuse')",
    "unattended": (
        "{name} asks before accepting sends from this device, and nobody is at it to answer "
        "(there: p2pcp devices policy NAME accept)"
    ),
    "busy": "{name} is already receiving from this device; try again when that ends",
}


@dataclass(frozen=True)
class Pairing:
    """This device and one it is paired with, for a send or receive without a code."""

    own: X25519PrivateKey
    """This device's long-term key."""
    device: Device
    """The other device."""
    store: DeviceStore
    """Where it is stored (its last-seen time is noted there)."""

    def seen(self) -> None:
        """Note that the device just proved who it is."""
        with contextlib.suppress(Exception):  # a read-only config must not stop a transfer
            self.store.seen(self.device.key, time.time())


@dataclass(frozen=True)
class Met:
    """A room both devices are in, with the key agreed and confirmed."""

    signaling: Signaling
    """The room."""
    box: SealedChannel
    """The sealed channel of the agreed key."""
    verification: str
    """The verification string of that key."""


async def _agree(
    signaling: Signaling, own: X25519PrivateKey, device: Device, role: str
) -> tuple[SealedChannel, str]:
    """The paired key agreement and its confirmation (CodeError if the peer is not ``device``
    holding this pairing)."""
    pake = PairedPake(own, device.key, device.secret)
    await signaling.send({"kind": "paired", "msg": base64.b64encode(pake.outbound).decode()})
    body = await _peer_body(signaling)
    try:
        inbound = base64.b64decode(str(body.get("msg")), validate=True)
    except (binascii.Error, ValueError):
        inbound = b""
    if body.get("kind") != "paired":
        raise CodeError(NOT_PROVEN.format(name=device.name))
    shared = pake.finish(inbound)
    box = await confirm_key(signaling, shared, role, NOT_PROVEN.format(name=device.name))
    return box, verification_string(shared)


# -- the sending side -------------------------------------------------------------------------


async def meet_as_sender(
    own: X25519PrivateKey,
    device: Device,
    server: str | None,
    tls: Tls,
    sink: EventSink,
    role: str,
    wait: float = DEVICE_WAIT,
) -> Met:
    """Find ``device``'s room, join it and agree the key; RefusedError (exit 6) with the
    holder's reason if it refuses."""
    signaling = await _join_device_room(device, server, tls, sink, wait)
    try:
        async with asyncio.timeout(60):
            box, verification = await _agree(signaling, own, device, role)
            verdict = await receive_payload(signaling, box, "verdict")
        if verdict.get("ok") is not True:
            reason = str(verdict.get("reason"))
            text = VERDICTS.get(reason, "{name} refused this device").format(name=device.name)
            raise CodeError(text) if reason == "removed" else RefusedError(text)
    except BaseException:
        await signaling.close()
        raise
    return Met(signaling, box, verification)


async def _join_device_room(
    device: Device, server: str | None, tls: Tls, sink: EventSink, wait: float
) -> Signaling:
    deadline = time.monotonic() + wait
    signaling: Signaling | None = None
    told = False
    try:
        while True:
            plates = [nameplate(device.secret, w) for w in windows(time.time())]
            if server is None:
                from .lan import browse

                found = await browse(POLL, plates)
                for plate, url in found.items():
                    if plate in plates:
                        joined = await Signaling.connect(url, tls)
                        try:
                            await joined.join(plate)
                            return joined
                        except CodeError:
                            await joined.close()
            else:
                if signaling is None:
                    signaling = await Signaling.connect(server, tls)
                for plate in plates:
                    try:
                        await signaling.join(plate)
                    except CodeError:  # none yet; or crowded: another send to it, or a
                        continue  # stranger's guess
                    joined, signaling = signaling, None
                    return joined
            if time.monotonic() >= deadline:
                raise ConnectError(
                    f"{device.name} did not come to meet this device within {wait:g} s: run "
                    f"'p2pcp receive --from NAME' there (NAME: what it calls this device), or "
                    f"keep 'p2pcp listen' running there"
                )
            if not told:
                sink.emit(WaitingForDevice(device.name, wait))
                told = True
            if server is not None:
                await asyncio.sleep(POLL)
    finally:
        if signaling is not None:
            await signaling.close()


# -- the receiving side -----------------------------------------------------------------------

Verdict = Callable[[Device], Awaitable[str | None]]
"""The holder's decision once a device proved who it is: None to go on, or a reason to refuse
(a key of ``VERDICTS``)."""


class RoomHolder:
    """Holds the rooms of some paired devices (on a server, or on a LAN host of its own) and
    hands over each device that comes, authenticated. A device's rooms close while one of its
    transfers runs (``resume`` opens them again)."""

    def __init__(
        self,
        own: X25519PrivateKey,
        devices: Sequence[Device],
        server: str | None,
        tls: Tls,
        sink: EventSink,
        role: str,
    ) -> None:
        self._own = own
        self._devices = {d.key: d for d in devices}
        self._server = server
        self._tls = tls
        self._sink = sink
        self._role = role
        self._lan: LanHost | None = None
        self._rooms: dict[tuple[bytes, str], asyncio.Task[None]] = {}
        self._paused: set[bytes] = set()
        self._came: asyncio.Queue[tuple[Device, Met]] = asyncio.Queue()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._server is None:
            from .lan import LanHost

            self._lan = LanHost()
            await self._lan.serve()
        self._refresh()
        self._keeper = asyncio.create_task(self._keep())

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        for task in self._rooms.values():
            task.cancel()
        await asyncio.gather(*self._rooms.values(), return_exceptions=True)
        self._rooms.clear()
        if self._lan is not None:
            await self._lan.close()

    async def next(self) -> tuple[Device, Met]:
        """The next device that joined one of its rooms and proved who it is (its other rooms
        closed until ``resume``)."""
        device, met = await self._came.get()
        self._pause(device)
        return device, met

    def set_devices(self, devices: Sequence[Device]) -> None:
        """Hold rooms for these devices from now on (paired or removed since the start)."""
        self._devices = {d.key: d for d in devices}
        self._refresh()

    def resume(self, device: Device) -> None:
        """Hold ``device``'s rooms again (its transfer is over)."""
        self._paused.discard(device.key)
        self._refresh()

    def _pause(self, device: Device) -> None:
        self._paused.add(device.key)
        for (key, plate), task in list(self._rooms.items()):
            if key == device.key:
                task.cancel()
                del self._rooms[(key, plate)]

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            self._refresh()

    def _refresh(self) -> None:
        """Hold the rooms of this moment's windows for every device not paused; drop others."""
        wanted = {
            (key, nameplate(device.secret, w))
            for key, device in self._devices.items()
            if key not in self._paused
            for w in windows(time.time())
        }
        for room in list(self._rooms):
            if room not in wanted and not self._rooms[room].done():
                self._rooms.pop(room).cancel()
        for room in wanted:
            task = self._rooms.get(room)
            if task is None or task.done():
                self._rooms[room] = asyncio.create_task(self._hold(*room))

    async def _hold(self, key: bytes, plate: str) -> None:
        """Hold one room until the device comes (then hand it over), opening it again after a
        stranger's attempt or a lost connection."""
        delay = 0.5
        while True:
            device = self._devices.get(key)
            if device is None:
                return
            signaling: Signaling | None = None
            handed = False
            try:
                url = self._server if self._server is not None else self._lan_url()
                signaling = await Signaling.connect(url, self._tls)
                await signaling.allocate(plate)
                if self._lan is not None:
                    await self._lan.announce(plate)
                delay = 0.5
                while True:
                    await signaling.wait_for_peer()
                    try:
                        box, verification = await asyncio.wait_for(
                            _agree(signaling, self._own, device, self._role), 60
                        )
                        break
                    except RoomReopened:
                        continue
                handed = True
                if self._lan is not None:
                    await self._lan.withdraw(plate)  # the sender is in: announce it no more
                await self._came.put((device, Met(signaling, box, verification)))
                return
            except asyncio.CancelledError:
                raise
            except CodeError as exc:
                if isinstance(exc, NameplateTaken):
                    log.info("nameplate of %s taken; trying again", device.name)
                else:
                    self._sink.emit(Notice(STRANGER.format(name=device.name)))
                    delay = 0.1
            except (ConnectError, OSError, TimeoutError) as exc:
                log.info("room of %s: %s", device.name, exc)
            finally:
                if not handed:
                    if signaling is not None:
                        await signaling.close()
                    if self._lan is not None:
                        await self._lan.withdraw(plate)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 10.0)

    def _lan_url(self) -> str:
        assert self._lan is not None
        return self._lan.url


async def answer(
    signaling: Signaling, box: SealedChannel, device: Device, refusal: str | None
) -> None:
    """Tell the sender the verdict; a refusal also ends this side's conversation."""
    if refusal is None:
        await send_sealed(signaling, box, {"type": "verdict", "ok": True})
        return
    with contextlib.suppress(Exception):
        await send_sealed(signaling, box, {"type": "verdict", "ok": False, "reason": refusal})
    error = CodeError if refusal == "removed" else RefusedError
    raise error(
        {
            "removed": f"refused {device.name}: it was removed here",
            "refused": f"refused {device.name}: its policy here is 'refuse'",
            "unattended": f"refused {device.name}: its policy is 'ask' and no terminal is here",
            "busy": f"refused {device.name}: a transfer from it is already running",
        }.get(refusal, f"refused {device.name}")
    )
