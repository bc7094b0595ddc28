"""Keep-alives inside the data channel (docs/protocol.md, "Keep-alives"): a side that has sent
nothing for a second sends a ``keepalive`` to a peer that announced them, and a peer that
announced them and has been silent for ``GONE_AFTER`` seconds is gone: the transfer fails at
once (exit 5) instead of waiting for ICE's consent checks (about 30 s)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

from . import protocol as p
from .errors import PeerError

CHECK_EVERY = 0.25


class Beating(Protocol):
    """What a heartbeat needs of the channel under a transfer."""

    last_sent: float
    """When this side last queued a frame (monotonic)."""
    last_heard: float
    """When the last frame from the peer arrived (monotonic)."""

    async def send(self, frame: bytes) -> None:
        """Send one frame."""

    def fail(self, exc: Exception) -> None:
        """End the transfer with ``exc``: every wait on the channel raises it."""


@contextlib.asynccontextmanager
async def beating(channel: Beating, peer: p.Peer) -> AsyncIterator[None]:
    """Keep-alives for the conversation run inside this block."""
    task = asyncio.ensure_future(beat(channel, peer))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def beat(channel: Beating, peer: p.Peer) -> None:
    """Send and watch keep-alives until the conversation ends (or the task is cancelled)."""
    while peer.state in (p.State.START, p.State.AWAIT_HELLO):
        await asyncio.sleep(CHECK_EVERY)  # the peer's hello says whether it takes them
    if not peer.peer_keepalive:
        return  # an earlier p2pcp, or the page before keep-alives: it gets none
    gone_after = max(p.GONE_AFTER, 3.0 * peer.peer_keepalive)
    sending: asyncio.Future[None] | None = None
    try:
        while not peer.finished:
            await asyncio.sleep(CHECK_EVERY)
            now = time.monotonic()
            if now - channel.last_heard > gone_after:
                channel.fail(
                    PeerError(f"the peer stopped answering (nothing for {gone_after:.0f} s)")
                )
                return
            # Sent apart, never awaited here: a send held up by a full buffer (a dead peer)
            # must not stop the watch.
            idle = now - channel.last_sent >= p.KEEPALIVE_INTERVAL
            if idle and (sending is None or sending.done()) and not peer.finished:
                sending = asyncio.ensure_future(channel.send(peer.send(p.KeepAlive())))
                sending.add_done_callback(_quiet)
    finally:
        if sending is not None and not sending.done():
            sending.cancel()


def _quiet(future: asyncio.Future[None]) -> None:
    """A failing channel is the transfer's to report, not the keep-alive's."""
    if not future.cancelled():
        future.exception()
