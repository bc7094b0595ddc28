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

from . import conflicts
from . import protocol as p
from .errors import (
    ConflictDeclined,
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
from .writers import ExistingFile, HeldLocal, SkippedFile, TextWriter, Writer, hash_prefix

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


Decide = Callable[[OfferReceived], Awaitable[bool | str]]
"""Asks whether to accept an offer: False declines, True accepts, and one of
``conflicts.CHOICES`` accepts with that done to the files that differ."""
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
        self._skip: frozenset[int] = frozenset()
        """Files the receiver keeps its own copy of (version 3): not sent."""

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
        hashers: dict[int, Any] = {}
        if isinstance(answer, p.Holding):  # version 3: our prefixes before the receiver asks
            hashers, prefixes = await self._prefixes(answer.have)
            await self._send(p.Resume(prefixes=prefixes))
            answer = await self._recv()
        if isinstance(answer, p.Decline):
            raise _decline_error(answer)
        assert isinstance(answer, p.Accept)
        if self.peer.version >= 3:
            self._start_at(answer.offsets, hashers)
            self._skip = frozenset(answer.skip)
        else:
            await self._resume(answer.have)
        self.sink.emit(Accepted())
        self.started = time.monotonic()
        sources = self._data_sources
        total = _total([s.entry for i, s in enumerate(sources) if i not in self._skip])
        progress = _Progress(self.sink, total, done=self.bytes_skipped)
        if self.bytes_skipped:
            self.sink.emit(Resuming(self.bytes_skipped, total))
        for index, source in enumerate(sources):
            if index not in self._skip:
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
            hashers, prefixes = await self._prefixes(have)
            await self._send(p.Resume(prefixes=prefixes))
            if prefixes:
                start = await self._recv()
                assert isinstance(start, p.Start)
                self._start_at(start.offsets, hashers)
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

    async def _prefixes(
        self, have: tuple[p.Held, ...]
    ) -> tuple[dict[int, Any], tuple[tuple[int, int, str], ...]]:
        """The hash of our own prefix of each size the receiver holds (none without resume),
        with the hash states to continue from."""
        sources = self._data_sources
        hashers: dict[int, Any] = {}
        prefixes: list[tuple[int, int, str]] = []
        for held in have if self.resume else ():
            hasher = await asyncio.to_thread(hash_prefix, sources[held.index].local, held.size)
            if hasher is not None:
                hashers[held.index] = hasher
                prefixes.append((held.index, held.size, hasher.hexdigest()))
        return hashers, tuple(prefixes)

    def _start_at(self, offsets: tuple[tuple[int, int], ...], hashers: dict[int, Any]) -> None:
        """Where the receiver said each file's data starts (the protocol checked that we
        hashed those prefixes)."""
        for index, offset in offsets:
            if offset and index in hashers:
                self._starts[index] = (offset, hashers[index])
                self.bytes_skipped += offset

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
        self._conflict: dict[int, str] = {}
        """What becomes of the different file in place, per file index (``conflicts``)."""
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
        held: dict[int, HeldLocal] = {}
        if self.resume and self.peer.version >= 2:  # a version 1 sender wants our hashes
            held = await asyncio.to_thread(self.output.held, entries)
        matched: set[int] | None = None
        if self.peer.version >= 3 and held:  # sizes only: our files' hashes never leave here
            await self._send(p.Holding(tuple(p.Held(i, h.size) for i, h in held.items())))
            prefixes = await self._recv()
            assert isinstance(prefixes, p.Resume)
            matched = conflicts.matching(held, prefixes.prefixes)
            held = {i: h for i, h in held.items() if i in matched}
        elif self.peer.version >= 3:
            matched = set()  # nothing here to compare: no 'holding' needed
        marks = conflicts.statuses(
            self.peer.file_count, held, self.output.existing(entries), matched
        )
        offer = _offer_event(entries, marks, held, self.output)
        self.sink.emit(offer)
        choice = await self._choice(offer, marks)
        if self.peer.version >= 3:
            plan = conflicts.plan(marks, held, choice)
            self._held = {i: held[i] for i in plan.offsets}
            self._conflict = plan.conflict
            await self._send(
                p.Accept(CREDIT_WINDOW, offsets=tuple(plan.offsets.items()), skip=tuple(plan.skip))
            )
            self._apply(plan.offsets, choice)
            if plan.skip:
                self.sink.emit(Notice(f"{_files(len(plan.skip))} here kept as they are"))
        else:
            await self._accept_before_3(held, marks, choice)
        self.sink.emit(Accepted())
        self.started = time.monotonic()
        files = [e for e in entries if e.carries_data]
        total = _total([e for i, e in enumerate(files) if i not in self.peer.files.skip])
        if self.bytes_skipped:
            self.sink.emit(Resuming(self.bytes_skipped, total))
        await self._receive_files(_Progress(self.sink, total, done=self.bytes_skipped))

    async def _choice(self, offer: OfferReceived, marks: list[str]) -> str:
        """Ask; return what becomes of the files that differ (empty when none do). A refusal
        declines the offer, and a conflict nobody chose for leaves the sender waiting."""
        try:
            answer = await self._decide(offer)
        except RefusedError:  # refused by a rule (hidden entries in home), with its own message
            await self._send(p.Decline("declined", DECLINES["declined"]))
            raise
        if answer is False:
            await self._send(p.Decline("declined", DECLINES["declined"]))
            raise RefusedError("declined; nothing was written")
        choice = answer if isinstance(answer, str) else ""
        if not choice and self.output.overwrite:
            choice = "overwrite"
        differ = marks.count(conflicts.DIFFERS)
        if differ and not choice:
            await self._send(p.Decline("conflict", DECLINES["conflict"]))
            waits = " (the sender is still waiting)" if self.peer.version >= 3 else ""
            raise RefusedError(
                f"{_files(differ)} here differ from the sender's; nothing was written: run "
                f"again with --overwrite, --skip-existing or --rename{waits}"
            )
        return choice

    async def _accept_before_3(
        self, held: dict[int, HeldLocal], marks: list[str], choice: str
    ) -> None:
        """Versions 1 and 2: accept with the sizes held, then learn what matched."""
        self._held = held
        self._conflict = {i: choice for i, mark in enumerate(marks) if mark == conflicts.DIFFERS}
        await self._send(p.Accept(CREDIT_WINDOW, tuple(p.Held(i, h.size) for i, h in held.items())))
        verdict = await self._recv()
        assert isinstance(verdict, p.Resume)
        starts = dict(verdict.offsets)
        if verdict.prefixes:  # compared here, with our own hashes
            matched = conflicts.matching(held, verdict.prefixes)
            starts = {i: h.size if i in matched else 0 for i, h in held.items()}
            await self._send(p.Start(tuple(starts.items())))
        self._apply(starts, choice)

    async def _decide(self, offer: OfferReceived) -> bool | str:
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

    def _apply(self, starts: dict[int, int], choice: str) -> None:
        """Keep what matched the sender's file; a complete file that differs is a conflict,
        settled by ``choice``."""
        files = [e for e in self.peer.entries if e.carries_data]
        for index, held in list(self._held.items()):
            if starts.get(index, 0) == held.size:
                self.bytes_skipped += held.size
                continue
            del self._held[index]
            if held.complete and not choice:
                raise RefusedError(
                    f"{show(files[index].path)} already exists and differs from the sender's; "
                    "nothing was written: run again with --overwrite, --skip-existing or --rename"
                )
            if held.complete:
                self._conflict[index] = choice

    async def _check(self, entries: Sequence[p.Entry]) -> None:
        try:
            self.output.check(entries)
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
        while True:  # to the next entry with data, past the files the sender leaves out
            entry = entries[self._next_entry]
            left_out = entry.carries_data and self._next_file in self.peer.files.skip
            if entry.carries_data and not left_out:
                break
            self._next_entry += 1
            self._next_file += left_out
        self._make_dirs_until(self._next_entry)
        held = self._held.get(self._next_file)
        conflict = self._conflict.get(self._next_file, "")
        self._next_entry += 1
        self._next_file += 1
        writer: Writer
        if entry.kind == "text":
            writer = TextWriter(entry)
        elif held is not None and held.complete:
            writer = ExistingFile(entry, held)
        elif conflict == "skip":  # a sender before version 3 sends it anyway
            writer = SkippedFile(entry)
        else:
            writer = self.output.open_file(entry, held, conflict)
            if writer.placed_as != entry.path:
                self.sink.emit(
                    Notice(f"{show(entry.path)} differs from the one here: saved as "
                           f"{show(writer.placed_as)}")
                )  # fmt: skip
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
    "conflict": "files of these names differ at the receiver's; it may try again",
    "space": "the receiver cannot store the offer there",
    "unsafe": "the receiver found the offer unsafe",
}
"""What a decline tells the sender, per reason: nothing of the receiver's disk."""


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _offer_event(
    entries: Sequence[p.Entry], marks: list[str], held: dict[int, HeldLocal], output: Output
) -> OfferReceived:
    """The offer as shown to the receiver, each file with its mark."""
    shown = []
    index = 0
    for e in entries:
        status, here = "", 0
        if e.carries_data and e.kind == "file":
            status = marks[index]
            kept = held.get(index)
            here = kept.size if kept is not None and status != conflicts.DIFFERS else 0
        index += e.carries_data
        shown.append(
            OfferEntry(
                e.path,
                e.kind,
                e.size,
                executable=e.executable,
                hidden=hidden(e.path),
                lookalike=lookalike(e.path),
                status=status,
                here=here,
            )
        )
    return OfferReceived(
        files=index,
        bytes=sum(e.size or 0 for e in entries if e.carries_data),
        entries=tuple(shown),
        free=output.free_bytes(),
        home_hidden=tuple(output.home_hidden(entries)),
    )


def _decline_error(message: p.Decline) -> P2pcpError:
    detail = show(message.message)[:300]
    if message.reason == "declined":
        return RefusedError("the receiver declined the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {detail}")
    if message.reason == "conflict":
        return ConflictDeclined("files of these names differ at the receiver's")
    return TransferError(f"the receiver refused the offer: {detail}")
