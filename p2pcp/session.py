"""One send or one receive, start to finish, reported as events.

The rendezvous (room, PAKE, sealed SDP exchange) and the transfer over the data channel are kept
apart: :class:`FileSender` and :class:`FileReceiver` work over any :class:`FrameChannel`, so
tests can run them over an in-memory pair. This module knows nothing of Typer or rich.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol as p
from .code import Code, make_code
from .errors import (
    CodeError,
    ConnectError,
    LocalWriteError,
    P2pcpError,
    PeerError,
    ProtocolError,
    RefusedError,
    TransferError,
)
from .events import (
    Accepted,
    CodeReady,
    Connected,
    EventSink,
    FileDone,
    Finished,
    Notice,
    OfferEntry,
    OfferReceived,
    Progress,
    TextReceived,
)
from .files import (
    FileReader,
    Output,
    OutputDir,
    Source,
    StdoutOutput,
    TextWriter,
    Writer,
    build_sources,
    show,
    text_source,
)
from .pake import RECEIVER, SENDER, Pake, SealedChannel, SealError
from .signaling import Signaling
from .transport import IceServer, Transport

log = logging.getLogger(__name__)

CREDIT_WINDOW = 16 * 1024 * 1024
PROGRESS_INTERVAL = 0.2
RENDEZVOUS_TIMEOUT = 60.0
CLOSE_WAIT = 5.0
LINGER = 2.0
IDLE_TIMEOUT = 120.0
WRONG_CODE = "wrong code: the two sides typed different codes, or someone tried to guess it"


class FrameChannel(Protocol):
    """What the transfer needs of a transport."""

    @property
    def max_message(self) -> int:
        """Largest frame the peer accepts."""

    async def send(self, frame: bytes) -> None:
        """Send one frame (may wait for backpressure)."""

    async def recv(self) -> bytes:
        """Receive one frame."""


Decide = Callable[[OfferReceived], Awaitable[bool]]


@dataclass
class _Progress:
    """Rate-limited progress reporting."""

    sink: EventSink
    total: int | None
    done: int = 0
    _last: float = field(default=0.0)

    def update(
        self, path: str, file_bytes: int, file_size: int | None, force: bool = False
    ) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self.sink.emit(Progress(self.done, self.total, path, file_bytes, file_size))


def _total(entries: Sequence[p.Entry]) -> int | None:
    sizes = [e.size for e in entries if e.carries_data]
    return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


# -- the transfer over a frame channel ------------------------------------------------------


_PATIENT_STATES = frozenset(
    {
        p.State.START,
        p.State.AWAIT_HELLO,
        p.State.READY,
        p.State.AWAIT_OFFER,
        p.State.AWAIT_ANSWER,
        p.State.DECIDING,
    }
)


async def _next_message(channel: FrameChannel, peer: p.Peer) -> p.Message:
    """The next message from the peer; an abort becomes an error. Once data moves, a peer
    that stays silent for :data:`IDLE_TIMEOUT` is given up on (before that, a person may be
    deciding whether to accept)."""
    if peer.state in _PATIENT_STATES:
        frame = await channel.recv()
    else:
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                frame = await channel.recv()
        except TimeoutError:
            raise PeerError(f"the peer sent nothing for {IDLE_TIMEOUT:.0f} s; giving up") from None
    message = peer.receive(frame)
    if isinstance(message, p.Abort):
        raise _peer_abort(message)
    return message


class FileSender:
    """Offers ``sources`` and streams them, honouring the receiver's credit."""

    def __init__(self, channel: FrameChannel, sources: Sequence[Source], sink: EventSink) -> None:
        self.channel = channel
        self.sources = list(sources)
        self.sink = sink
        self.peer = p.Peer(p.Role.SENDER)
        self.bytes_sent = 0

    async def _send(self, message: p.Message) -> None:
        await self.channel.send(self.peer.send(message))

    async def _recv(self) -> p.Message:
        return await _next_message(self.channel, self.peer)

    async def run(self) -> None:
        """The whole conversation; returns once the receiver verified every file."""
        await self._send(p.Hello())
        await self._recv()
        await self._offer()
        answer = await self._recv()
        if isinstance(answer, p.Decline):
            raise _decline_error(answer)
        self.sink.emit(Accepted())
        progress = _Progress(self.sink, _total([s.entry for s in self.sources]))
        index = 0
        for source in self.sources:
            if source.entry.carries_data:
                await self._send_file(index, source, progress)
                index += 1
        await self._send(p.Done())
        while not self.peer.finished:
            await self._recv()

    async def _offer(self) -> None:
        entries = [s.entry for s in self.sources]
        limit = min(self.channel.max_message, p.MAX_CONTROL_SIZE) - 1
        start = 0
        while True:
            count = len(entries) - start
            while (
                count > 1 and len(p.encode(p.Offer(tuple(entries[start : start + count])))) > limit
            ):
                count = max(1, count // 2)
            end = start + count
            await self._send(p.Offer(tuple(entries[start:end]), more=end < len(entries)))
            if end >= len(entries):
                return
            start = end

    async def _send_file(self, index: int, source: Source, progress: _Progress) -> None:
        reader = FileReader(source)
        chunk = self.channel.max_message - p.DATA_HEADER_SIZE
        path = source.entry.path
        try:
            while True:
                while self.peer.credit <= 0:
                    await self._recv()
                want = min(chunk, self.peer.credit)
                data = (
                    await asyncio.to_thread(reader.read, want)
                    if reader.may_block
                    else reader.read(want)
                )
                if not data:
                    break
                await self._send(p.Data(data))
                progress.done += len(data)
                self.bytes_sent += len(data)
                progress.update(path, reader.done, reader.size)
            digest = reader.finish()
        finally:
            reader.close()
        await self._send(p.FileEnd(index, digest))
        progress.update(path, reader.done, reader.size, force=True)
        self.sink.emit(FileDone(path, reader.done, digest))


class FileReceiver:
    """Checks the offer, asks ``decide``, then writes and verifies every file."""

    def __init__(
        self, channel: FrameChannel, output: Output, sink: EventSink, decide: Decide
    ) -> None:
        self.channel = channel
        self.output = output
        self.sink = sink
        self.decide = decide
        self.peer = p.Peer(p.Role.RECEIVER)
        self.bytes_received = 0
        self._writer: Writer | None = None
        self._next_entry = 0
        self._ungranted = 0
        self._made: set[str] = set()

    async def _send(self, message: p.Message) -> None:
        await self.channel.send(self.peer.send(message))

    async def _recv(self) -> p.Message:
        return await _next_message(self.channel, self.peer)

    async def run(self) -> None:
        """The whole conversation; returns once every file is verified and in place."""
        try:
            await self._run()
        finally:
            if self._writer is not None:
                self._writer.abort()

    async def _run(self) -> None:
        await self._send(p.Hello())
        await self._recv()
        while self.peer.state is not p.State.DECIDING:
            await self._recv()
        entries = self.peer.entries
        await self._check(entries)
        offer = OfferReceived(
            files=self.peer.file_count,
            bytes=sum(e.size or 0 for e in entries if e.carries_data),
            entries=tuple(OfferEntry(e.path, e.kind, e.size) for e in entries),
            free=self.output.free_bytes(),
        )
        self.sink.emit(offer)
        if not await self.decide(offer):
            await self._send(p.Decline("declined", "the receiver declined"))
            raise RefusedError("declined; nothing was written")
        await self._send(p.Accept(CREDIT_WINDOW))
        self.sink.emit(Accepted())
        await self._receive_files(_Progress(self.sink, _total(entries)))

    async def _check(self, entries: Sequence[p.Entry]) -> None:
        try:
            self.output.check(entries)
        except RefusedError as exc:
            await self._send(p.Decline("refused", exc.message))
            raise
        except LocalWriteError as exc:
            await self._send(p.Decline("space", exc.message))
            raise
        except TransferError as exc:
            await self._send(p.Decline("unsafe", exc.message))
            raise

    async def _receive_files(self, progress: _Progress) -> None:
        while True:
            message = await self._recv()
            if isinstance(message, p.Data):
                writer = self._writer or self._open_next()
                if writer.may_block:
                    await asyncio.to_thread(writer.write, message.data)
                else:
                    writer.write(message.data)
                count = len(message.data)
                self.bytes_received += count
                progress.done += count
                progress.update(writer.entry.path, writer.size, writer.entry.size)
                await self._grant(count)
            elif isinstance(message, p.FileEnd):
                writer = self._writer or self._open_next()
                self._writer = None
                digest = writer.finish(message.sha256)
                progress.update(writer.entry.path, writer.size, writer.entry.size, force=True)
                if isinstance(writer, TextWriter):
                    self.sink.emit(TextReceived(writer.text))
                else:
                    self.sink.emit(FileDone(writer.entry.path, writer.size, digest))
            elif isinstance(message, p.Done):
                self._make_dirs_until(len(self.peer.entries))
                await self._send(p.Verified(self.peer.file_count))
                return

    def _open_next(self) -> Writer:
        entries = self.peer.entries
        while not entries[self._next_entry].carries_data:
            self._next_entry += 1
        self._make_dirs_until(self._next_entry)
        entry = entries[self._next_entry]
        self._next_entry += 1
        writer: Writer = TextWriter(entry) if entry.kind == "text" else self.output.open_file(entry)
        self._writer = writer
        return writer

    def _make_dirs_until(self, end: int) -> None:
        """Create the directory entries that come before entry ``end``, in order."""
        for entry in self.peer.entries[:end]:
            if entry.kind == "dir" and entry.path not in self._made:
                self.output.make_dir(entry.path)
                self._made.add(entry.path)

    async def _grant(self, count: int) -> None:
        self._ungranted += count
        if self._ungranted >= CREDIT_WINDOW // 4:
            grant, self._ungranted = self._ungranted, 0
            await self._send(p.Credit(grant))


def _peer_abort(message: p.Abort) -> PeerError:
    if message.reason == "cancelled":
        return PeerError("the peer cancelled the transfer")
    return PeerError(f"the peer stopped the transfer: {show(message.message)[:300]}")


def _decline_error(message: p.Decline) -> P2pcpError:
    detail = show(message.message)[:300]
    if message.reason == "declined":
        return RefusedError("the receiver declined the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {detail}")
    return TransferError(f"the receiver refused the offer: {detail}")


# -- rendezvous -----------------------------------------------------------------------------


async def _peer_body(signaling: Signaling) -> dict[str, Any]:
    """The next message the peer relayed; its abort (during set-up) becomes an error."""
    body = await signaling.receive()
    if body.get("kind") == "abort":
        raise PeerError(f"the peer gave up: {show(str(body.get('message')))[:300]}")
    return body


async def _handshake(signaling: Signaling, code: Code, role: str) -> SealedChannel:
    """Run SPAKE2 over the room and confirm both sides hold the same key."""
    pake = Pake(code.password)
    await signaling.send({"kind": "pake", "msg": base64.b64encode(pake.outbound).decode()})
    body = await _peer_body(signaling)
    try:
        inbound = base64.b64decode(str(body.get("msg")), validate=True)
    except (binascii.Error, ValueError):
        raise CodeError("the key exchange failed: the peer sent a malformed message") from None
    if body.get("kind") != "pake":
        raise CodeError("the key exchange failed: the peer sent an unexpected message")
    box = SealedChannel.for_role(pake.finish(inbound), role)
    other = RECEIVER if role == SENDER else SENDER
    await signaling.send({"kind": "sealed", "box": box.seal({"type": "confirm", "role": role})})
    try:
        confirm = box.open(str((await _peer_body(signaling)).get("box")))
    except SealError:
        raise CodeError(WRONG_CODE) from None
    if confirm.get("type") != "confirm" or confirm.get("role") != other:
        raise CodeError("the key exchange failed: both sides claim the same role")
    return box


async def _send_sealed(signaling: Signaling, box: SealedChannel, payload: dict[str, Any]) -> None:
    await signaling.send({"kind": "sealed", "box": box.seal(payload)})


async def _receive_sealed(signaling: Signaling, box: SealedChannel, kind: str) -> dict[str, Any]:
    body = await _peer_body(signaling)
    try:
        payload = box.open(str(body.get("box")))
    except SealError:
        raise ProtocolError(
            "a signaling message failed authentication: the server or the network tampered "
            "with it; the transfer was stopped"
        ) from None
    if payload.get("type") != kind or not isinstance(payload.get("sdp"), str):
        raise ProtocolError(f"the peer sent an unexpected signaling message instead of {kind}")
    return payload


def _ice_servers(signaling: Signaling, local: Sequence[IceServer]) -> list[IceServer]:
    return [*local, *(IceServer.from_json(s) for s in signaling.ice_servers if isinstance(s, dict))]


async def _watch_room(signaling: Signaling) -> None:
    """Raise as soon as the peer leaves the room or gives up; if the server goes away, wait
    forever (the peers may still meet)."""
    try:
        while True:
            await _peer_body(signaling)
    except ConnectError:
        await asyncio.get_running_loop().create_future()


async def _connected(transport: Transport, signaling: Signaling, sink: EventSink) -> float:
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
    return time.monotonic()


async def _abort_rendezvous(signaling: Signaling | None, exc: BaseException) -> None:
    """Before the data channel exists, tell the peer through the room why we stop."""
    if signaling is None or isinstance(exc, PeerError):
        return
    text = exc.message if isinstance(exc, P2pcpError) else "cancelled"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(signaling.send({"kind": "abort", "message": text}), 1.0)


async def _close(transport: Transport | None, signaling: Signaling | None) -> None:
    if signaling is not None:
        with contextlib.suppress(Exception):
            await signaling.close()
    if transport is not None:
        with contextlib.suppress(Exception):
            await transport.close()


async def _say_goodbye(
    transport: Transport | None, worker: FileSender | FileReceiver | None, exc: BaseException
) -> None:
    """On failure: make sure the peer learns why, so it can report it at once.

    If this side already said the last word (a decline), let it arrive; if the peer did (an
    abort, a decline) or is gone, close at once; otherwise send an abort first.
    """
    if transport is None:
        return
    ended_by = worker.peer.ended_by if worker is not None else None
    if ended_by == p.RECV or isinstance(exc, PeerError | CodeError):
        return
    with contextlib.suppress(Exception):
        if ended_by != p.SEND:
            reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            text = exc.message if isinstance(exc, P2pcpError) else ""
            await asyncio.wait_for(transport.send(p.encode(p.Abort(reason, text))), 1.0)
        await transport.linger(LINGER)


@dataclass(frozen=True)
class SendOptions:
    """What ``p2pcp send`` was asked to do."""

    paths: Sequence[str]
    """Files and directories to send."""
    server: str
    """Rendezvous server URL."""
    ice_servers: Sequence[IceServer] = ()
    """ICE servers configured locally (added to the server's)."""
    code: Code | None = None
    """A code chosen by the user instead of a fresh one."""
    text: bytes | None = None
    """A text message to send instead of ``paths``."""
    stdin_name: str = "stdin"
    """The name the receiver gets for data read from stdin (``-``)."""


@dataclass(frozen=True)
class ReceiveOptions:
    """What ``p2pcp receive`` was asked to do."""

    code: Code
    """The code typed by the user."""
    server: str
    """Rendezvous server URL."""
    output: str
    """Output directory, or ``-`` for stdout."""
    overwrite: bool = False
    """Replace existing files."""
    ice_servers: Sequence[IceServer] = ()
    """ICE servers configured locally (added to the server's)."""


async def send(options: SendOptions, sink: EventSink) -> None:
    """Run one send: offer the files, wait for the receiver, stream, wait for verification."""
    notices: list[str] = []
    if options.text is not None:
        sources = [text_source(options.text)]
    else:
        sources = build_sources(options.paths, notices.append, options.stdin_name)
    signaling = await Signaling.connect(options.server)
    transport: Transport | None = None
    worker: FileSender | None = None
    try:
        if options.code is not None:
            code = options.code
            if await signaling.allocate(code.nameplate) != code.nameplate:
                raise ConnectError("this rendezvous server cannot open a room for a chosen code")
        else:
            code = make_code(await signaling.allocate())
        sink.emit(CodeReady(str(code), options.server))  # always the first event
        for text in notices:
            sink.emit(Notice(text))
        await signaling.wait_for_peer()
        async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
            box = await _handshake(signaling, code, SENDER)
            transport = Transport(_ice_servers(signaling, options.ice_servers))
            await _send_sealed(
                signaling, box, {"type": "offer", "sdp": await transport.create_offer()}
            )
            answer = await _receive_sealed(signaling, box, "answer")
            await transport.accept_answer(answer["sdp"])
        started = await _connected(transport, signaling, sink)
        worker = FileSender(transport, sources, sink)
        await worker.run()
        files = sum(1 for s in sources if s.entry.carries_data)
        sink.emit(Finished(files, worker.bytes_sent, round(time.monotonic() - started, 3)))
    except TimeoutError:
        raise ConnectError("the peer did not finish setting up the connection in time") from None
    except BaseException as exc:
        if worker is None:
            await _abort_rendezvous(signaling, exc)
        await _say_goodbye(transport, worker, exc)
        raise
    finally:
        await _close(transport, signaling)


async def receive(options: ReceiveOptions, sink: EventSink, decide: Decide) -> None:
    """Run one receive: join, check and accept the offer, write and verify every file."""
    output: Output = (
        StdoutOutput() if options.output == "-" else OutputDir(options.output, options.overwrite)
    )
    signaling: Signaling | None = None
    transport: Transport | None = None
    worker: FileReceiver | None = None
    try:
        signaling = await Signaling.connect(options.server)
        await signaling.join(options.code.nameplate)
        async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
            box = await _handshake(signaling, options.code, RECEIVER)
            offer = await _receive_sealed(signaling, box, "offer")
            transport = Transport(_ice_servers(signaling, options.ice_servers))
            answer = await transport.accept_offer(offer["sdp"])
            await _send_sealed(signaling, box, {"type": "answer", "sdp": answer})
        started = await _connected(transport, signaling, sink)
        worker = FileReceiver(transport, output, sink, decide)
        await worker.run()
        await transport.wait_closed(CLOSE_WAIT)
        seconds = round(time.monotonic() - started, 3)
        sink.emit(Finished(worker.peer.file_count, worker.bytes_received, seconds))
    except TimeoutError:
        raise ConnectError("the peer did not finish setting up the connection in time") from None
    except BaseException as exc:
        if worker is None:
            await _abort_rendezvous(signaling, exc)
        await _say_goodbye(transport, worker, exc)
        raise
    finally:
        await _close(transport, signaling)
        output.close()
