"""The transfer over a connected data channel: frames in and out, the file sender and the file
receiver, each driving the sans-I/O protocol (``protocol.py``) over any :class:`FrameChannel`, so
tests can run them over an in-memory pair. No rendezvous, no Typer, no rich.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol as p
from .errors import (
    Interrupted,
    LocalWriteError,
    P2pcpError,
    PeerError,
    RefusedError,
    TransferError,
)
from .escape import show
from .events import (
    Accepted,
    AllSent,
    EventSink,
    FileDone,
    Notice,
    OfferEntry,
    OfferReceived,
    Progress,
    Resuming,
    TextReceived,
)
from .heartbeat import Beating, beating
from .names import hidden, lookalike
from .output import Output
from .patience import Patience, next_message
from .sources import FileReader, Source
from .units import human_size
from .writers import ExistingFile, HeldLocal, TextWriter, Writer, hash_prefix

log = logging.getLogger(__name__)

CREDIT_WINDOW = 16 * 1024 * 1024
PROGRESS_INTERVAL = 0.2


class FrameChannel(Beating, Protocol):
    """What the transfer needs of a transport (keep-alives' needs included)."""

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
        self._patience = Patience()
        self.bytes_sent = 0
        self.bytes_skipped = 0
        self.started = time.monotonic()
        """When data started to move (the receiver accepted)."""
        self._starts: dict[int, tuple[int, Any]] = {}

    async def _send(self, message: p.Message) -> None:
        await self.channel.send(self.peer.send(message))
        self._patience.restart()

    async def _recv(self) -> p.Message:
        return await next_message(self.channel, self.peer, self._patience)

    @property
    def _data_sources(self) -> list[Source]:
        return [s for s in self.sources if s.entry.carries_data]

    async def run(self) -> None:
        """The whole conversation; returns once the receiver verified every file."""
        async with beating(self.channel, self.peer):
            await self._converse()

    async def _converse(self) -> None:
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
        """Version 2: send the hash of our prefix of each size the receiver holds; it says
        where data starts. Version 1: check its hashes against ours and say so ourselves."""
        sources = self._data_sources
        if self.peer.version >= 2:
            hashers = {}
            prefixes: list[tuple[int, int, str]] = []
            for held in have if self.resume else ():
                hasher = await asyncio.to_thread(hash_prefix, sources[held.index].local, held.size)
                if hasher is not None:
                    hashers[held.index] = hasher
                    prefixes.append((held.index, held.size, hasher.hexdigest()))
            await self._send(p.Resume(prefixes=tuple(prefixes)))
            if prefixes:
                start = await self._recv()
                assert isinstance(start, p.Start)
                for index, offset in start.offsets:
                    if offset and index in hashers:
                        self._starts[index] = (offset, hashers[index])
                        self.bytes_skipped += offset
            return
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
        self._patience = Patience()
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
        self._patience.restart()

    async def _recv(self) -> p.Message:
        return await next_message(self.channel, self.peer, self._patience)

    async def run(self) -> None:
        """The whole conversation; returns once every file is verified and in place."""
        try:
            async with beating(self.channel, self.peer):
                await self._run()
        except BaseException as exc:
            writer, self._writer = self._writer, None
            if writer is not None and writer.entry.size is not None and _keeps_partials(exc):
                writer.suspend()
            elif writer is not None:
                writer.abort()
            kept = self.bytes_received + self.bytes_skipped
            if kept and _keeps_partials(exc) and self.output.keeps_partials:
                self.sink.emit(
                    Notice(f"{human_size(kept)} kept: run the same command again to resume")
                )
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
            entries=tuple(
                OfferEntry(
                    e.path,
                    e.kind,
                    e.size,
                    executable=e.executable,
                    hidden=hidden(e.path),
                    lookalike=lookalike(e.path),
                )
                for e in entries
            ),
            free=self.output.free_bytes(),
            home_hidden=tuple(self.output.home_hidden(entries)),
        )
        self.sink.emit(offer)
        try:
            accepted = await self._decide(offer)
        except RefusedError:  # refused by a rule (hidden entries in home), with its own message
            await self._send(p.Decline("declined", DECLINES["declined"]))
            raise
        if not accepted:
            await self._send(p.Decline("declined", DECLINES["declined"]))
            raise RefusedError("declined; nothing was written")
        if self.resume:
            self._held = await asyncio.to_thread(self.output.held, entries)
        if self.peer.version < 2:
            self._held = {}  # a version 1 sender wants our hashes: it gets nothing to resume
        # Sizes only: the hashes of our files never leave this side.
        have = tuple(p.Held(i, h.size) for i, h in self._held.items())
        await self._send(p.Accept(CREDIT_WINDOW, have))
        verdict = await self._recv()
        assert isinstance(verdict, p.Resume)
        starts = dict(verdict.offsets)
        if verdict.prefixes:  # compared here, with our own hashes
            theirs = {index: (size, sha) for index, size, sha in verdict.prefixes}
            starts = {
                i: h.size if theirs.get(i) == (h.size, h.sha256) else 0
                for i, h in self._held.items()
            }
            await self._send(p.Start(tuple(starts.items())))
        self._apply(starts)
        self.sink.emit(Accepted())
        self.started = time.monotonic()
        total = _total(entries)
        if self.bytes_skipped:
            self.sink.emit(Resuming(self.bytes_skipped, total))
        await self._receive_files(_Progress(self.sink, total, done=self.bytes_skipped))

    async def _decide(self, offer: OfferReceived) -> bool:
        """Ask (the user, or the flags) while listening to the peer: the sender may only
        cancel now, and its cancel ends the question at once."""
        decision = asyncio.ensure_future(self.decide(offer))
        watch = asyncio.ensure_future(self._recv())
        try:
            await asyncio.wait({decision, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (decision, watch):
                if not task.done():
                    task.cancel()
            await asyncio.gather(decision, watch, return_exceptions=True)
        if watch.done() and not watch.cancelled():
            watch.result()  # the peer's abort (or the channel's failure) raises here
        return decision.result()

    def _apply(self, starts: dict[int, int]) -> None:
        """Keep what matched the sender's file; a complete file that differs is a conflict."""
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
        # The peer learns the reason code only: never a name that exists here, the output
        # directory's path or a number from this disk (the user sees the whole message).
        except RefusedError:
            await self._send(p.Decline("refused", DECLINES["refused"]))
            raise
        except LocalWriteError:
            await self._send(p.Decline("space", DECLINES["space"]))
            raise
        except TransferError:
            await self._send(p.Decline("unsafe", DECLINES["unsafe"]))
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


DECLINES = {
    "declined": "the receiver declined",
    "refused": "files in the receiver's output directory are in the way",
    "space": "the receiver cannot store the offer there",
    "unsafe": "the receiver found the offer unsafe",
}
"""What a decline tells the sender, per reason: nothing of the receiver's disk."""


def _decline_error(message: p.Decline) -> P2pcpError:
    detail = show(message.message)[:300]
    if message.reason == "declined":
        return RefusedError("the receiver declined the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {detail}")
    return TransferError(f"the receiver refused the offer: {detail}")
