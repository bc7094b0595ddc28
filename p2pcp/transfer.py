"""The transfer over a connected data channel: frames in and out and the file sender, driving
the sans-I/O protocol (``protocol.py``) over any :class:`FrameChannel`, so tests can run it over
an in-memory pair; the file receiver is ``receiving.py``'s. No rendezvous, no Typer, no rich.
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
    ConflictDeclined,
    P2pcpError,
    RefusedError,
    TransferError,
)
from .escape import show
from .events import (
    Accepted,
    AllSent,
    EventSink,
    FileDone,
    OfferReceived,
    Progress,
    Resuming,
)
from .heartbeat import Beating, beating
from .patience import Patience, next_message
from .sources import FileReader, Source
from .writers import hash_prefix

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


def _decline_error(message: p.Decline) -> P2pcpError:
    detail = show(message.message)[:300]
    if message.reason == "declined":
        return RefusedError("the receiver declined the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {detail}")
    if message.reason == "conflict":
        return ConflictDeclined("files of these names differ at the receiver's")
    return TransferError(f"the receiver refused the offer: {detail}")
