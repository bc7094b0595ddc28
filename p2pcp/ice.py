"""Two fixes to aioice's connectivity checks (RFC 8445), two shortcuts for data and a larger
socket buffer, for aioice 0.13 only.

This is the only module that changes aioice internals; ``install()`` puts all of them in force and
``tests/test_ice.py`` checks them against real aioice objects.

1. **A public relay is never paired with a private address.** aioice pairs every local candidate
   with every remote one. A relayed candidate on a public TURN server paired with the peer's
   private address makes the server send there: at best the checks are lost, and coturn 4.6
   without a route to that network (ENETUNREACH) drops the whole allocation, which took the one
   working path (relay to the peer's reflexive address) with it (see docs/networks.md).
2. **An incoming check retransmits our check on that pair at once** (RFC 8445 section 7.3.1.4:
   "if the state of that pair is In-Progress, the agent SHOULD generate an immediate
   retransmit"). aioice waits for its own backoff (0.5, 1, 2, 4, 8, 16 s). Between two cone
   NATs that matters: our first checks die at the peer's router until the peer's own check has
   opened it, and the peer's check arriving here is the sign that it has. Without the immediate
   retransmit, the pair waited for the next backoff step, and on a lossy link a lost packet
   there cost 8 or 16 s, beyond the 20 s we give ICE.

And two shortcuts for every data packet on a direct pair (what aioice does with them is
unchanged):

3. **A DTLS datagram goes straight to the connection.** aioice parses every datagram as STUN
   first, and a DTLS one fails that parse with an exception. The first byte tells them apart
   (RFC 7983: STUN 0-3, DTLS 20-63).
4. **A datagram to the peer goes straight to the socket** on a pair of two host or reflexive
   candidates, instead of through three coroutines (``send``, ``sendto``, ``send_data``).
   A relayed pair keeps aioice's path (the TURN client wraps the data).

And a quicker end: aioice's ``connect()`` paces its checks with a 20 ms sleep and looks at the
check list only after each sleep, so it returned up to 20 ms after ICE had completed (measured:
19 ms on one host, a fifth of the time from both commands started to the data channel open).
Ours wakes as soon as the check list completes or fails (``connect`` below).

And one setting: every ICE socket asks for a 4 MiB receive buffer instead of aioice's 256 KiB.
With large packets on loopback, bursts of 64 KB datagrams overflowed 256 KiB: about 2500 of
the 4200 data packets of a 256 MiB transfer were dropped and sent again (bench/transfer.py,
counted by ``ss -uam``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aioice
from aioice import stun, turn
from aioice.candidate import Candidate
from aioice.ice import ICE_COMPLETED, ICE_FAILED, Connection, StunProtocol

from .netcheck import is_private

log = logging.getLogger(__name__)

WRITTEN_FOR = "0.13."
SOCKET_BUFFER = 4 * 1024 * 1024
"""Receive buffer asked for each ICE socket (the kernel caps it at net.core.rmem_max)."""

_can_pair_with = Candidate.can_pair_with
_check_incoming = Connection.check_incoming
_datagram_received = StunProtocol.datagram_received
_send = Connection.send


def routable_pair(local: Candidate, remote: Candidate) -> bool:
    """aioice's pairing rule, minus public relay -> private address (see the module doc)."""
    if not _can_pair_with(local, remote):
        return False
    return not (local.type == "relay" and is_private(remote.host) and not is_private(local.host))


def _pending_checks(protocol: Any, addr: tuple[str, int]) -> list[stun.Message]:
    """The Binding requests ``protocol`` is still waiting on an answer to from ``addr``."""
    pending = []
    for transaction in getattr(protocol, "transactions", {}).values():
        request = getattr(transaction, "_Transaction__request", None)
        if (
            getattr(transaction, "_Transaction__addr", None) == addr
            and request is not None
            and request.message_method == stun.Method.BINDING
        ):
            pending.append(request)
    return pending


def check_incoming(
    self: Connection, message: stun.Message, addr: tuple[str, int], protocol: Any
) -> None:
    """aioice's handling of an incoming check, then the immediate retransmit it leaves out."""
    pending = _pending_checks(protocol, addr)  # checks started before this one arrived
    _check_incoming(self, message, addr, protocol)
    for request in pending:
        protocol.send_stun(request, addr)


def datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
    """DTLS (first byte 20-63, RFC 7983) to the connection at once; the rest as aioice does."""
    if data and 19 < data[0] < 64:  # type: ignore[operator]
        self.receiver.data_received(data, self.local_candidate.component)  # type: ignore[arg-type]
        return
    _datagram_received(self, data, addr)


async def send(self: Connection, data: bytes) -> None:
    """A datagram on the first component: on a direct pair, straight to its socket."""
    pair = self._nominated.get(1)
    if pair is not None and type(pair.protocol) is StunProtocol:
        pair.protocol.transport.sendto(data, pair.remote_addr)
        return
    await _send(self, data)


CHECK_PACING = 0.02
"""Seconds between starting two checks (aioice's Ta, RFC 8445 section 6.1.4.2)."""


async def _state_within(self: Connection, timeout: float) -> int | None:
    """The check list's final state if it arrives within ``timeout``, else None (and the
    state stays queued: a cancelled ``Queue.get`` takes nothing)."""
    getter = asyncio.ensure_future(self._check_list_state.get())
    done, _ = await asyncio.wait({getter}, timeout=timeout)
    if getter in done:
        return getter.result()
    getter.cancel()
    return None


async def connect(self: Connection) -> None:
    """aioice 0.13's ``Connection.connect``, waking as soon as the check list ends instead of
    at the next 20 ms pacing step."""
    if not self._local_candidates_end:
        raise ConnectionError("Local candidates gathering was not performed")
    if self.remote_username is None or self.remote_password is None:
        raise ConnectionError("Remote username or password is missing")
    for remote_candidate in self._remote_candidates:
        self._pair_remote_candidate(remote_candidate)
    self.sort_check_list()
    self._unfreeze_initial()
    for early_check in self._early_checks:
        self.check_incoming(*early_check)
    self._early_checks.clear()
    self._early_checks_done = True

    result = None
    while result is None and self._check_periodic():
        result = await _state_within(self, CHECK_PACING)
    if result is None:
        result = await self._check_list_state.get() if self._check_list else ICE_FAILED

    for check in self._check_list:
        if check.task:
            check.task.cancel()
    if result != ICE_COMPLETED:
        raise ConnectionError("ICE negotiation failed")
    self._query_consent_task = asyncio.create_task(self.query_consent())


def install() -> bool:
    """Put the fixes and shortcuts in force (once); False, changing nothing, on another aioice
    version."""
    if Candidate.can_pair_with is routable_pair:
        return True
    if not aioice.__version__.startswith(WRITTEN_FOR):
        log.warning("aioice %s: connectivity checks left as they are", aioice.__version__)
        return False
    Candidate.can_pair_with = routable_pair  # type: ignore[method-assign,assignment]
    Connection.check_incoming = check_incoming  # type: ignore[method-assign]
    StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
    Connection.send = send  # type: ignore[method-assign]
    Connection.connect = connect  # type: ignore[method-assign]
    turn.UDP_SOCKET_BUFFER_SIZE = SOCKET_BUFFER
    return True
