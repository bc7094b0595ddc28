"""The changes to aiortc's SCTP (p2pcp/sctp.py): the loss-recovery arithmetic, delayed SACKs
counted on a real transfer between two peers, and that they are in force for the aiortc version
they were written for."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiortc
import pytest
from aiortc import rtcsctptransport

from p2pcp import sctp, transport  # noqa: F401  (importing transport installs it)
from p2pcp.netcheck import IcePlan


def test_it_is_in_force_for_the_pinned_aiortc() -> None:
    assert aiortc.__version__ == sctp.WRITTEN_FOR
    assert rtcsctptransport.RTCSctpTransport._receive_sack_chunk is sctp._receive_sack_chunk
    assert rtcsctptransport.RTCSctpTransport._t3_expired is sctp._t3_expired
    assert rtcsctptransport.RTCSctpTransport._send_sack is sctp._send_sack
    assert rtcsctptransport.SCTP_RTO_MIN == sctp.RTO_MIN
    assert sctp.install() is True  # idempotent


def test_bandwidth_estimate_follows_the_acknowledged_rate() -> None:
    state = sctp.Westwood()
    assert state.window() is None
    state.on_rtt(0.1)
    state.on_rtt(0.12)
    assert state.rtt_min == 0.1 and list(state.recent) == [0.1, 0.12]
    now = 0.0
    state.on_acked(0, now)
    for _ in range(200):  # 1 MB per 100 ms for 20 s: 10 MB/s
        now += 0.1
        state.on_acked(1_000_000, now)
    assert abs(state.bandwidth - 10e6) < 1e3
    assert abs((state.window() or 0) - 1_000_000) <= 1  # bandwidth * minimum RTT
    for _ in range(40):  # the rate halves; the filter follows within a few dozen samples
        now += 0.1
        state.on_acked(500_000, now)
    assert 5e6 < state.bandwidth < 5.2e6


def test_window_is_at_least_four_packets() -> None:
    state = sctp.Westwood()
    state.on_rtt(0.001)
    state.on_acked(0, 0.0)
    state.on_acked(100, 1.0)
    assert state.window() == 4 * sctp.PACKET


def test_queueing_is_a_round_trip_well_over_the_minimum() -> None:
    state = sctp.Westwood()
    assert not state.queueing()
    state.on_rtt(0.100)
    for _ in range(sctp.RTT_SAMPLES):
        state.on_rtt(0.129)
    assert not state.queueing()  # within 25% + 4 ms
    for _ in range(sctp.RTT_SAMPLES - 1):
        state.on_rtt(0.200)
    assert not state.queueing()  # one quick sample among the last few: no queue
    state.on_rtt(0.135)
    assert state.queueing()


def _count_chunks(monkeypatch: pytest.MonkeyPatch, messages: int) -> Counter[tuple[int, str]]:
    """Send ``messages`` 16 KiB messages between two real peers over this machine's address;
    count the chunks each side's SCTP sent, by side and chunk type."""
    sent: Counter[tuple[int, str]] = Counter()
    original = rtcsctptransport.RTCSctpTransport._send_chunk

    async def counting(self: Any, chunk: Any) -> None:
        sent[(id(self), type(chunk).__name__)] += 1
        await original(self, chunk)

    monkeypatch.setattr(rtcsctptransport.RTCSctpTransport, "_send_chunk", counting)

    async def scenario() -> Counter[tuple[int, str]]:
        a, b = transport.Transport(IcePlan([])), transport.Transport(IcePlan([]))
        try:
            await a.accept_answer(await b.accept_offer(await a.create_offer()))
            await asyncio.gather(a.wait_open(), b.wait_open())
            for _ in range(messages):
                await a.send(b"x" * 16384)
            for _ in range(messages):
                assert len(await b.recv()) == 16384
            receiver = id(b._pc.sctp)
            return Counter({kind: n for (side, kind), n in sent.items() if side == receiver})
        finally:
            await asyncio.gather(a.close(), b.close())

    return asyncio.run(scenario())


def test_the_receiver_acknowledges_every_second_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    packets = 200 * 16384 // sctp.PACKET  # data packets the transfer takes, at least
    receiver = _count_chunks(monkeypatch, 200)
    assert receiver["SackChunk"] <= packets * 0.7, receiver  # aiortc alone: one per packet


def test_without_delay_every_packet_is_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting above can tell: with SACK_EVERY = 1 it sees aiortc's one SACK a packet."""
    monkeypatch.setattr(sctp, "SACK_EVERY", 1)
    packets = 200 * 16384 // sctp.PACKET
    receiver = _count_chunks(monkeypatch, 200)
    assert receiver["SackChunk"] >= packets * 0.9, receiver
