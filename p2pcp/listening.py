"""``p2pcp listen``: an always-on receiver for this device's paired devices. It holds each
device's room (``meeting.RoomHolder``), and when one comes and proves who it is, applies that
device's policy (``ask`` at the terminal, refused when none is attached; ``accept``;
``refuse``) and runs the receive as a code transfer would, into one output directory. One
transfer at a time per device, several devices at once. A removed device is still recognised
and refused with a reason it is told. Every event goes to the sink with the device's name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .devices import Device
from .errors import P2pcpError
from .events import EventSink, Incoming, Listening, Notice
from .meeting import Met, Pairing, RoomHolder, answer
from .output import OutputDir
from .pake import RECEIVER
from .session import ReceiveOptions, receive_met
from .transfer import Decide

log = logging.getLogger(__name__)

SinkFor = Callable[[Device], EventSink]
"""The sink of one device's events (``listen --json`` adds the device to each line)."""
DecideFor = Callable[[Device], Decide]
"""How one device's offers are answered, by its policy."""
STORE_REFRESH = 5.0
"""Seconds between two reads of the paired devices while listening."""


def verdict(device: Device, attended: bool) -> str | None:
    """Why a send from ``device`` is refused before its offer is seen, or None to go on."""
    if device.removed is not None:
        return "removed"
    if device.policy == "refuse":
        return "refused"
    if device.policy == "ask" and not attended:
        return "unattended"
    return None


async def listen(
    pairings: list[Pairing],
    options: ReceiveOptions,
    sink: EventSink,
    sink_for: SinkFor,
    decide_for: DecideFor,
    attended: bool,
    only_these: bool = False,
) -> None:
    """Serve ``pairings`` (with ``only_these``, no device paired later) until cancelled
    (SIGINT or SIGTERM end it cleanly: transfers under way stop and their partial files stay,
    to be resumed)."""
    assert pairings
    own, store = pairings[0].own, pairings[0].store
    only = {p.device.key for p in pairings} if only_these else None
    holder = RoomHolder(
        own, [p.device for p in pairings], options.server, options.tls, sink, RECEIVER
    )
    running: set[asyncio.Task[None]] = set()

    def current() -> list[Device]:
        """The devices to serve now: the store is read again, so that a pairing, a removal or
        a policy changed while listening applies at once."""
        try:
            devices = store.load()
        except P2pcpError as exc:
            log.warning("%s", exc.message)
            return [p.device for p in pairings]
        return [d for d in devices if only is None or d.key in only]

    async def follow_store() -> None:
        while True:
            await asyncio.sleep(STORE_REFRESH)
            holder.set_devices(current())

    await holder.start()
    follower = asyncio.create_task(follow_store())
    try:
        names = tuple(p.device.name for p in pairings if p.device.removed is None)
        sink.emit(Listening(names, options.server))
        while True:
            came, met = await holder.next()
            device = next((d for d in current() if d.key == came.key), came)
            pairing = Pairing(own, device, store)
            task = asyncio.create_task(
                _serve(pairing, met, options, sink_for(device), decide_for, attended)
            )
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _, d=device: holder.resume(d))  # type: ignore[misc]
    finally:
        follower.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await holder.close()


async def _serve(
    pairing: Pairing,
    met: Met,
    options: ReceiveOptions,
    sink: EventSink,
    decide_for: DecideFor,
    attended: bool,
) -> None:
    """One transfer from one device; its failure is reported, never raised: listening goes
    on."""
    device = pairing.device
    sink.emit(Incoming(device.name))
    try:
        try:
            await answer(met.signaling, met.box, device, verdict(device, attended))
        except P2pcpError:
            await met.signaling.close()
            raise
        output = OutputDir(options.output, options.overwrite)
        try:
            await receive_met(options, pairing, met, sink, decide_for(device), output)
        finally:
            output.close()
    except P2pcpError as exc:
        _report(sink, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - one transfer's bug must not end the listener
        log.exception("transfer from %s", device.name)
        _report(sink, P2pcpError(f"internal error: {type(exc).__name__}: {exc}"))


def _report(sink: EventSink, exc: P2pcpError) -> None:
    error = getattr(sink, "error", None)
    if callable(error):
        error(int(exc.exit_code), exc.message)
    else:
        sink.emit(Notice(exc.message))
