"""What one send or receive has opened, and the one way it ends on failure: tell the peer why
(through the room before the data channel exists, over it after), then close everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import protocol as p
from .errors import (
    CodeError,
    ConnectError,
    Interrupted,
    LocalWriteError,
    P2pcpError,
    PeerError,
    RefusedError,
)
from .receiving import DECLINES, FileReceiver
from .rendezvous import abort_rendezvous
from .signaling import Signaling
from .transfer import FileSender
from .transport import Transport

T = TypeVar("T")

LINGER = 2.0
"""Seconds the data channel stays open after a last word, so that it arrives."""


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
            if isinstance(worker, FileReceiver) and isinstance(exc, RefusedError | LocalWriteError):
                # About this disk: the peer gets the reason, not our paths, names or numbers.
                text = DECLINES["refused"] if reason == "refused" else "the receiver cannot write"
            await asyncio.wait_for(transport.send(p.encode(p.Abort(reason, text))), 1.0)
        await transport.linger(LINGER)


@dataclass
class Conversation:
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

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        for task in self.tasks:
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: what failed there failed the conversation too
        try:
            if exc is not None:
                if self.worker is None:
                    await abort_rendezvous(self.signaling, exc)
                await _say_goodbye(self.transport, self.worker, exc)
        finally:
            await _close(self.transport, self.signaling)
        if isinstance(exc, TimeoutError):
            raise ConnectError(
                "the peer did not finish setting up the connection in time"
            ) from None
