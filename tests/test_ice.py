"""p2pcp/webrtc/ice.py against real aioice objects: the pairing rule, and the immediate
retransmit of a check when the peer's check arrives (RFC 8445 section 7.3.1.4), over real UDP
sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from aioice.candidate import Candidate, candidate_priority
from aioice.ice import CandidatePair, Connection, StunProtocol

from p2pcp.webrtc import ice
from p2pcp.webrtc.ice import IceConnection, IceProtocol


def _candidate(kind: str, host: str, port: int = 5000) -> Candidate:
    return Candidate("1", 1, "udp", 100, host, port, kind)


def test_a_public_relay_is_never_paired_with_a_private_address() -> None:
    pairs = ice.routable_pair
    relay = _candidate("relay", "203.0.113.1")
    assert relay.can_pair_with(_candidate("host", "10.2.0.2"))  # aioice's own rule pairs them
    assert not pairs(relay, _candidate("host", "10.2.0.2"))
    assert pairs(relay, _candidate("srflx", "203.0.113.11"))
    assert pairs(relay, _candidate("host", "203.0.113.12"))  # a host without NAT
    # A relay inside a private network may reach private peers.
    assert pairs(_candidate("relay", "10.9.0.1"), _candidate("host", "10.2.0.2"))
    # Host candidates pair as before; IPv4 never with IPv6.
    assert pairs(_candidate("host", "10.1.0.2"), _candidate("host", "10.2.0.2"))
    assert not pairs(_candidate("host", "10.1.0.2"), _candidate("host", "fd00::2"))


def test_the_connection_pairs_by_that_rule() -> None:
    """Our connection's check list gets the relay -> public pair, not relay -> private; aioice's
    own gets both."""

    def pairs_made(kind: type[Connection]) -> list[str]:
        async def scenario() -> list[str]:  # aioice's objects need a running loop
            connection = kind(ice_controlling=True, components=1)
            relay = StunProtocol(connection)
            relay.local_candidate = _candidate("relay", "203.0.113.1")
            connection._protocols.append(relay)
            for host in ("10.2.0.2", "203.0.113.11"):
                connection._pair_remote_candidate(_candidate("srflx", host))
            return [pair.remote_candidate.host for pair in connection._check_list]

        return asyncio.run(scenario())

    assert pairs_made(IceConnection) == ["203.0.113.11"]
    assert pairs_made(Connection) == ["10.2.0.2", "203.0.113.11"]


async def _endpoint() -> tuple[socket.socket, Connection, Any, StunProtocol]:
    """A peer's UDP socket, and an aioice connection with one host candidate's protocol on a
    real UDP socket of its own (both on loopback)."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    connection = IceConnection(ice_controlling=True, components=1)
    connection.remote_username = "peer"
    connection.remote_password = "peer-password"
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: IceProtocol(connection), local_addr=("127.0.0.1", 0)
    )
    protocol.local_candidate = _candidate(
        "host", "127.0.0.1", transport.get_extra_info("sockname")[1]
    )
    return peer, connection, transport, protocol


def _requests_seen(handle_incoming: Callable[..., None]) -> list[bytes]:
    """Start a check towards a silent peer socket, deliver one check from that peer 0.1 s
    later through ``handle_incoming``, and return the transaction ids of the requests the peer
    received in the first 0.3 s (aioice's own first retransmit is due at 0.5 s)."""

    async def scenario() -> list[bytes]:
        peer, connection, transport, protocol = await _endpoint()
        remote = _candidate("host", "127.0.0.1", peer.getsockname()[1])
        connection._remote_candidates.append(remote)
        pair = CandidatePair(protocol, remote)
        pair.state = CandidatePair.State.WAITING
        connection._check_list.append(pair)
        connection.check_start_task(pair)
        seen: list[bytes] = []
        try:
            await asyncio.sleep(0.1)
            check = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            check.attributes["PRIORITY"] = 100
            handle_incoming(connection, check, peer.getsockname(), protocol)
            await asyncio.sleep(0.2)
            while True:
                try:
                    data = peer.recv(2048)
                except BlockingIOError:
                    break
                message = stun.parse_message(data)
                if message.message_class == stun.Class.REQUEST:
                    seen.append(message.transaction_id)
        finally:
            assert pair.task is not None
            pair.task.cancel()
            await asyncio.gather(pair.task, return_exceptions=True)
            transport.close()
            peer.close()
        return seen

    return asyncio.run(scenario())


def test_a_check_from_the_peer_retransmits_ours_at_once() -> None:
    seen = _requests_seen(IceConnection.check_incoming)
    assert len(seen) == 2 and seen[0] == seen[1], seen  # the same transaction, sent again


def test_without_the_fix_aioice_waits_for_its_backoff() -> None:
    original: Any = Connection.check_incoming
    assert len(_requests_seen(original)) == 1


def test_data_shortcuts_keep_stun_and_carry_dtls_over_real_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nominated direct pair: DTLS datagrams (first byte 20-63) reach the connection's queue
    without a STUN parse and go out straight to the socket, not through aioice's
    ``send_data``; a STUN request on the same socket is still answered as aioice answers it."""
    parsed: list[bytes] = []
    through_aioice: list[bytes] = []
    parse = stun.parse_message

    def counting_parse(data: bytes, *args: Any) -> stun.Message:
        parsed.append(data)
        return parse(data, *args)

    async def counting_send(self: StunProtocol, data: bytes, addr: tuple[str, int]) -> None:
        through_aioice.append(data)
        self.transport.sendto(data, addr)

    monkeypatch.setattr(stun, "parse_message", counting_parse)
    monkeypatch.setattr(StunProtocol, "send_data", counting_send)

    async def scenario() -> tuple[bytes, bytes, bool]:
        loop = asyncio.get_running_loop()
        peer, connection, transport, protocol = await _endpoint()
        port = protocol.local_candidate.port
        pair = CandidatePair(protocol, _candidate("host", "127.0.0.1", peer.getsockname()[1]))
        connection._nominated[1] = pair
        record = bytes([23, 0xFE, 0xFD]) + b"\x00" * 10 + b"dtls record"
        peer.sendto(record, ("127.0.0.1", port))
        got = await asyncio.wait_for(connection.recv(), 2)
        await connection.send(b"\x17\xfe\xfd outgoing")
        sent = await asyncio.wait_for(loop.sock_recv(peer, 2048), 2)
        assert parsed == [] and through_aioice == []  # neither went through aioice's paths
        # a Binding request from the peer is still a STUN request: aioice answers it
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{connection.local_username}:peer"
        request.attributes["PRIORITY"] = 1
        request.attributes["ICE-CONTROLLED"] = 1
        request.add_message_integrity(connection.local_password.encode())
        request.add_fingerprint()
        peer.sendto(bytes(request), ("127.0.0.1", port))
        answer = stun.parse_message(await asyncio.wait_for(loop.sock_recv(peer, 2048), 2))
        transport.close()
        peer.close()
        return got, sent, answer.transaction_id == request.transaction_id

    got, sent, answered = asyncio.run(scenario())
    assert parsed and all(data[0] < 4 for data in parsed)  # STUN parsed, DTLS never
    assert got.endswith(b"dtls record")
    assert sent == b"\x17\xfe\xfd outgoing"
    assert answered


def test_ice_sockets_ask_for_a_large_receive_buffer() -> None:
    """aioice's host sockets get SOCKET_BUFFER (as far as net.core.rmem_max lets them; Linux
    reports twice what was set), so a burst of 64 KB datagrams is not dropped."""
    allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())

    async def scenario() -> int:
        connection = IceConnection(ice_controlling=True, components=1)
        try:
            await connection.gather_candidates()
            protocol = connection._protocols[0]
            sock = protocol.transport.get_extra_info("socket")
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        finally:
            await connection.close()

    assert asyncio.run(scenario()) >= 2 * min(ice.SOCKET_BUFFER, allowed)
    assert ice.SOCKET_BUFFER > 262144  # aioice's own size


def test_connect_returns_when_the_checks_end_not_at_the_next_pacing_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two aioice connections on this machine's addresses, with the pacing step stretched to
    60 s: the first check succeeds at once, and connect() must then return on both sides
    instead of sleeping out the step (aioice's own loop looked only after each sleep)."""
    monkeypatch.setattr(ice, "CHECK_PACING", 60.0)

    async def scenario() -> None:
        a = IceConnection(ice_controlling=True, components=1)
        b = IceConnection(ice_controlling=False, components=1)
        try:
            await asyncio.gather(a.gather_candidates(), b.gather_candidates())
            for one, other in ((a, b), (b, a)):
                for candidate in other.local_candidates:
                    await one.add_remote_candidate(candidate)
                await one.add_remote_candidate(None)
                one.remote_username = other.local_username
                one.remote_password = other.local_password
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 20)
            await a.send(b"over the pair")
            assert await asyncio.wait_for(b.recv(), 5) == b"over the pair"
        finally:
            await asyncio.gather(a.close(), b.close())

    asyncio.run(scenario())


def _pairs(connection: Connection) -> tuple[CandidatePair, CandidatePair]:
    """A direct pair (host -> the peer's reflexive address) and a relayed one (our TURN
    allocation -> the same address) in ``connection``'s check list, both waiting."""
    pairs = []
    for kind, host in (("host", "10.1.0.2"), ("relay", "203.0.113.1")):
        protocol = StunProtocol(connection)
        protocol.local_candidate = Candidate(
            "1", 1, "udp", candidate_priority(1, kind), host, 5000, kind
        )
        connection._protocols.append(protocol)
        remote = Candidate(
            "2", 1, "udp", candidate_priority(1, "srflx"), "203.0.113.11", 6000, "srflx"
        )
        pair = CandidatePair(protocol, remote)
        pair.state = CandidatePair.State.IN_PROGRESS
        connection._check_list.append(pair)
        pairs.append(pair)
    return pairs[0], pairs[1]


def _succeed(connection: Connection, pair: CandidatePair) -> None:
    pair.state = CandidatePair.State.SUCCEEDED
    pair.nominated = True
    connection.check_complete(pair)


def test_a_relayed_pair_nominated_after_a_direct_one_does_not_replace_it() -> None:
    """Aggressive nomination nominates every pair whose check succeeds: the selected pair must
    be the highest-priority one (RFC 5245 section 8.1.1.2), not the last, which in the 20 ms
    lab sent one transfer in five through the TURN relay."""

    def selected(kind: type[Connection]) -> str:
        async def scenario() -> str:
            connection = kind(ice_controlling=False, components=1)
            direct, relay = _pairs(connection)
            _succeed(connection, direct)
            _succeed(connection, relay)
            return connection._nominated[1].local_candidate.type

        return asyncio.run(scenario())

    assert selected(IceConnection) == "host"
    assert selected(Connection) == "relay"  # aioice's own takes the last


def test_a_relayed_pair_nominated_first_waits_for_a_direct_check_in_progress() -> None:
    async def scenario() -> tuple[str, float, float]:
        connection = IceConnection(ice_controlling=True, components=1)
        direct, relay = _pairs(connection)
        _succeed(connection, relay)
        connection._checks_started = time.monotonic() - 1.0  # the checks took long: full grace
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, _succeed, connection, direct)
        start = time.monotonic()
        await connection.wait_for_better_pair()
        waited = time.monotonic() - start
        # With nothing better in progress, no wait at all.
        start = time.monotonic()
        await connection.wait_for_better_pair()
        return connection._nominated[1].local_candidate.type, waited, time.monotonic() - start

    kind, waited, again = asyncio.run(scenario())
    assert kind == "host"
    assert 0.08 < waited < ice.RELAY_GRACE, waited
    assert again < 0.05


@pytest.mark.parametrize(
    ("checks_took", "grace"),
    [(1.0, ice.RELAY_GRACE), (0.15, 0.15), (0.0, ice.RELAY_GRACE_MIN)],
)
def test_a_direct_check_that_never_completes_holds_a_relayed_pair_only_for_the_grace(
    checks_took: float, grace: float
) -> None:
    """The wait is as long as the checks took until the relayed pair was nominated, between
    RELAY_GRACE_MIN and RELAY_GRACE."""

    async def scenario() -> tuple[str, float]:
        connection = IceConnection(ice_controlling=True, components=1)
        _, relay = _pairs(connection)
        _succeed(connection, relay)
        connection._checks_started = time.monotonic() - checks_took
        start = time.monotonic()
        await connection.wait_for_better_pair()
        return connection._nominated[1].local_candidate.type, time.monotonic() - start

    kind, waited = asyncio.run(scenario())
    assert kind == "relay"
    assert grace <= waited < grace + 0.1, waited


def _relayed_both_ways(own_relay_first: bool) -> str:
    """The pair data goes out on when the selected pair sends to the peer's relayed address
    and a pair from our own allocation has succeeded too."""

    async def scenario() -> str:
        connection = IceConnection(ice_controlling=True, components=1)
        connection.own_relay_first = own_relay_first
        pairs = []
        for local, remote in (("host", "relay"), ("relay", "prflx")):
            protocol = StunProtocol(connection)
            protocol.local_candidate = Candidate(
                "1", 1, "udp", candidate_priority(1, local), "10.1.0.2", 5000, local
            )
            peer = Candidate("2", 1, "udp", candidate_priority(1, remote), "203.0.113.1", 6, remote)
            pair = CandidatePair(protocol, peer)
            pair.state = CandidatePair.State.IN_PROGRESS
            connection._check_list.append(pair)
            pairs.append(pair)
        _succeed(connection, pairs[0])  # nominated: our host -> the peer's relay
        pairs[1].state = CandidatePair.State.SUCCEEDED  # checked, not nominated
        chosen = connection.sending_pair()
        assert chosen is not None
        return f"{chosen.local_candidate.type} -> {chosen.remote_candidate.type}"

    return asyncio.run(scenario())


def test_between_p2pcp_peers_data_goes_out_through_our_own_relay() -> None:
    """coturn's relay sockets take 64 KiB, its listening socket 2 MiB: sent to the peer's
    relayed address, bursts of a large packet overflow it; between p2pcp peers data goes to our
    own allocation instead. Towards other stacks the selected pair stays."""
    assert _relayed_both_ways(own_relay_first=True) == "relay -> prflx"
    assert _relayed_both_ways(own_relay_first=False) == "host -> relay"
