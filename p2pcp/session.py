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
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import protocol as p
from .code import Code, make_code
from .errors import (
    CodeError,
    ConnectError,
    Interrupted,
    LocalWriteError,
    P2pcpError,
    PeerError,
    ProtocolError,
    RefusedError,
    TransferError,
)
from .events import (
    Accepted,
    AllSent,
    CodeReady,
    Connected,
    EventSink,
    FileDone,
    Finished,
    Notice,
    OfferEntry,
    OfferReceived,
    Progress,
    Resuming,
    Searching,
    TextReceived,
    Verification,
    WaitingForSender,
)
from .files import (
    ExistingFile,
    FileReader,
    HeldLocal,
    Output,
    OutputDir,
    Source,
    StdoutOutput,
    TextWriter,
    Writer,
    build_sources,
    hash_prefix,
    show,
    text_source,
)
from .netcheck import IceServer, plan_ice
from .pake import RECEIVER, SENDER, Pake, SealedChannel, SealError, verification_string
from .signaling import NoSender, PeerLeft, Signaling
from .signaling import Tls as Tls  # re-exported for the CLI
from .transport import Transport

if TYPE_CHECKING:
    from .lan import LanHost

T = TypeVar("T")

log = logging.getLogger(__name__)

CREDIT_WINDOW = 16 * 1024 * 1024
PROGRESS_INTERVAL = 0.2
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
Confirm = Callable[[str], Awaitable[bool]]
"""Asks the user whether the verification string matches the other screen."""


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
    """Offers ``sources`` and streams them, honouring the receiver's credit and resuming what
    the receiver already holds when its prefix matches."""

    def __init__(
        self,
        channel: FrameChannel,
        sources: Sequence[Source],
        sink: EventSink,
        resume: bool = True,
        compress: bool = True,
    ) -> None:
        self.channel = channel
        self.sources = list(sources)
        self.sink = sink
        self.resume = resume
        self.peer = p.Peer(p.Role.SENDER, compress)
        self.bytes_sent = 0
        self.bytes_skipped = 0
        self.started = time.monotonic()
        """When data started to move (the receiver accepted)."""
        self._starts: dict[int, tuple[int, Any]] = {}

    async def _send(self, message: p.Message) -> None:
        await self.channel.send(self.peer.send(message))

    async def _recv(self) -> p.Message:
        return await _next_message(self.channel, self.peer)

    @property
    def _data_sources(self) -> list[Source]:
        return [s for s in self.sources if s.entry.carries_data]

    async def run(self) -> None:
        """The whole conversation; returns once the receiver verified every file."""
        await self._send(self.peer.hello())
        await self._recv()
        await self._offer()
        answer = await self._recv()
        if isinstance(answer, p.Decline):
            raise _decline_error(answer)
        assert isinstance(answer, p.Accept)
        await self._resume(answer.have)
        self.sink.emit(Accepted())
        self.started = time.monotonic()
        total = _total([s.entry for s in self.sources])
        progress = _Progress(self.sink, total, done=self.bytes_skipped)
        if self.bytes_skipped:
            self.sink.emit(Resuming(self.bytes_skipped, total))
        for index, source in enumerate(self._data_sources):
            await self._send_file(index, source, progress)
        await self._send(p.Done())
        if self.peer.packer is not None:
            packer = self.peer.packer
            log.debug("zstd: %d of %d bytes sent compressed", packer.packed, packer.raw)
        self.sink.emit(AllSent())
        while not self.peer.finished:
            await self._recv()

    async def _resume(self, have: tuple[p.Held, ...]) -> None:
        """Check each prefix the receiver holds against our file; tell it where data starts."""
        sources = self._data_sources
        offsets: list[tuple[int, int]] = []
        for held in have:
            hasher = None
            if self.resume:
                hasher = await asyncio.to_thread(hash_prefix, sources[held.index].local, held.size)
            if hasher is not None and hasher.hexdigest() == held.sha256:
                self._starts[held.index] = (held.size, hasher)
                self.bytes_skipped += held.size
                offsets.append((held.index, held.size))
            else:
                offsets.append((held.index, 0))
        await self._send(p.Resume(tuple(offsets)))

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
        reader = FileReader(source, self._starts.get(index))
        path = source.entry.path
        try:
            while True:
                while self.peer.credit <= 0:
                    await self._recv()
                chunk = self.channel.max_message - p.DATA_HEADER_SIZE  # grows with large packets
                data = await _io(reader.may_block, reader.read, min(chunk, self.peer.credit))
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


async def _io(may_block: bool, operation: Callable[[Any], Any], argument: Any) -> Any:
    """Run one read or write; in a worker thread when it may wait on another process (a pipe),
    so that the event loop keeps serving the connection."""
    if may_block:
        return await asyncio.to_thread(operation, argument)
    return operation(argument)


def _keeps_partials(exc: BaseException) -> bool:
    """Whether an interruption leaves partial files for a later run to resume: yes when the
    peer went away or either side was interrupted, no when the peer misbehaved."""
    return isinstance(exc, asyncio.CancelledError | Interrupted) or type(exc) is PeerError


class FileReceiver:
    """Checks the offer, asks ``decide``, then writes and verifies every file, resuming from
    what the output already holds."""

    def __init__(
        self,
        channel: FrameChannel,
        output: Output,
        sink: EventSink,
        decide: Decide,
        resume: bool = True,
    ) -> None:
        self.channel = channel
        self.output = output
        self.sink = sink
        self.decide = decide
        self.resume = resume
        self.peer = p.Peer(p.Role.RECEIVER, compress=True)
        self.bytes_received = 0
        self.bytes_skipped = 0
        self.started = time.monotonic()
        """When data started to move (this side accepted)."""
        self._held: dict[int, HeldLocal] = {}
        self._writer: Writer | None = None
        self._next_entry = 0
        self._next_file = 0
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
        except BaseException as exc:
            writer, self._writer = self._writer, None
            if writer is not None and writer.entry.size is not None and _keeps_partials(exc):
                writer.suspend()
            elif writer is not None:
                writer.abort()
            raise

    async def _run(self) -> None:
        await self._send(self.peer.hello())
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
        if self.resume:
            self._held = await asyncio.to_thread(self.output.held, entries)
        have = tuple(p.Held(i, h.size, h.sha256) for i, h in self._held.items())
        await self._send(p.Accept(CREDIT_WINDOW, have))
        verdict = await self._recv()
        assert isinstance(verdict, p.Resume)
        self._apply(verdict)
        self.sink.emit(Accepted())
        self.started = time.monotonic()
        total = _total(entries)
        if self.bytes_skipped:
            self.sink.emit(Resuming(self.bytes_skipped, total))
        await self._receive_files(_Progress(self.sink, total, done=self.bytes_skipped))

    def _apply(self, verdict: p.Resume) -> None:
        """Keep what the sender confirmed; a complete file that differs is a conflict."""
        starts = dict(verdict.offsets)
        files = [e for e in self.peer.entries if e.carries_data]
        for index, held in list(self._held.items()):
            if starts.get(index, 0) == held.size:
                self.bytes_skipped += held.size
                continue
            del self._held[index]
            if held.complete and not self.output.overwrite:
                raise RefusedError(
                    f"{show(files[index].path)} already exists and differs from the sender's; "
                    "nothing was overwritten (pass --overwrite to replace it)"
                )

    async def _check(self, entries: Sequence[p.Entry]) -> None:
        try:
            self.output.check(entries, resume=self.resume)
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
                await _io(writer.may_block, writer.write, message.data)
                count = len(message.data)
                self.bytes_received += count
                progress.done += count
                progress.update(writer.entry.path, writer.size, writer.entry.size)
                await self._grant(count)
            elif isinstance(message, p.FileEnd):
                writer = self._writer or self._open_next()
                digest = writer.finish(message.sha256)
                self._writer = None
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
        held = self._held.get(self._next_file)
        self._next_entry += 1
        self._next_file += 1
        writer: Writer
        if entry.kind == "text":
            writer = TextWriter(entry)
        elif held is not None and held.complete:
            writer = ExistingFile(entry, held)
        else:
            writer = self.output.open_file(entry, held)
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


def _peer_abort(message: p.Abort) -> P2pcpError:
    if message.reason == "cancelled":
        return PeerError("the peer cancelled the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {show(message.message)[:300]}")
    return PeerError(f"the peer stopped the transfer: {show(message.message)[:300]}")


def _decline_error(message: p.Decline) -> P2pcpError:
    detail = show(message.message)[:300]
    if message.reason == "declined":
        return RefusedError("the receiver declined the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {detail}")
    return TransferError(f"the receiver refused the offer: {detail}")


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


async def _handshake(
    signaling: Signaling, code: Code, role: str, sink: EventSink
) -> tuple[SealedChannel, str]:
    """Run SPAKE2 over the room and confirm both sides hold the same key; returns the sealing
    channel and the verification string."""
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
    box = SealedChannel.for_role(shared, role)
    other = RECEIVER if role == SENDER else SENDER
    await signaling.send({"kind": "sealed", "box": box.seal({"type": "confirm", "role": role})})
    try:
        confirm = box.open(str((await _peer_body(signaling)).get("box")))
    except SealError:
        raise CodeError(WRONG_CODE) from None
    if confirm.get("type") != "confirm" or confirm.get("role") != other:
        raise CodeError("the key exchange failed: both sides claim the same role")
    verification = verification_string(shared)
    sink.emit(Verification(verification))
    return box, verification


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


async def _connected(transport: Transport, signaling: Signaling, sink: EventSink) -> None:
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


async def _abort_rendezvous(signaling: Signaling | None, exc: BaseException) -> None:
    """Before the data channel exists, tell the peer through the room why we stop."""
    if signaling is None or isinstance(exc, PeerError):
        return
    text = exc.message if isinstance(exc, P2pcpError) else "cancelled"
    reason = "no_path" if isinstance(exc, ConnectError) else "error"
    body = {"kind": "abort", "reason": reason, "message": text}
    with contextlib.suppress(Exception):
        await asyncio.wait_for(signaling.send(body), 1.0)


async def _close(transport: Transport | None, signaling: Signaling | None) -> None:
    closing = [c.close() for c in (signaling, transport) if c is not None]
    await asyncio.gather(*closing, return_exceptions=True)  # both may wait on a dead path


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
            reason = "error"
            if isinstance(exc, asyncio.CancelledError | Interrupted):
                reason = "cancelled"
            elif isinstance(exc, RefusedError) and isinstance(worker, FileReceiver):
                reason = "refused"  # a file in place differs from the sender's
            text = exc.message if isinstance(exc, P2pcpError) else ""
            await asyncio.wait_for(transport.send(p.encode(p.Abort(reason, text))), 1.0)
        await transport.linger(LINGER)


@dataclass
class _Conversation:
    """What one send or receive has opened, and the one way it ends on failure: tell the peer
    (through the room before the data channel exists, over it after), then close everything."""

    signaling: Signaling | None = None
    transport: Transport | None = None
    worker: FileSender | FileReceiver | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` beside the conversation; cancelled if it is not done when this ends."""
        task = asyncio.create_task(work)
        self.tasks.append(task)
        return task

    async def __aenter__(self) -> _Conversation:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        for task in self.tasks:
            task.cancel()
        try:
            if exc is not None:
                if self.worker is None:
                    await _abort_rendezvous(self.signaling, exc)
                await _say_goodbye(self.transport, self.worker, exc)
        finally:
            await _close(self.transport, self.signaling)
        if isinstance(exc, TimeoutError):
            raise ConnectError(
                "the peer did not finish setting up the connection in time"
            ) from None


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


@dataclass(frozen=True)
class ReceiveOptions:
    """What ``p2pcp receive`` was asked to do."""

    code: Code
    """The code typed by the user."""
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
    lan: LanHost | None = None
    if options.server is None:
        from .lan import LanHost  # zeroconf and a local server: 30 ms of start-up, LAN only

        lan = LanHost()
        await lan.start(options.code.nameplate if options.code is not None else None)
    try:
        await _send(options, sink, confirm, sources, notices, lan)
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
) -> None:
    async with _Conversation() as run:
        run.signaling = signaling = await Signaling.connect(
            lan.url if lan is not None else str(options.server), options.tls
        )
        plan = run.start(plan_ice(_ice_servers(signaling, options.ice_servers)))
        if options.code is None and lan is not None:
            options = dataclasses.replace(options, code=make_code(lan.nameplate))
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
            box, verification = await _handshake(signaling, code, SENDER, sink)
            run.transport = transport = Transport(await plan)
            await _send_sealed(
                signaling, box, {"type": "offer", "sdp": await transport.create_offer()}
            )
            answer = await _receive_sealed(signaling, box, "answer")
            await transport.accept_answer(answer["sdp"])
        await _connected(transport, signaling, sink)
        await _verified(confirm, verification)
        compress = options.compress and not transport.peer_on_this_host()
        if options.compress and not compress:
            log.debug("zstd: off, the peer is on this host (no network to save bytes on)")
        run.worker = sender = FileSender(transport, sources, sink, options.resume, compress)
        await sender.run()
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
        async with _Conversation() as run:
            await _receive(options, sink, decide, confirm, output, run)
    finally:
        output.close()


async def _receive(
    options: ReceiveOptions,
    sink: EventSink,
    decide: Decide,
    confirm: Confirm | None,
    output: Output,
    run: _Conversation,
) -> None:
    url = options.server
    if url is None:
        sink.emit(Searching(options.code.nameplate))
        from .lan import find_sender

        url = await find_sender(options.code.nameplate)
    run.signaling = signaling = await Signaling.connect(url, options.tls)
    plan = run.start(plan_ice(_ice_servers(signaling, options.ice_servers)))
    deadline = time.monotonic() + options.wait
    delay = JOIN_RETRY_FIRST
    while True:
        try:
            await signaling.join(options.code.nameplate)
            break
        except NoSender:
            if time.monotonic() + delay > deadline:
                raise
        if delay == JOIN_RETRY_FIRST:
            sink.emit(WaitingForSender(options.code.nameplate, options.wait))
        await signaling.close()
        await asyncio.sleep(delay)
        soon = time.monotonic() + options.wait - deadline < JOIN_SOON_SECONDS
        delay = min(delay * 2, JOIN_RETRY_SOON if soon else JOIN_RETRY_MAX)
        run.signaling = signaling = await Signaling.connect(url, options.tls)
    async with asyncio.timeout(RENDEZVOUS_TIMEOUT):
        box, verification = await _handshake(signaling, options.code, RECEIVER, sink)
        offer = await _receive_sealed(signaling, box, "offer")
        run.transport = transport = Transport(await plan)
        answer = await transport.accept_offer(offer["sdp"])
        await _send_sealed(signaling, box, {"type": "answer", "sdp": answer})
    await _connected(transport, signaling, sink)
    await _verified(confirm, verification)
    run.worker = receiver = FileReceiver(transport, output, sink, decide, options.resume)
    await receiver.run()
    await transport.wait_closed(CLOSE_WAIT)
    seconds = round(time.monotonic() - receiver.started, 3)
    moved, skipped = receiver.bytes_received, receiver.bytes_skipped
    sink.emit(Finished(receiver.peer.file_count, moved + skipped, seconds, moved, skipped))
