"""The file receiver over a connected data channel: checks the offer, compares what is here,
asks, then writes and verifies every file, driving the sans-I/O protocol (``protocol.py``) over
any :class:`~p2pcp.transfer.FrameChannel`. The sender and what both share are ``transfer.py``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from . import conflicts
from . import protocol as p
from .errors import Interrupted, LocalWriteError, PeerError, RefusedError, TransferError
from .escape import show
from .events import (
    Accepted,
    EventSink,
    FileDone,
    Notice,
    OfferEntry,
    OfferReceived,
    Resuming,
    TextReceived,
)
from .heartbeat import beating
from .names import hidden, lookalike
from .output import Output
from .patience import Patience, next_message
from .transfer import CREDIT_WINDOW, Decide, FrameChannel, _io, _Progress, _total
from .units import human_size
from .writers import ExistingFile, HeldLocal, SkippedFile, TextWriter, Writer


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
        self._if_taken = ""
        """For the other files: ``rename-if-taken`` under ``--rename`` (a file of the name that
        appears during the transfer, another transfer's, is kept: the new one goes beside it)."""
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
        if self.peer.version >= 2:  # a version 1 sender wants our hashes: it gets nothing
            held = await asyncio.to_thread(self.output.held, entries)
            if not self.resume:  # partials start over; identical complete files still count
                held = {i: h for i, h in held.items() if h.complete}
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
            self._if_taken = "rename-if-taken" if choice == "rename" else ""
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
                f"{conflicts.differ_here(differ)} from the sender's; nothing was written: run "
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
                placed = writer.placed_as
                digest = writer.finish(message.sha256)
                self._writer = None
                if writer.placed_as != placed:
                    self.sink.emit(
                        Notice(f"{show(placed)} appeared here during the transfer: saved as "
                               f"{show(writer.placed_as)}")
                    )  # fmt: skip
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
        conflict = self._conflict.get(self._next_file, self._if_taken)
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
