"""One send or one receive, start to finish, reported as events: the rendezvous
(``rendezvous.py``), then the transfer over the data channel (``transfer.py``). This module
knows nothing of Typer or rich.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .code import Code, make_code
from .conversation import Conversation
from .errors import (
    CodeError,
    ConflictDeclined,
    ConnectError,
    RefusedError,
)
from .escape import show
from .events import (
    CodeReady,
    EventSink,
    Finished,
    Listening,
    Notice,
    Reopened,
    Searching,
    Verification,
)
from .meeting import Met, Pairing, RoomHolder, answer, meet_as_sender
from .netcheck import IcePlan, IceServer, plan_ice
from .output import Output, OutputDir, StdoutOutput
from .pake import RECEIVER, SENDER
from .receiving import FileReceiver
from .rendezvous import (
    RENDEZVOUS_TIMEOUT,
    all_ice_servers,
    connected,
    handshake,
    join_room,
    receive_sealed,
    send_sealed,
)
from .signaling import RoomReopened, Signaling
from .signaling import Tls as Tls  # re-exported for the CLI
from .sources import Source, build_sources, text_source
from .transfer import Confirm as Confirm  # for the CLI
from .transfer import Decide as Decide
from .transfer import FileSender
from .transport import Transport

if TYPE_CHECKING:
    from .lan import LanHost


log = logging.getLogger(__name__)

CLOSE_WAIT = 5.0
REOPEN_WAIT = 5.0
"""Seconds a sender tries to open its code's room again after a refusal over conflicts."""
CONFLICT_WAIT = (
    "the receiver has different files of these names and chose nothing to do with them; "
    "still waiting for it to run again with --overwrite, --skip-existing or --rename "
    "(the code is still good)"
)


async def _claim(signaling: Signaling, nameplate: str, again: bool) -> str:
    """Open the room of a chosen nameplate. Opened again after a refusal over conflicts, the
    last room may linger a moment on the server (its sides' disconnections on their way)."""
    deadline = time.monotonic() + (REOPEN_WAIT if again else 0)
    while True:
        try:
            return await signaling.allocate(nameplate)
        except CodeError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)


class _TryAgain(Exception):
    """The receiver refused over conflicts: the sender opens the code's room again."""

    def __init__(self, code: Code) -> None:
        super().__init__(str(code))
        self.code = code


NO_GUESS = (
    "someone connected with this code's number and left without trying the code; "
    "still waiting (the code is still good)"
)


@dataclass(frozen=True)
class SendOptions:
    """What ``p2pcp send`` was asked to do."""

    paths: Sequence[str]
    """Files and directories to send."""
    server: str | None
    """Rendezvous server URL; None: serve the LAN from this process, announced by mDNS."""
    ice_servers: Sequence[IceServer] = ()
    """ICE servers configured locally (added to the server's)."""
    code: Code | None = None
    """A code chosen by the user instead of a fresh one."""
    tls: Tls = Tls()
    """How to check a wss:// server's certificate."""
    text: bytes | None = None
    """A text message to send instead of ``paths``."""
    resume: bool = True
    """Skip what the receiver already holds, when it matches."""
    stdin_name: str = "stdin"
    """The name the receiver gets for data read from stdin (``-``)."""
    compress: bool = True
    """Send data frames zstd-compressed where that saves bytes and the receiver takes them."""
    to: Pairing | None = None
    """Send to this paired device, with no code (``--to``)."""


@dataclass(frozen=True)
class ReceiveOptions:
    """What ``p2pcp receive`` was asked to do."""

    code: Code | None
    """The code typed by the user (None with ``sender``)."""
    server: str | None
    """Rendezvous server URL; None: find the sender on the LAN by mDNS."""
    output: str
    """Output directory, or ``-`` for stdout."""
    overwrite: bool = False
    """Replace existing files."""
    resume: bool = True
    """Continue partial files from an earlier run, and skip identical complete ones."""
    tls: Tls = Tls()
    """How to check a wss:// server's certificate."""
    ice_servers: Sequence[IceServer] = ()
    """ICE servers configured locally (added to the server's)."""
    wait: float = 0.0
    """Seconds to keep asking for a sender that has not opened the code's room yet."""
    sender: Pairing | None = None
    """Receive from this paired device, with no code (``--from``); ``code`` is then unused."""


async def _verified(confirm: Confirm | None, verification: str) -> None:
    """With --verify, the user must confirm the verification strings match before data moves."""
    if confirm is not None and not await confirm(verification):
        raise RefusedError("the verification strings did not match; nothing was transferred")


async def send(options: SendOptions, sink: EventSink, confirm: Confirm | None = None) -> None:
    """Run one send: offer the files, wait for the receiver, stream, wait for verification."""
    notices: list[str] = []
    if options.text is not None:
        sources = [text_source(options.text)]
    else:
        sources = build_sources(options.paths, notices.append, options.stdin_name)
    if options.to is not None:
        await _send_paired(options, options.to, sink, confirm, sources, notices)
        return
    lan: LanHost | None = None
    if options.server is None:
        from .lan import LanHost  # zeroconf and a local server: 30 ms of start-up, LAN only

        lan = LanHost()
        await lan.start(options.code.nameplate if options.code is not None else None)
    try:
        again = False
        while True:
            try:
                await _send(options, sink, confirm, sources, notices, lan, again)
                return
            except _TryAgain as retry:  # the receiver may come back with the same code
                options = dataclasses.replace(options, code=retry.code)
                notices, again = [], True
                sink.emit(Reopened(CONFLICT_WAIT))
    finally:
        if lan is not None:
            await lan.close()


async def _send(
    options: SendOptions,
    sink: EventSink,
    confirm: Confirm | None,
    sources: list[Source],
    notices: list[str],
    lan: LanHost | None,
    again: bool,
) -> None:
    async with Conversation() as run:
        run.signaling = signaling = await Signaling.connect(
            lan.url if lan is not None else str(options.server), options.tls
        )
        if options.code is None and lan is not None:
            options = dataclasses.replace(options, code=make_code(lan.nameplate))
        if options.code is not None:
            code = options.code
            if await _claim(signaling, code.nameplate, again) != code.nameplate:
                raise ConnectError("this rendezvous server cannot open a room for a chosen code")
        else:
            code = make_code(await signaling.allocate())
        # ICE gathering (STUN, TURN allocations) starts now, while the receiver is awaited: the
        # TURN credentials came with the room. The offer is made then too (it goes out sealed,
        # after the PAKE): its TURN allocation takes two round trips to the server, off the
        # path between the receiver's arrival and the data.
        plan = run.start(plan_ice(all_ice_servers(signaling, options.ice_servers)))
        offer = run.start(_offer(run, plan))
        if not again:  # always the first event, once
            sink.emit(CodeReady(str(code), options.server, signaling.page_url(str(code))))
        for text in notices:
            sink.emit(Notice(text))
        while True:
            await signaling.wait_for_peer()
            try:
                async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
                    box, verification, _ = await handshake(signaling, code, SENDER, sink)
                break
            except RoomReopened:  # no guess was made: the code is still good
                sink.emit(Notice(NO_GUESS))
        met = Met(signaling, box, verification)
        await _send_over(run, met, offer, options, sink, confirm, sources, code)


async def _send_paired(
    options: SendOptions,
    pairing: Pairing,
    sink: EventSink,
    confirm: Confirm | None,
    sources: list[Source],
    notices: list[str],
) -> None:
    """``send --to``: meet the paired device in its room instead of a code's."""
    async with Conversation() as run:
        met = await meet_as_sender(
            pairing.own, pairing.device, options.server, options.tls, sink, SENDER
        )
        run.signaling = signaling = met.signaling
        pairing.seen()
        sink.emit(Verification(met.verification))
        plan = run.start(plan_ice(all_ice_servers(signaling, options.ice_servers)))
        offer = run.start(_offer(run, plan))
        for text in notices:
            sink.emit(Notice(text))
        await _send_over(run, met, offer, options, sink, confirm, sources, None)


async def _send_over(
    run: Conversation,
    met: Met,
    offer: asyncio.Task[tuple[Transport, str]],
    options: SendOptions,
    sink: EventSink,
    confirm: Confirm | None,
    sources: list[Source],
    code: Code | None,
) -> None:
    """The rest of a send, once the peer proved the code or the pairing: the sealed SDP, the
    data channel, the files. A refusal over conflicts opens a code's room again (``code``)."""
    async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
        transport, sdp = await offer
        await send_sealed(met.signaling, met.box, {"type": "offer", "sdp": sdp})
        answer = await receive_sealed(met.signaling, met.box, "answer")
        await transport.accept_answer(answer["sdp"])
    await connected(transport, met.signaling, sink)
    await _verified(confirm, met.verification)
    compress = options.compress and not transport.peer_on_this_host()
    if options.compress and not compress:
        log.debug("zstd: off, the peer is on this host (no network to save bytes on)")
    run.worker = sender = FileSender(transport, sources, sink, options.resume, compress)
    try:
        await sender.run()
    except ConflictDeclined:
        if code is None:
            raise
        raise _TryAgain(code) from None
    files = sum(1 for s in sources if s.entry.carries_data)
    seconds = round(time.monotonic() - sender.started, 3)
    total = sender.bytes_sent + sender.bytes_skipped
    sink.emit(Finished(files, total, seconds, sender.bytes_sent, sender.bytes_skipped))


async def receive(
    options: ReceiveOptions, sink: EventSink, decide: Decide, confirm: Confirm | None = None
) -> None:
    """Run one receive: join, check and accept the offer, write and verify every file."""
    output: Output = (
        StdoutOutput() if options.output == "-" else OutputDir(options.output, options.overwrite)
    )
    for path in output.stale_partials()[:10]:
        sink.emit(
            Notice(
                f"{show(path)} is a partial file more than a week old; remove it "
                "unless you mean to resume that transfer"
            )
        )
    try:
        async with Conversation() as run:
            await _receive(options, sink, decide, confirm, output, run)
    finally:
        output.close()


async def _offer(run: Conversation, plan: asyncio.Task[IcePlan]) -> tuple[Transport, str]:
    """The sender's transport and its offer (candidates gathered), kept by ``run``."""
    run.transport = transport = Transport(await plan)
    return transport, await transport.create_offer()


async def _receive(
    options: ReceiveOptions,
    sink: EventSink,
    decide: Decide,
    confirm: Confirm | None,
    output: Output,
    run: Conversation,
) -> None:
    if options.sender is not None:
        await _receive_paired(options, options.sender, sink, decide, confirm, output, run)
        return
    assert options.code is not None
    url = options.server
    if url is None:
        sink.emit(Searching(options.code.nameplate))
        from .lan import find_sender

        url = await find_sender(options.code.nameplate)
    run.signaling = signaling = await Signaling.connect(url, options.tls)
    run.signaling = signaling = await join_room(
        signaling,
        url,
        options.tls,
        options.code.nameplate,
        options.wait,
        sink,
        lambda reconnected: setattr(run, "signaling", reconnected),
    )
    plan = run.start(plan_ice(all_ice_servers(signaling, options.ice_servers)))
    async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
        box, verification, _ = await handshake(signaling, options.code, RECEIVER, sink)
    await _receive_over(
        run, Met(signaling, box, verification), plan, options, sink, decide, confirm, output
    )


async def _receive_paired(
    options: ReceiveOptions,
    pairing: Pairing,
    sink: EventSink,
    decide: Decide,
    confirm: Confirm | None,
    output: Output,
    run: Conversation,
) -> None:
    """``receive --from``: hold the paired device's room until it comes."""
    holder = RoomHolder(pairing.own, [pairing.device], options.server, options.tls, sink, RECEIVER)
    await holder.start()
    try:
        sink.emit(Listening((pairing.device.name,), options.server))
        device, met = await holder.next()
        run.signaling = met.signaling
        await answer(met.signaling, met.box, device, None)
        await _receive_met_over(run, options, pairing, met, sink, decide, confirm, output)
    finally:
        await holder.close()


async def receive_met(
    options: ReceiveOptions,
    pairing: Pairing,
    met: Met,
    sink: EventSink,
    decide: Decide,
    output: Output,
) -> None:
    """One receive from a paired device already met and answered (``listen``)."""
    async with Conversation() as run:
        await _receive_met_over(run, options, pairing, met, sink, decide, None, output)


async def _receive_met_over(
    run: Conversation,
    options: ReceiveOptions,
    pairing: Pairing,
    met: Met,
    sink: EventSink,
    decide: Decide,
    confirm: Confirm | None,
    output: Output,
) -> None:
    """The rest of a receive from a paired device that proved who it is."""
    run.signaling = met.signaling
    pairing.seen()
    sink.emit(Verification(met.verification))
    plan = run.start(plan_ice(all_ice_servers(met.signaling, options.ice_servers)))
    await _receive_over(run, met, plan, options, sink, decide, confirm, output)


async def _receive_over(
    run: Conversation,
    met: Met,
    plan: asyncio.Task[IcePlan],
    options: ReceiveOptions,
    sink: EventSink,
    decide: Decide,
    confirm: Confirm | None,
    output: Output,
) -> None:
    """The rest of a receive, once the peer proved the code or the pairing."""
    async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
        offer = await receive_sealed(met.signaling, met.box, "offer")
        run.transport = transport = Transport(await plan)
        answer = await transport.accept_offer(offer["sdp"])
        await send_sealed(met.signaling, met.box, {"type": "answer", "sdp": answer})
    await connected(transport, met.signaling, sink)
    await _verified(confirm, met.verification)
    run.worker = receiver = FileReceiver(transport, output, sink, decide, options.resume)
    await receiver.run()
    await transport.wait_closed(CLOSE_WAIT)
    seconds = round(time.monotonic() - receiver.started, 3)
    moved, skipped = receiver.bytes_received, receiver.bytes_skipped
    sink.emit(Finished(receiver.peer.file_count, moved + skipped, seconds, moved, skipped))
