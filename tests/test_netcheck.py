"""The pure parts of the path probes (URL parsing, address ranges, NAT classification)
and the TURN choice against real UDP sockets on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aioice import stun

from p2pcp.doctor import classify
from p2pcp.netcheck import IcePlan, IceServer, ServerUrl, is_private, parse_url, plan_ice


def test_parse_url() -> None:
    assert parse_url("stun:example.org") == ServerUrl("stun", "example.org", 3478, "udp")
    assert parse_url("turn:1.2.3.4:80?transport=tcp") == ServerUrl("turn", "1.2.3.4", 80, "tcp")
    assert parse_url("turns:t.example:443") == ServerUrl("turns", "t.example", 443, "tcp")
    assert parse_url("turn:[2001:db8::1]:3478") == ServerUrl("turn", "2001:db8::1", 3478, "udp")
    for bad in ("http://x", "turn:", "turn:h:port", "turns:h?transport=udp", "turn:h?transport=x"):
        assert parse_url(bad) is None, bad


def test_private_ranges() -> None:
    private_addresses = ("10.1.0.2", "172.20.1.1", "192.168.1.5", "100.64.0.1", "169.254.1.1")
    for private in (*private_addresses, "fd00::1"):
        assert is_private(private), private
    for public in ("203.0.113.1", "198.51.100.7", "172.32.0.1", "2001:db8::1", "host.local"):
        assert not is_private(public), public


def test_classify_nat() -> None:
    mine = ["198.51.100.7"]
    assert classify(4000, mine, []) == "udp-blocked"
    assert classify(4000, mine, [("s1", ("198.51.100.7", 4000))]) == "none"
    same = [("s1", ("203.0.113.9", 6000)), ("s2", ("203.0.113.9", 6000))]
    assert classify(4000, mine, same) == "cone"
    differ = [("s1", ("203.0.113.9", 6000)), ("s2", ("203.0.113.9", 6001))]
    assert classify(4000, mine, differ) == "symmetric"
    assert classify(4000, mine, [("s1", ("203.0.113.9", 6000))]) == "unknown"


class _StunServer(asyncio.DatagramProtocol):
    """Answers STUN binding requests, as coturn would."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)  # type: ignore[attr-defined]


def _silent_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def _servers(port: int) -> list[IceServer]:
    return [
        IceServer(f"stun:127.0.0.1:{port}"),
        IceServer(f"turn:127.0.0.1:{port}?transport=udp", "u", "p"),
        IceServer(f"turn:127.0.0.1:{port}?transport=tcp", "u", "p"),
    ]


def test_when_udp_gets_no_answer_only_turn_over_tcp_is_used() -> None:
    sock, port = _silent_port()  # receives, never answers: UDP "blocked"
    with sock:
        plan = asyncio.run(plan_ice(_servers(port)))
    assert plan.udp_blocked
    assert [s.urls for s in plan.servers] == [f"turn:127.0.0.1:{port}?transport=tcp"]


def test_when_udp_is_answered_the_servers_stay_as_given() -> None:
    async def main() -> tuple[int, IcePlan]:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(_StunServer, local_addr=("127.0.0.1", 0))
        try:
            port = server.get_extra_info("sockname")[1]
            return port, await plan_ice(_servers(port))
        finally:
            server.close()

    port, plan = asyncio.run(main())
    assert not plan.udp_blocked and plan.servers == _servers(port)


@pytest.mark.parametrize(
    "servers",
    [
        [],
        [IceServer("stun:127.0.0.1:9")],
        [IceServer("turn:127.0.0.1:9?transport=udp", "u", "p")],
        [IceServer("turn:127.0.0.1:9?transport=tcp", "u", "p"), IceServer("turn:127.0.0.1:9")],
    ],
)
def test_no_probe_when_there_is_no_choice(servers: list[IceServer]) -> None:
    # Port 9 (discard) never answers: a probe would take PROBE_TIMEOUT and mark UDP blocked.
    plan = asyncio.run(plan_ice(servers))
    assert plan.servers == servers and not plan.udp_blocked
