"""Every wait on the peer has a deadline (docs/protocol.md, "Conversation"): how long, what
counts as progress that restarts the clock, and the read of the next message under them."""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Protocol

from . import protocol as p
from .errors import P2pcpError, PeerError, RefusedError
from .escape import show


class Receiving(Protocol):
    """What reading needs of a channel."""

    async def recv(self) -> bytes:
        """Receive one frame."""


SETUP_TIMEOUT = 30.0
"""Longest wait for the peer's hello and offer: programs send them at once."""
ANSWER_TIMEOUT = 900.0
"""Longest wait for the receiver's answer to the offer: a person deciding."""
IDLE_TIMEOUT = 120.0
"""Longest silence once data moves."""


def _test_timeouts() -> tuple[float, float, float]:
    """``P2PCP_TEST_TIMEOUTS="setup,answer,idle"`` shortens the three for tests of a stalling
    peer; nothing else reads it."""
    raw = os.environ.get("P2PCP_TEST_TIMEOUTS")
    if not raw:
        return SETUP_TIMEOUT, ANSWER_TIMEOUT, IDLE_TIMEOUT
    setup, answer, idle = (float(v) for v in raw.split(","))
    return setup, answer, idle


_SETUP_STATES = frozenset({p.State.START, p.State.AWAIT_HELLO, p.State.READY, p.State.AWAIT_OFFER})


class Patience:
    """Every wait on the peer has a deadline: :data:`SETUP_TIMEOUT` for its hello and offer,
    :data:`ANSWER_TIMEOUT` for the receiver's decision, :data:`IDLE_TIMEOUT` once data moves.
    The clock restarts when this side sends and when the peer makes progress; a frame that
    carries none (empty data, zero credit) does not restart it, so a peer cannot hold the other
    side forever with a trickle of nothing."""

    def __init__(self) -> None:
        self.setup, self.answer, self.idle = _test_timeouts()
        self.since = time.monotonic()

    def restart(self) -> None:
        self.since = time.monotonic()

    def limit(self, state: p.State) -> float:
        if state in _SETUP_STATES:
            return self.setup
        if state is p.State.AWAIT_ANSWER:
            return self.answer
        if state is p.State.DECIDING:
            return math.inf  # this side's user is deciding: the peer waits for us
        return self.idle

    def left(self, state: p.State) -> tuple[float, float]:
        """The limit for ``state`` and the seconds left of it."""
        limit = self.limit(state)
        return limit, self.since + limit - time.monotonic()


def moves_on(message: p.Message) -> bool:
    """Whether ``message`` moves the conversation on (for :class:`Patience`)."""
    if isinstance(message, p.Data):
        return len(message.data) > 0
    if isinstance(message, p.Credit):
        return message.bytes > 0
    return True


async def next_message(channel: Receiving, peer: p.Peer, patience: Patience) -> p.Message:
    """The next message from the peer, within :class:`Patience`; an abort becomes an error,
    and keep-alives are passed over (they move nothing on)."""
    while True:
        limit, left = patience.left(peer.state)
        try:
            async with asyncio.timeout(None if math.isinf(left) else max(left, 0.0)):
                frame = await channel.recv()
        except TimeoutError:
            raise PeerError(f"the peer sent nothing for {limit:.0f} s; giving up") from None
        message = peer.receive(frame)
        if isinstance(message, p.Abort):
            raise peer_abort(message)
        if isinstance(message, p.KeepAlive):
            continue
        if moves_on(message):
            patience.restart()
        return message


def peer_abort(message: p.Abort) -> P2pcpError:
    if message.reason == "cancelled":
        return PeerError("the peer cancelled the transfer")
    if message.reason == "refused":
        return RefusedError(f"the receiver refused: {show(message.message)[:300]}")
    return PeerError(f"the peer stopped the transfer: {show(message.message)[:300]}")
