"""Every wait on the peer has a deadline (docs/protocol.md, "Conversation"): how long, and
what counts as progress that restarts the clock. Pure: the transfer workers consult it."""

from __future__ import annotations

import math
import os
import time

from . import protocol as p

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
