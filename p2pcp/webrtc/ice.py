"""Two fixes to aioice's connectivity checks (RFC 8445), two shortcuts for data, a larger socket
buffer and a quicker end, as a subclass of aioice 0.13.0's ``Connection`` that ``install()``
substitutes where aiortc builds it.

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
   there cost 8 or 16 s, beyond the 20 s we give ICE. A plain RFC fix (docs/upstream/).

And two shortcuts for every data packet (what aioice does with them is unchanged):

3. **A DTLS datagram goes straight to the connection.** aioice parses every datagram as STUN
   first, and a DTLS one fails that parse with an exception. The first byte tells them apart
   (RFC 7983: STUN 0-3, DTLS 20-63).
4. **A datagram to the peer goes straight to its transport** (the socket, or on a relayed pair
   aioice's TURN transport, which wraps it), instead of through three coroutines (``send``,
   ``sendto``, ``send_data``) that end in the same call. On a relayed pair whose TURN channel
   is bound and fresh, the ChannelData message is written at once, as aioice's ``send_data``
   writes it, instead of in a task of its own for every datagram.

5. **A relayed pair gives way to a direct one.** aioice nominates aggressively (every check of
   the controlling side carries USE-CANDIDATE) and takes the *last* pair nominated as the
   selected one. With a TURN relay configured, the relayed pair's check often completes just
   after the direct one: seen in the 20 ms lab, one run in five went through coturn instead of
   straight to the peer (5.7 MB/s instead of 29). RFC 5245 section 8.1.1.2 says agents using
   aggressive nomination "MUST use the highest-priority nominated candidate pair": a pair
   nominated later replaces the selected one only if its priority is higher. And when the
   first nominated pair is relayed while a check of a higher-priority pair is still in
   progress, ``connect()`` gives that check RELAY_GRACE seconds before it cancels the rest
   (aioice cancels them the moment one pair is nominated). A plain RFC fix (docs/upstream/).

6. **Between two p2pcp peers, data goes out through our own TURN allocation** when the
   selected pair sends it to the peer's: coturn gives each relay socket a 64 KiB receive
   buffer (its UR_CLIENT_SOCK_BUF_SIZE) and its listening socket 2 MiB, so datagrams sent to
   the peer's relayed address overflow it in bursts of a large packet (in the relayed lab,
   thousands of drops in coturn's namespace a transfer, 13-19 MB/s), while the same datagrams
   sent to our allocation as ChannelData reach the listening socket (33-38 MB/s, no drops).
   ICE's priorities cannot say so: the two pairs mirror each other on the two sides. The
   peer takes data on any pair whose checks succeeded, as every ICE agent does; towards
   other stacks the selected pair stays.

And a quicker end: aioice's ``connect()`` paces its checks with a 20 ms sleep and looks at the
check list only after each sleep, so it returned up to 20 ms after ICE had completed (measured:
19 ms on one host). Ours wakes as soon as the check list completes or fails (docs/upstream/).

And one setting: every host socket asks for a 4 MiB receive buffer instead of aioice's 256 KiB.
With large packets on loopback, bursts of 64 KB datagrams overflowed 256 KiB: about 2500 of
the 4200 data packets of a 256 MiB transfer were dropped and sent again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from aioice import mdns, stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import (
    ICE_COMPLETED,
    ICE_FAILED,
    CandidatePair,
    Connection,
    StunProtocol,
    TransportPolicy,
    candidate_pair_priority,
    relayed_candidate,
    server_reflexive_candidate,
)
from aioice.turn import TurnTransport

from ..netcheck import is_private

APPLICATION_DATA = 23
"""First byte of a DTLS record carrying data."""
UDP_SEGMENT = 103
"""Linux <linux/udp.h>: a send of several datagrams of one size in one call (UDP GSO)."""
SEGMENTS_BYTES = 65000
"""Most bytes in one segmented send (the kernel takes up to 64 KiB)."""
CHANNEL_HEADER = struct.Struct("!HH")
"""A TURN ChannelData message's header: channel number, length (RFC 8656 section 12.4)."""
CONSENT_INTERVAL, CONSENT_FAILURES = (
    (float(_timing.split(",")[0]), int(_timing.split(",")[1]))
    if (_timing := os.environ.get("P2PCP_TEST_CONSENT"))
    else (5.0, 6)
)
"""Seconds between consent checks (RFC 7675) and the failures in a row that end the
connection: aioice's 5 s and 6, about 30 s in all. P2PCP_TEST_CONSENT="1,3" shortens them for
the tests that kill a peer (they would each wait half a minute); nothing else sets it."""
SOCKET_BUFFER = 4 * 1024 * 1024
"""Receive buffer asked for each host socket (the kernel caps it at net.core.rmem_max)."""
CHECK_PACING = 0.02
"""Seconds between starting two checks (aioice's Ta, RFC 8445 section 6.1.4.2)."""
RELAY_GRACE = 0.3
"""Seconds a relayed pair, nominated first, waits at most for a higher-priority check still in
progress (fix 5); as long as the checks took until then, and RELAY_GRACE_MIN at least: a direct
check started before the relayed one and its path is rarely the slower, so the wait is a small
price where only the relay works."""
RELAY_GRACE_MIN = 0.1


def relayed(pair: CandidatePair) -> bool:
    """Whether ``pair`` goes through a TURN relay (its local or its remote candidate is one)."""
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


def routable_pair(local: Candidate, remote: Candidate) -> bool:
    """aioice's pairing rule, minus public relay -> private address (see the module doc)."""
    if not local.can_pair_with(remote):
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


def _segment_groups(datagrams: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """``datagrams`` in runs that one segmented send takes: all of the first one's size but
    the last, which may be shorter, and at most SEGMENTS_BYTES in all; with where each starts."""
    groups: list[tuple[int, list[bytes]]] = []
    for index, datagram in enumerate(datagrams):
        if groups:
            group = groups[-1][1]
            size = len(group[0])
            if (
                len(group[-1]) == size
                and len(datagram) <= size
                and (len(group) + 1) * size <= SEGMENTS_BYTES
            ):
                group.append(datagram)
                continue
        groups.append((index, [datagram]))
    return groups


def _send_on_channel(transport: TurnTransport, data: bytes, addr: tuple[str, int]) -> bool:
    """Write ``data`` to ``addr`` as a ChannelData message, as aioice 0.13.0's ``send_data``
    does once the channel is bound and fresh; False, writing nothing, otherwise (aioice's own
    path then binds or refreshes the channel)."""
    inner: Any = transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
    channel = inner.peer_to_channel.get(addr)
    if (
        channel is None
        or addr in inner.peer_connect_waiters
        or time.time() > inner.channel_refresh_at[channel]
        or inner.transport.is_closing()
    ):
        return False
    inner._send(CHANNEL_HEADER.pack(channel, len(data)) + data)
    return True


class IceProtocol(StunProtocol):
    """aioice's socket protocol, handing DTLS datagrams on without a failed STUN parse, and
    sending the datagrams of one packet in one call where the kernel can (UDP GSO)."""

    _segments: socket.socket | None = None
    """A second descriptor of this protocol's UDP socket, for ``sendmsg`` (asyncio's socket
    object does not offer it)."""
    _no_segments = False

    def send_segments(self, datagrams: list[bytes], addr: tuple[str, int]) -> bool:
        """Send ``datagrams`` (all of one size but the last) to ``addr`` in as few calls as
        the kernel takes, each cut into datagrams again by the kernel or the network card;
        False, sending nothing, where that cannot be done (no socket of ours, a kernel without
        UDP GSO, asyncio still holding earlier datagrams back)."""
        sock = self._segment_socket()
        transport: Any = self.transport  # asyncio's datagram transports all have this
        if sock is None or transport.get_write_buffer_size():
            return False
        for start, group in _segment_groups(datagrams):
            option = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(group[0])))]
            try:
                sock.sendmsg([b"".join(group)], option, 0, addr)
            except BlockingIOError:
                for datagram in datagrams[start:]:  # asyncio queues them in order
                    self.transport.sendto(datagram, addr)
                return True
            except OSError:
                if start == 0:
                    self._no_segments = True  # this kernel or route has no UDP GSO
                    return False
                for datagram in datagrams[start:]:
                    self.transport.sendto(datagram, addr)
                return True
        return True

    def _segment_socket(self) -> socket.socket | None:
        if self._segments is None and not self._no_segments:
            own = self.transport.get_extra_info("socket")
            if own is None:  # a relayed candidate: aioice's TURN transport
                self._no_segments = True
                return None
            self._segments = socket.socket(own.family, socket.SOCK_DGRAM, 0, os.dup(own.fileno()))
        return self._segments

    def connection_lost(self, exc: Exception | None) -> None:
        if self._segments is not None:
            self._segments.close()
        super().connection_lost(exc)

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64:  # type: ignore[operator]
            self.receiver.data_received(data, self.local_candidate.component)  # type: ignore[arg-type]
            return
        super().datagram_received(data, addr)


class IceConnection(Connection):
    """aioice's ICE connection with the fixes and shortcuts of the module doc."""

    _checks_started: float | None = None
    """When ``connect()`` started the checks (monotonic seconds)."""
    own_relay_first = False
    """Whether to send through our own TURN allocation rather than to the peer's (fix 6): set
    by the transport once the peer's SDP says it is p2pcp."""
    _sending: tuple[CandidatePair | None, CandidatePair | None] = (None, None)
    """The selected pair, and the pair data goes out on for it (``sending_pair``)."""
    take_datagram: Callable[[bytes], bytes | None] | None = None
    """Set by the DTLS transport once packets travel as pieces (dtls.py): decrypts and joins
    a data datagram as it arrives, and returns what it completes for the receive queue."""

    def sending_pair(self) -> CandidatePair | None:
        """The pair data goes out on: the selected one, or where it sends to the peer's
        relayed address and ``own_relay_first`` is set, a pair from our own allocation whose
        check succeeded (fix 6)."""
        selected = self._nominated.get(1)
        if self._sending[0] is selected:
            return self._sending[1]
        chosen = selected
        if (
            selected is not None
            and self.own_relay_first
            and selected.remote_candidate.type == "relay"
            and selected.local_candidate.type != "relay"
        ):
            chosen = next(
                (
                    pair
                    for pair in self._check_list
                    if pair.component == 1
                    and pair.state == CandidatePair.State.SUCCEEDED
                    and pair.local_candidate.type == "relay"
                ),
                selected,
            )
        self._sending = (selected, chosen)
        return chosen

    def send_datagrams(self, datagrams: list[bytes]) -> bool:
        """Send the datagrams of one packet on the sending pair in as few calls as can be
        (``IceProtocol.send_segments``); False, sending nothing, where that cannot be done."""
        pair = self.sending_pair()
        if pair is None or not isinstance(pair.protocol, IceProtocol):
            return False
        return pair.protocol.send_segments(datagrams, pair.remote_addr)

    def data_received(self, data: bytes, component: int) -> None:
        take = self.take_datagram
        if take is not None and data[0] == APPLICATION_DATA:
            data = take(data)  # type: ignore[assignment]
            if data is None:
                return
        self._queue.put_nowait((data, component))

    def check_incoming(
        self, message: stun.Message, addr: tuple[str, int], protocol: StunProtocol
    ) -> None:
        """aioice's handling of an incoming check, then the immediate retransmit it leaves
        out."""
        pending = _pending_checks(protocol, addr)  # checks started before this one arrived
        super().check_incoming(message, addr, protocol)
        for request in pending:
            protocol.send_stun(request, addr)

    async def send(self, data: bytes) -> None:
        """A datagram on the first component, straight to the sending pair's transport."""
        pair = self.sending_pair()
        if pair is not None and isinstance(pair.protocol, IceProtocol):
            transport = pair.protocol.transport
            if not (
                isinstance(transport, TurnTransport)
                and _send_on_channel(transport, data, pair.remote_addr)
            ):
                transport.sendto(data, pair.remote_addr)
            return
        await super().send(data)

    def _pair_priority(self, pair: CandidatePair) -> int:
        return candidate_pair_priority(
            pair.local_candidate, pair.remote_candidate, self.ice_controlling
        )

    def check_complete(self, pair: CandidatePair) -> None:
        """aioice's handling of a finished check, keeping the highest-priority nominated pair
        selected (fix 5) instead of the last one."""
        selected = self._nominated.get(pair.component)
        super().check_complete(pair)
        now = self._nominated.get(pair.component)
        if (
            selected is not None
            and now is not selected
            and now is not None
            and self._pair_priority(selected) > self._pair_priority(now)
        ):
            self._nominated[pair.component] = selected

    def _better_pair_pending(self) -> bool:
        """Whether the selected pair is relayed while a check of a higher-priority pair that
        is not is still in progress."""
        selected = self._nominated.get(1)
        if selected is None or not relayed(selected):
            return False
        return any(
            pair.state == CandidatePair.State.IN_PROGRESS
            and not relayed(pair)
            and self._pair_priority(pair) > self._pair_priority(selected)
            for pair in self._check_list
        )

    async def wait_for_better_pair(self) -> None:
        """While the selected pair is relayed and a better one's check is in progress, wait
        for it, RELAY_GRACE seconds at most (fix 5)."""
        now = time.monotonic()
        took = now - (self._checks_started or now)
        deadline = now + min(RELAY_GRACE, max(RELAY_GRACE_MIN, took))
        while self._better_pair_pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _state_within(self, timeout: float) -> int | None:
        """The check list's final state if it arrives within ``timeout``, else None (and the
        state stays queued: a cancelled ``Queue.get`` takes nothing)."""
        getter = asyncio.ensure_future(self._check_list_state.get())
        done, _ = await asyncio.wait({getter}, timeout=timeout)
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def connect(self) -> None:
        """aioice 0.13.0's ``connect``, waking as soon as the check list ends instead of at
        the next 20 ms pacing step, and giving a direct pair's check in progress a moment
        when a relayed pair was nominated first (fix 5)."""
        if not self._local_candidates_end:
            raise ConnectionError("Local candidates gathering was not performed")
        if self.remote_username is None or self.remote_password is None:
            raise ConnectionError("Remote username or password is missing")
        self._checks_started = time.monotonic()
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
            result = await self._state_within(CHECK_PACING)
        if result is None:
            result = await self._check_list_state.get() if self._check_list else ICE_FAILED

        if result == ICE_COMPLETED:
            await self.wait_for_better_pair()
        for check in self._check_list:
            if check.task:
                check.task.cancel()
        if result != ICE_COMPLETED:
            raise ConnectionError("ICE negotiation failed")
        self._query_consent_task = asyncio.create_task(self.query_consent())

    async def query_consent(self) -> None:
        """aioice 0.13.0's consent checks (RFC 7675), with CONSENT_INTERVAL and
        CONSENT_FAILURES."""
        assert self.remote_password is not None
        failures = 0
        while True:
            await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
            for pair in self._nominated.values():
                request = self.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=self.remote_password.encode("utf8"),
                        retransmissions=0,
                    )
                    failures = 0
                except stun.TransactionError:
                    failures += 1
                if failures >= CONSENT_FAILURES:
                    self._query_consent_task = None
                    return await self.close()

    def _pair_remote_candidate(self, remote_candidate: Candidate) -> None:
        """aioice 0.13.0's pairing, with :func:`routable_pair` as the rule."""
        is_mdns = mdns.is_mdns_hostname(remote_candidate.host)
        for protocol in self._protocols:
            # Relaying to an mDNS candidate would reveal its address to the TURN
            # server (draft-ietf-mmusic-mdns-ice-candidates section 3.3.2).
            if is_mdns and protocol.local_candidate.type == "relay":
                continue
            if routable_pair(protocol.local_candidate, remote_candidate) and not self._find_pair(
                protocol, remote_candidate
            ):
                self._check_list.append(CandidatePair(protocol, remote_candidate))

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        """aioice 0.13.0's gathering, with :class:`IceProtocol` sockets of SOCKET_BUFFER."""
        candidates = []
        loop = asyncio.get_running_loop()

        host_protocols = []
        for address in addresses:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: IceProtocol(self), local_addr=(address, 0)
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            except OSError:
                continue
            host_protocols.append(protocol)

            candidate_address = protocol.transport.get_extra_info("sockname")
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", candidate_address[0]),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=candidate_address[0],
                port=candidate_address[1],
                type="host",
            )
            candidates.append(protocol.local_candidate)
        self._protocols += host_protocols

        tasks: list[asyncio.Task[tuple[Candidate, StunProtocol | None]]] = []
        if self.stun_server:
            for protocol in host_protocols:
                if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                    tasks.append(
                        asyncio.create_task(server_reflexive_candidate(protocol, self.stun_server))
                    )
        if self.turn_server:
            tasks.append(
                asyncio.create_task(
                    relayed_candidate(
                        component=component,
                        hide_related_address=(self._transport_policy == TransportPolicy.RELAY),
                        protocol_factory=lambda: IceProtocol(self),
                        turn_server=self.turn_server,
                        turn_username=self.turn_username,
                        turn_password=self.turn_password,
                        turn_ssl=self.turn_ssl,
                        turn_transport=self.turn_transport,
                    )
                )
            )
        if len(tasks):
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in done:
                if task.exception() is None:
                    candidate, relay_protocol = task.result()
                    candidates.append(candidate)
                    if relay_protocol is not None:
                        self._protocols.append(relay_protocol)
            for task in pending:
                task.cancel()

        return candidates
