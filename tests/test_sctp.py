"""The changes to aiortc's SCTP (p2pcp/sctp.py): the loss-recovery arithmetic, delayed SACKs
counted on a real transfer between two peers, and that they are in force for the aiortc version
they were written for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
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
    monkeypatch.setattr(sctp, "LARGE_PACKETS", False)  # standard 1200-byte packets here

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


def test_two_p2pcp_peers_switch_to_large_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's echo comes back between two peers with this module; DATA chunks then carry
    16000 bytes, and the data still arrives intact."""
    sizes: list[int] = []
    original = rtcsctptransport.RTCSctpTransport._send_chunk

    async def recording(self: Any, chunk: Any) -> None:
        if isinstance(chunk, rtcsctptransport.DataChunk):
            sizes.append(len(chunk.user_data))
        await original(self, chunk)

    monkeypatch.setattr(rtcsctptransport.RTCSctpTransport, "_send_chunk", recording)

    async def scenario() -> bool:
        a, b = transport.Transport(IcePlan([])), transport.Transport(IcePlan([]))
        try:
            await a.accept_answer(await b.accept_offer(await a.create_offer()))
            await asyncio.gather(a.wait_open(), b.wait_open())
            assert a._probe is not None
            switched = await a._probe
            payload = [bytes([i]) * 200_000 for i in range(20)]
            for frame in payload:
                await a.send(frame)
            for frame in payload:
                assert await b.recv() == frame
            return switched
        finally:
            await asyncio.gather(a.close(), b.close())

    assert asyncio.run(scenario()) is True
    assert max(sizes) == sctp.LARGE_DATA


def test_an_unmodified_aiortc_peer_keeps_the_standard_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Against plain aiortc (bench/plain_aiortc.py, another process, no p2pcp code), whose SDP
    does not say it takes large packets, no probe is sent at all (aiortc's 1500-byte buffer would
    cut the 16 KiB record, and its DTLS reads would stay misaligned after it). The standard size
    stays and the data arrives intact."""
    out = tmp_path / "received.bin"
    script = Path(__file__).parent.parent / "bench" / "plain_aiortc.py"
    peer = subprocess.Popen(
        [sys.executable, str(script), "receive", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    frames = [bytes([i]) * 65536 for i in range(64)]

    async def scenario() -> bool:
        assert peer.stdin is not None and peer.stdout is not None
        ours = transport.Transport(IcePlan([]))
        try:
            offer = await ours.create_offer()
            peer.stdin.write(json.dumps({"sdp": offer, "type": "offer"}) + "\n")
            peer.stdin.flush()
            line = await asyncio.get_running_loop().run_in_executor(None, peer.stdout.readline)
            await ours.accept_answer(json.loads(line)["sdp"])
            await ours.wait_open()
            probed = ours._probe is not None or ours.peer_takes_large
            for frame in frames:
                await ours.send(frame)
            await ours.send(b"")  # the peer's end marker; it answers with one of its own
            assert await ours.recv() == b""
            return probed
        finally:
            await ours.close()

    try:
        assert asyncio.run(scenario()) is False
        assert peer.wait(30) == 0
    finally:
        peer.kill()
    assert rtcsctptransport.USERDATA_MAX_LENGTH == sctp.PACKET
    digest = hashlib.sha256(b"".join(frames)).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
