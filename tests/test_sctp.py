"""The changes to aiortc's SCTP (p2pcp/webrtc/): the loss-recovery arithmetic, delayed SACKs
counted on a real transfer between two peers, and large packets between p2pcp peers, an earlier
p2pcp and an unmodified aiortc, each with its own packet size."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioice.ice import Connection
from aiortc import rtcsctptransport

from p2pcp import transport  # importing transport installs the subclasses
from p2pcp.netcheck import IcePlan
from p2pcp.webrtc import congestion, delayed_sack, dtls, large
from p2pcp.webrtc.association import STANDARD_DATA
from p2pcp.webrtc.congestion import INITIAL_SSTHRESH, RTT_SAMPLES, Westwood, heavy_loss
from p2pcp.webrtc.ice import IceConnection
from p2pcp.webrtc.sctp import SctpTransport


def _association(peer: transport.Transport) -> SctpTransport:
    association = peer._pc.sctp
    assert isinstance(association, SctpTransport)
    return association


def test_bandwidth_estimate_follows_the_acknowledged_rate() -> None:
    state = Westwood()
    assert state.window(STANDARD_DATA) is None
    state.on_rtt(0.1)
    state.on_rtt(0.12)
    assert state.rtt_min == 0.1 and list(state.recent) == [0.1, 0.12]
    now = 0.0
    state.on_acked(0, now)
    for _ in range(200):  # 1 MB per 100 ms for 20 s: 10 MB/s
        now += 0.1
        state.on_acked(1_000_000, now)
    assert abs(state.bandwidth - 10e6) < 1e3
    assert abs((state.window(STANDARD_DATA) or 0) - 1_000_000) <= 1  # bandwidth * minimum RTT
    for _ in range(40):  # the rate halves; the filter follows within a few dozen samples
        now += 0.1
        state.on_acked(500_000, now)
    assert 5e6 < state.bandwidth < 5.2e6


def test_window_is_at_least_four_packets() -> None:
    state = Westwood()
    state.on_rtt(0.001)
    state.on_acked(0, 0.0)
    state.on_acked(100, 1.0)
    assert state.window(STANDARD_DATA) == 4 * STANDARD_DATA


def test_queueing_is_a_round_trip_well_over_the_minimum() -> None:
    state = Westwood()
    assert not state.queueing()
    state.on_rtt(0.100)
    for _ in range(RTT_SAMPLES):
        state.on_rtt(0.129)
    assert not state.queueing()  # within 25% + 4 ms
    for _ in range(RTT_SAMPLES - 1):
        state.on_rtt(0.200)
    assert not state.queueing()  # one quick sample among the last few: no queue
    state.on_rtt(0.135)
    assert state.queueing()


def _window_after_loss(heavy: bool) -> int:
    """The congestion window after a SACK that starts fast recovery on a path without a
    queue (every round trip at its minimum), with a window of 100 packets and an estimate of
    40: ``heavy`` says whether the SACK found a run of packets lost."""
    association = SctpTransport.__new__(SctpTransport)  # only the window arithmetic runs
    association.westwood = Westwood()
    for _ in range(RTT_SAMPLES):
        association.westwood.on_rtt(0.01)
    association.westwood.bandwidth = 40 * STANDARD_DATA / 0.01
    association.data_size = STANDARD_DATA
    association._cwnd = association._ssthresh = 50 * STANDARD_DATA  # Reno's halving
    association._fast_recovery_exit = 1  # type: ignore[assignment]  # (aiortc declares None)
    association._react_to_loss(None, 100 * STANDARD_DATA, 1 << 31, 0, heavy)
    return association._cwnd


def test_random_loss_keeps_the_window_and_a_run_of_losses_shrinks_it() -> None:
    """A loss without a queue is taken as random (the window stays); a loss that takes a run
    of packets at once is a small buffer overflowing, and the window goes to the estimate,
    as on a queue (the relayed lab: coturn's relay socket dropped a third of the packets while
    the round trip stayed at its minimum)."""
    assert _window_after_loss(heavy=False) == 100 * STANDARD_DATA
    assert _window_after_loss(heavy=True) == 40 * STANDARD_DATA
    assert not heavy_loss(1, 5)  # one packet is never a run
    assert not heavy_loss(3, 100)  # three here and there in a large window: random
    assert heavy_loss(3, 20) and heavy_loss(15, 100)


def _other_stack(sdp: str) -> str:
    """``sdp`` without p2pcp's lines, as another WebRTC stack writes it."""
    for line in (transport.LARGE_ATTRIBUTE, transport.PIECES_LINE):
        sdp = sdp.replace(line, "a=x-other")
    return sdp


def _count_chunks(
    monkeypatch: pytest.MonkeyPatch, messages: int, p2pcp_peer: bool = True
) -> Counter[str]:
    """Send ``messages`` 16 KiB messages between two real peers over this machine's address;
    count the chunks the receiver's SCTP sent, by chunk type. ``p2pcp_peer=False``: the
    sender's SDP reaches the receiver without p2pcp's lines, as another stack's would."""
    sent: Counter[tuple[int, str]] = Counter()
    original = rtcsctptransport.RTCSctpTransport._send_chunk

    async def counting(self: Any, chunk: Any) -> None:
        sent[(id(self), type(chunk).__name__)] += 1
        await original(self, chunk)

    monkeypatch.setattr(rtcsctptransport.RTCSctpTransport, "_send_chunk", counting)
    monkeypatch.setattr(large, "LARGE_PACKETS", False)  # standard 1200-byte packets here

    async def scenario() -> Counter[str]:
        a, b = transport.Transport(IcePlan([])), transport.Transport(IcePlan([]))
        try:
            offer = await a.create_offer()
            if not p2pcp_peer:
                offer = _other_stack(offer)
            await a.accept_answer(await b.accept_offer(offer))
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


def test_another_stack_gets_a_sack_every_second_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Towards a sender that is not p2pcp (Chromium's waits for SACKs after a few packets) the
    receiver keeps acknowledging every second packet, not every 8 standard ones."""
    packets = 200 * 16384 // STANDARD_DATA
    receiver = _count_chunks(monkeypatch, 200, p2pcp_peer=False)
    assert receiver["SackChunk"] >= packets * 0.4, receiver


def test_a_p2pcp_peer_gets_a_sack_every_8_standard_packets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packets = 200 * 16384 // STANDARD_DATA  # data packets the transfer takes, at least
    receiver = _count_chunks(monkeypatch, 200)
    assert receiver["SackChunk"] <= packets * 0.25, receiver  # aiortc alone: one per packet


def test_without_delay_every_packet_is_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting above can tell: with SACK_EVERY = 1 it sees aiortc's one SACK a packet."""
    monkeypatch.setattr(delayed_sack, "SACK_EVERY", 1)
    packets = 200 * 16384 // STANDARD_DATA
    receiver = _count_chunks(monkeypatch, 200)
    assert receiver["SackChunk"] >= packets * 0.9, receiver


RECV_TIMEOUT = 20.0
"""A frame that does not arrive by then never will (a packet SCTP keeps resending is lost)."""


def _unchanged(sdp: str) -> str:
    return sdp


async def _pair(
    offer_edit: Callable[[str], str] = _unchanged, answer_edit: Callable[[str], str] = _unchanged
) -> tuple[transport.Transport, transport.Transport]:
    """Two real peers over this machine's address, connected and open (the edits change the
    SDPs on their way, as another version of the peer would write or read them)."""
    a, b = transport.Transport(IcePlan([])), transport.Transport(IcePlan([]))
    offer = offer_edit(await a.create_offer())
    await a.accept_answer(answer_edit(await b.accept_offer(offer)))
    await asyncio.gather(a.wait_open(), b.wait_open())
    return a, b


async def _carry(a: transport.Transport, b: transport.Transport, frames: list[bytes]) -> None:
    """Send ``frames`` from ``a``; each must arrive at ``b`` intact and in order."""
    for frame in frames:
        await a.send(frame)
    for frame in frames:
        assert await asyncio.wait_for(b.recv(), RECV_TIMEOUT) == frame


def _record_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[int], list[tuple[Connection, int]]]:
    """Record the user data size of every DATA chunk sent, and every datagram sent: by which
    ICE connection, and its size."""
    chunks: list[int] = []
    datagrams: list[tuple[Connection, int]] = []
    original_chunk = rtcsctptransport.RTCSctpTransport._send_chunk
    original_send = IceConnection.send

    async def chunk_recording(self: Any, chunk: Any) -> None:
        if isinstance(chunk, rtcsctptransport.DataChunk):
            chunks.append(len(chunk.user_data))
        await original_chunk(self, chunk)

    async def datagram_recording(self: IceConnection, data: bytes) -> None:
        datagrams.append((self, len(data)))
        await original_send(self, data)

    monkeypatch.setattr(rtcsctptransport.RTCSctpTransport, "_send_chunk", chunk_recording)
    monkeypatch.setattr(IceConnection, "send", datagram_recording)
    return chunks, datagrams


def test_two_p2pcp_peers_switch_to_large_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's echo comes back between two peers with this module; DATA chunks then carry
    64000 bytes, each packet goes out as several DTLS records in one datagram, frames are whole
    packets, and the data still arrives intact."""
    chunks, datagrams = _record_sends(monkeypatch)
    sender: list[Connection] = []

    async def scenario() -> bool:
        a, b = await _pair()
        sender.append(a._ice_connection())
        try:
            assert a._probe is not None
            switched = await a._probe
            assert a.max_message % large.LARGE_DATA == 0  # 256000: four packets a frame
            # the size belongs to that association: another one in this process starts
            # standard, and the peer's own sends are unchanged until its probe comes back
            other = transport.Transport(IcePlan([]))
            assert _association(other).data_size == STANDARD_DATA
            await other.close()
            assert _association(a).data_size == large.LARGE_DATA
            payload = [bytes([i]) * 200_000 for i in range(20)] + [os.urandom(a.max_message)]
            # packets of one record, of two records (one just over 16384 bytes), of four
            sizes = [1, 16356, 16357, 16400, 17000, 18400, 18500, 40000, 64000, 64001, 128001]
            payload += [os.urandom(size) for size in sizes]
            await _carry(a, b, payload)
            return switched
        finally:
            await asyncio.gather(a.close(), b.close())

    assert asyncio.run(scenario()) is True
    assert max(chunks) == large.LARGE_DATA
    # a 64028-byte SCTP packet takes four records: one datagram, not four
    largest = max(size for connection, size in datagrams if connection is sender[0])
    assert 4 * dtls.MAX_RECORD - dtls.MAX_RECORD // 2 < largest < large.needed_mtu(large.LARGE_DATA)


def test_an_earlier_p2pcp_peer_gets_packets_of_one_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer whose SDP says 16000 (p2pcp before multi-record packets: its DTLS reads one record
    per datagram) is sent 16000-byte chunks, each packet one record in one datagram. (That
    peer looks for its own line, with 16000, in our SDP: it finds none and probes nothing.)"""
    chunks, datagrams = _record_sends(monkeypatch)
    earlier = f"{transport.LARGE_LINE}{large.SINGLE_RECORD_DATA}"
    sender: list[Connection] = []

    async def scenario() -> bool:
        a, b = await _pair(
            lambda sdp: sdp.replace(transport.LARGE_ATTRIBUTE, "a=x-unknown"),
            lambda sdp: sdp.replace(transport.LARGE_ATTRIBUTE, earlier),
        )
        sender.append(a._ice_connection())
        try:
            assert a.peer_large_data == large.SINGLE_RECORD_DATA
            assert a._probe is not None
            switched = await a._probe
            payload = [bytes([i]) * 200_000 for i in range(10)]
            await _carry(a, b, payload)
            return switched
        finally:
            await asyncio.gather(a.close(), b.close())

    assert asyncio.run(scenario()) is True
    assert large.SINGLE_RECORD_DATA in chunks
    largest = max(size for connection, size in datagrams if connection is sender[0])
    assert large.SINGLE_RECORD_DATA < largest <= dtls.MAX_RECORD + dtls.RECORD_OVERHEAD


def test_a_datagram_with_a_damaged_record_is_dropped_and_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flipped byte in the second record of a four-record datagram: OpenSSL drops that
    record, the joined packet comes out short, its SCTP checksum fails, and SCTP sends the
    packet again. Nothing damaged reaches the receiver."""
    original_send = IceConnection.send
    sent_large: list[int] = []
    armed: list[Connection] = []

    async def damaging(self: IceConnection, data: bytes) -> None:
        if self in armed and len(data) > 3 * dtls.MAX_RECORD:
            sent_large.append(len(data))
            if len(sent_large) == 3:
                spoiled = bytearray(data)
                spoiled[dtls.MAX_RECORD + 100] ^= 0xFF  # inside the second record's ciphertext
                data = bytes(spoiled)
        await original_send(self, data)

    monkeypatch.setattr(IceConnection, "send", damaging)  # aiortc binds it when it connects

    async def scenario() -> None:
        a, b = await _pair()
        try:
            assert a._probe is not None and await a._probe
            armed.append(a._ice_connection())
            payload = [os.urandom(a.max_message) for _ in range(12)]
            await _carry(a, b, payload)
        finally:
            await asyncio.gather(a.close(), b.close())

    asyncio.run(scenario())
    assert len(sent_large) > 4 * 12  # 48 packets, and at least one sent again


def test_the_large_sizes_fit_the_peer_and_the_dtls_connection() -> None:
    both = [large.LARGE_DATA, large.SINGLE_RECORD_DATA]
    assert transport.large_sizes(large.LARGE_DATA) == both
    assert transport.large_sizes(large.SINGLE_RECORD_DATA) == [large.SINGLE_RECORD_DATA]
    assert transport.large_sizes(0) == []  # not a p2pcp peer
    assert transport.large_sizes(1200) == []
    # a DTLS connection whose records the receiver cannot split (not DTLS 1.2): one record only
    assert transport.large_sizes(large.LARGE_DATA, False) == [large.SINGLE_RECORD_DATA]
    # a 64 KB packet still fits a UDP datagram and the loopback MTU; across Ethernet it takes
    # 44 IPv4 fragments, a 16 KB one 11
    assert large.needed_mtu(large.LARGE_DATA) <= 65507
    assert large.fragments(large.LARGE_DATA, 65536) == 1
    assert large.fragments(large.LARGE_DATA, 1500) == 44
    assert large.fragments(large.SINGLE_RECORD_DATA, 1500) == 11
    assert large.fragments(STANDARD_DATA, 1500) == 1
    sdp = f"v=0\r\n{transport.LARGE_LINE}16000\r\nm=application 9 UDP/DTLS/SCTP\r\n"
    assert transport.advertised_large_data(sdp) == 16000
    assert transport.advertised_large_data("v=0\r\na=x-p2pcp-large-packets:lots\r\n") == 0


def test_an_unmodified_aiortc_peer_keeps_the_standard_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Against plain aiortc (bench/plain_aiortc.py, another process, no p2pcp code), whose SDP
    does not say it takes large packets, no probe is sent at all (aiortc's 1500-byte buffer would
    cut a 16 KiB record, and its DTLS reads would stay misaligned after it). The standard size
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
    sizes: list[int] = []

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
            probed = ours._probe is not None or bool(ours.peer_large_data)
            for frame in frames:
                await ours.send(frame)
            await ours.send(b"")  # the peer's end marker; it answers with one of its own
            assert await ours.recv() == b""
            sizes.append(_association(ours).data_size)
            return probed
        finally:
            await ours.close()

    try:
        assert asyncio.run(scenario()) is False
        assert peer.wait(30) == 0
    finally:
        peer.kill()
    assert sizes == [STANDARD_DATA]
    digest = hashlib.sha256(b"".join(frames)).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


def test_the_loss_per_datagram_counts_the_parity_piece() -> None:
    """At 1% loss per datagram, 7.5% of 44-datagram packets with a parity piece are lost (any
    two of 45): read without the parity, that looked like 0.17%, under the 0.7% past which the
    size steps down, and 64000-byte packets stayed on a path where 16000 did better."""
    n, p = 44, 0.01
    with_parity = 1 - (1 - p) ** (n + 1) - (n + 1) * p * (1 - p) ** n
    assert abs(large.datagram_loss(with_parity, n, parity=True) - p) < 1e-6
    assert large.datagram_loss(with_parity, n, parity=False) < 0.002
    without = 1 - (1 - p) ** n
    assert abs(large.datagram_loss(without, n, parity=False) - p) < 1e-9
    assert large.datagram_loss(0.0, n, parity=True) == 0.0
    assert large.datagram_loss(with_parity, n, True) > large.MAX_FRAME_LOSS[large.LARGE_DATA]


def _sent(first_tsn: int, count: int) -> Any:
    """An association (only its gap-block arithmetic runs) with ``count`` chunks in flight
    from ``first_tsn`` on."""
    association: Any = SctpTransport.__new__(SctpTransport)
    association._sent_queue = deque()
    association._flight_size = 0
    association.packets_lost = 0
    for index in range(count):
        data = rtcsctptransport.DataChunk()
        data.tsn = (first_tsn + index) % rtcsctptransport.SCTP_TSN_MODULO
        data._acked = data._abandoned = data._retransmit = False
        data._book_size, data._misses, data._sent_count = 1200, 0, 1
        data._expiry = data._max_retransmits = data._sent_time = None
        data._in_flight = True
        association._flight_size += 1200
        association._sent_queue.append(data)
    return association


def _state(association: Any) -> list[tuple[Any, ...]]:
    return [
        (c.tsn, c._acked, c._misses, c._retransmit, c._in_flight) for c in association._sent_queue
    ] + [association._flight_size, association.packets_lost]


def test_gap_blocks_found_by_place_do_what_aiortc_s_walk_does() -> None:
    """Random SACKs (several in a row, so chunks are struck three times) over windows that
    cross the TSN wrap: the fast path and aiortc's walk leave the same chunks acknowledged,
    struck and in flight, and return the same bytes and strikes."""
    rng = random.Random(7)
    for _ in range(300):
        count = rng.randint(1, 60)
        first = rng.choice([1, 5000, rtcsctptransport.SCTP_TSN_MODULO - 20])
        fast, walk = _sent(first, count), _sent(first, count)
        for _ in range(rng.randint(1, 5)):
            gaps: list[tuple[int, int]] = []
            position = rng.randint(1, 4)
            while not gaps or (position <= count + 2 and len(gaps) < 4):
                end = position + rng.randint(0, 6)
                gaps.append((position, end))
                position = end + rng.randint(2, 6)
            sack = rtcsctptransport.SackChunk()
            sack.cumulative_tsn = (first - 1) % rtcsctptransport.SCTP_TSN_MODULO
            sack.gaps = gaps
            assert fast._gap_blocks(sack) == walk._gap_blocks_walk(sack), gaps
            assert _state(fast) == _state(walk), gaps


def _receiver(last: int) -> Any:
    """An association whose cumulative received TSN is ``last`` (only the receive bookkeeping
    runs)."""
    association: Any = SctpTransport.__new__(SctpTransport)
    association._last_received_tsn = last
    association._sack_misordered = set()
    association._sack_duplicates = []
    return association


def _aiortc_gaps(association: Any) -> list[tuple[int, int]]:
    """The gap blocks aiortc 1.16.0's ``_send_sack`` builds (from its sorted raw TSNs)."""
    gaps: list[list[int]] = []
    gap_next = None
    for tsn in sorted(association._sack_misordered):
        pos = (tsn - association._last_received_tsn) % rtcsctptransport.SCTP_TSN_MODULO
        if tsn == gap_next:
            gaps[-1][1] = pos
        else:
            gaps.append([pos, pos])
        gap_next = rtcsctptransport.tsn_plus_one(tsn)
    return [(a, b) for a, b in gaps]


def test_received_tsns_and_gap_blocks_as_aiortc_keeps_them() -> None:
    """Random arrival orders with losses and duplicates: ours and aiortc's ``_mark_received``
    agree on every answer, the cumulative TSN, the duplicates and the gap blocks."""
    rng = random.Random(11)
    original = rtcsctptransport.RTCSctpTransport._mark_received
    for _ in range(200):
        start = rng.randint(0, 1 << 20)
        tsns = [start + 1 + i for i in range(rng.randint(1, 80))]
        arrivals = [t for t in tsns if rng.random() > 0.1]
        rng.shuffle(arrivals)
        arrivals += rng.sample(arrivals, min(len(arrivals), 5))  # a few twice
        ours, theirs = _receiver(start), _receiver(start)
        for tsn in arrivals:
            assert ours._mark_received(tsn) == original(theirs, tsn)
            assert ours._last_received_tsn == theirs._last_received_tsn
            assert ours._sack_misordered == theirs._sack_misordered
            assert ours._sack_duplicates == theirs._sack_duplicates
            assert ours._received_gaps() == _aiortc_gaps(theirs)


def test_the_cumulative_tsn_advances_across_the_wrap() -> None:
    """TSN 0 arriving before 2^32 - 1: ours advances past both; aiortc's, which sorts raw TSNs,
    stays behind for good."""
    top = rtcsctptransport.SCTP_TSN_MODULO - 1
    ours, theirs = _receiver(top - 1), _receiver(top - 1)
    original = rtcsctptransport.RTCSctpTransport._mark_received
    for tsn in (0, top, 1):
        ours._mark_received(tsn)
        original(theirs, tsn)
    assert ours._last_received_tsn == 1 and not ours._sack_misordered
    assert theirs._last_received_tsn == top - 1


def _size_after_window(lost: int, srtt: float) -> int:
    """The packet size after a window of 256 packets of 64000 bytes (44 datagrams and a parity
    piece each) of which ``lost`` were lost, on a path of round trip ``srtt``."""
    association: Any = SctpTransport.__new__(SctpTransport)  # only the size arithmetic runs
    association.data_size = large.LARGE_DATA
    association.sizes = [large.LARGE_DATA, large.SINGLE_RECORD_DATA, STANDARD_DATA]
    association.datagrams = {large.LARGE_DATA: 44}
    association.packets_sent, association.packets_lost, association.timeouts = 256, lost, 0
    association._window = (0, 0, 0, 0.0)
    association._srtt = srtt

    class Transport:
        _ssl = type("Records", (), {"parity": True})()

        def send_parity(self, on: bool) -> None:
            pass

    association._RTCSctpTransport__transport = Transport()  # behind a read-only property
    association._adapt_size()
    return int(association.data_size)


def test_a_long_path_steps_down_at_less_loss_than_a_lan() -> None:
    """At 0.5% per datagram (about 5 of 256 packets lost, 12-13 in a bad window) a LAN keeps
    64000-byte packets; on a 100 ms path a lost packet costs far more, and the same window
    steps down. At 1% (about 19 of 256) both step down."""
    assert _size_after_window(13, srtt=0.001) == large.LARGE_DATA
    assert _size_after_window(13, srtt=0.1) == large.SINGLE_RECORD_DATA
    assert _size_after_window(19, srtt=0.001) == large.SINGLE_RECORD_DATA
    assert _size_after_window(5, srtt=0.1) == large.LARGE_DATA


def test_slow_start_towards_a_p2pcp_peer_is_not_capped_by_its_receive_window() -> None:
    """aiortc takes the peer's advertised receive window (its 1 MiB) as the first slow-start
    threshold; towards a p2pcp peer that threshold is INITIAL_SSTHRESH on both sides (whichever
    sent the INIT), so slow start runs until a queue builds. Towards another stack (neither SDP
    has p2pcp's lines) aiortc's threshold stays."""

    async def thresholds(edit: Callable[[str], str]) -> tuple[int, int]:
        a, b = await _pair(edit, edit)
        try:
            return _association(a)._ssthresh, _association(b)._ssthresh
        finally:
            await asyncio.gather(a.close(), b.close())

    aiortc_window = 1024 * 1024  # aiortc 1.16.0 advertises 1 MiB (pinned)
    assert asyncio.run(thresholds(_unchanged)) == (INITIAL_SSTHRESH, INITIAL_SSTHRESH)
    assert asyncio.run(thresholds(_other_stack)) == (aiortc_window, aiortc_window)
    assert aiortc_window < INITIAL_SSTHRESH


def _cwnd_after_sack(packet: int, in_flight: int, acknowledged: int) -> int:
    """Slow start towards a p2pcp peer: ``in_flight`` packets of ``packet`` bytes filling the
    window, then a SACK of the first ``acknowledged``; the window after it (the arithmetic of
    a real association that has no connection, so nothing is sent)."""

    async def scenario() -> int:
        peer = transport.Transport(IcePlan([]))
        try:
            association = _association(peer)
            association.peer_is_p2pcp = True
            association.data_size = packet
            association._cwnd = in_flight * packet
            association._ssthresh = 1 << 31
            first = association._local_tsn
            for _ in range(in_flight):
                chunk = rtcsctptransport.DataChunk()
                chunk.tsn = association._local_tsn
                chunk.user_data = bytes(packet)
                chunk._abandoned = chunk._acked = chunk._retransmit = False
                chunk._in_flight = False
                chunk._book_size = packet
                chunk._expiry = chunk._max_retransmits = chunk._sent_time = None
                chunk._misses = 0
                chunk._sent_count = 1
                association._local_tsn = rtcsctptransport.tsn_plus_one(association._local_tsn)
                association._sent_queue.append(chunk)
                association._flight_size_increase(chunk)
            association._last_sacked_tsn = rtcsctptransport.tsn_minus_one(first)
            sack = rtcsctptransport.SackChunk()
            sack.cumulative_tsn = (first + acknowledged - 1) % rtcsctptransport.SCTP_TSN_MODULO
            await association._receive_sack_chunk(sack)
            return association._cwnd
        finally:
            await peer.close()

    return asyncio.run(scenario())


def test_slow_start_grows_by_what_a_p2pcp_sack_acknowledges() -> None:
    """A p2pcp receiver acknowledges two large packets per SACK (delayed_sack.SACK_EVERY), or 8
    standard ones; slow start grows the window by all of it (RFC 3465), so it doubles each
    round trip. It grew by one large packet per SACK (1.5 times a round trip: on the 20 ms lab
    slow start to 3 MB took 0.46 s instead of 0.24)."""
    for packet in (large.LARGE_DATA, large.SINGLE_RECORD_DATA):
        assert _cwnd_after_sack(packet, 8, 2) == 10 * packet
        assert _cwnd_after_sack(packet, 8, 3) == 10 * packet  # no more than one SACK's worth
    assert _cwnd_after_sack(STANDARD_DATA, 32, 8) == 40 * STANDARD_DATA
    assert delayed_sack.sack_covers(large.LARGE_DATA) == 2 * large.LARGE_DATA
    assert delayed_sack.sack_covers(STANDARD_DATA) == delayed_sack.SACK_BYTES


def test_the_first_packets_are_acknowledged_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone packet waits up to SACK_DELAY for a second one before it is acknowledged, except
    among the first QUICK_SACKS of an association: there the sender's window is a packet or
    two, and each round trip of slow start would wait out the delay. (SACK_DELAY is stretched
    to 5 s here, so a delayed SACK cannot pass for a quick one, and so is the shortest
    retransmission timeout: a resent packet's duplicate would be acknowledged at once.)"""
    monkeypatch.setattr(delayed_sack, "SACK_DELAY", 5.0)
    monkeypatch.setattr(congestion, "RTO_MIN", 5.0)

    async def acknowledged_within(a: transport.Transport, b: transport.Transport) -> bool:
        await a.send(b"lone")
        assert await asyncio.wait_for(b.recv(), RECV_TIMEOUT) == b"lone"
        for _ in range(100):  # 1 s: many round trips here
            if _association(a)._flight_size == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    async def scenario() -> tuple[bool, bool]:
        a, b = await _pair()
        try:
            if a._probe is not None:
                await a._probe
            first = await acknowledged_within(a, b)
            for _ in range(delayed_sack.QUICK_SACKS):
                await acknowledged_within(a, b)
            later = await acknowledged_within(a, b)
            return first, later
        finally:
            await asyncio.gather(a.close(), b.close())

    assert asyncio.run(scenario()) == (True, False)
