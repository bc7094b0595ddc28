"""Congestion control for aiortc's SCTP that survives random loss (Westwood+ and a delay check).

aiortc's SCTP halves its congestion window on every loss event, as RFC 4960 says (Reno). Its
throughput then follows the Reno law, about ``1.22 * 1200 bytes / (RTT * sqrt(loss))``: on a
link that loses 1% of packets at random with 100 ms round trips, 0.15 MB/s, however fast the link.
TCP on the same machine (BBR, or CUBIC with SACK) moves tens of MB/s there.

Westwood+ (Mascolo et al., 2001; Linux ``tcp_westwood``) keeps everything else and changes only
the reaction to loss: the sender estimates the bandwidth it gets from the rate at which the peer
acknowledges data (filtered once per round trip), and after a loss sets the slow-start threshold
and, if larger, the window to ``bandwidth * minimum RTT``: the window that fills the path without
a queue. A random loss on an empty path then costs almost nothing; on a congested path (a queue
builds, the RTT grows over its minimum) the window shrinks to drain the queue, as Reno's would.
Retransmission timeouts still reset the window to one packet, but come sooner: the shortest
timeout is 200 ms (Linux TCP's) instead of RFC 4960's 1 s.

Slow start also ends when the round trip grows over its minimum (a queue is building, as in
HyStart++, RFC 9406), and a loss without such a queue is taken as random: the window is kept.
Unless it is heavy: a loss event that takes a good share of the packets in flight at once is a
buffer that overflowed, and a small buffer (a TURN relay's socket, the peer's own) overflows
before any queueing delay shows.

The methods below are aiortc 1.16.0's, copied (``pins.py`` checks their originals), with the
association's packet size instead of aiortc's constant and the Westwood+ reaction where Reno's
was.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiortc import rtcsctptransport as sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.utils import uint32_gt, uint32_gte

from .association import STANDARD_DATA, SizedAssociation
from .delayed_sack import sack_covers

FILTER = 1 / 8
"""Weight of a new bandwidth sample (Westwood+ uses 1/8, once per round trip)."""
MIN_INTERVAL = 0.01
"""Shortest bandwidth sampling interval (s), for round trips shorter than that."""
QUEUE_FACTOR = 1.25
QUEUE_SLACK = 0.004
"""A round trip over ``rtt_min * QUEUE_FACTOR + QUEUE_SLACK`` means a queue is building
(HyStart++, RFC 9406, uses the same kind of threshold to leave slow start)."""
RTT_SAMPLES = 8
UNBOUNDED = 1 << 31
BURST_BYTES = 16 * STANDARD_DATA
"""New data let out at once after a SACK, at least (aiortc: 4 packets, RFC 4960's Max.Burst):
a SACK from a p2pcp peer may acknowledge 8 standard packets (delayed_sack.SACK_BYTES), and the
window must be able to grow past that. Towards other stacks aiortc's 4 packets stay."""
HEAVY_LOSS = 1 / 8
"""A SACK that finds more than this share of the packets in flight lost (and at least
HEAVY_LOSS_PACKETS) reports congestion, whatever the round trip says. Random loss takes
packets here and there; an overflowing buffer takes a run of them. In the relayed lab (no rate
limit on the links) coturn's relay socket and the receiver's dropped a third of the 64 KB
packets while the round trip stayed at its minimum, and the window, kept for random loss,
went on overflowing them (10-13 MB/s)."""
HEAVY_LOSS_PACKETS = 3


def heavy_loss(struck: int, in_flight: int) -> bool:
    """Whether ``struck`` packets found lost by one SACK, of ``in_flight`` outstanding, are a
    run (congestion) rather than random loss (HEAVY_LOSS)."""
    return struck >= HEAVY_LOSS_PACKETS and struck > in_flight * HEAVY_LOSS


INITIAL_SSTHRESH = UNBOUNDED
"""Slow-start threshold at the start of an association with a p2pcp peer. aiortc starts from
the peer's advertised receive window (1 MiB from aiortc, RFC 4960 section 7.2.1's example),
though it never limits its sending by that window. On the 20 ms lab that ended slow start at
1 MiB, below the path's 1.7 MB of bandwidth times delay, and congestion avoidance (one packet a
round trip) took most of a 64 MiB transfer to climb the rest. RFC 4960 lets the initial value
be arbitrarily high (as Linux TCP's is); slow start still ends when a queue builds (the round
trip check) or at a loss. Towards other stacks aiortc's value stays."""

RTO_MIN = 0.2
"""Shortest retransmission timeout (s). RFC 4960 says 1 s, which on a lossy link stalls the
transfer a full second for each lost retransmission; Linux TCP uses 200 ms."""


class Westwood:
    """The bandwidth and minimum round trip estimates of one association."""

    def __init__(self) -> None:
        self.bandwidth = 0.0
        """Filtered acknowledged bytes per second."""
        self.rtt_min: float | None = None
        self.recent: deque[float] = deque(maxlen=RTT_SAMPLES)
        """The last few round trip samples."""
        self._acked = 0
        self._since: float | None = None

    def on_rtt(self, rtt: float) -> None:
        self.recent.append(rtt)
        if rtt > 0 and (self.rtt_min is None or rtt < self.rtt_min):
            self.rtt_min = rtt

    def queueing(self) -> bool:
        """Whether even the shortest of the last few round trips took noticeably longer than
        the shortest ever: a queue is building on the path (the congestion signal that random
        loss does not give). Taking the shortest of several, as HyStart++ does per round,
        ignores the odd slow sample of a busy CPU."""
        if self.rtt_min is None or len(self.recent) < RTT_SAMPLES:
            return False
        return min(self.recent) > self.rtt_min * QUEUE_FACTOR + QUEUE_SLACK

    def on_acked(self, count: int, now: float) -> None:
        """``count`` bytes newly acknowledged at ``now``."""
        if self._since is None:
            self._since = now
            return
        self._acked += count
        elapsed = now - self._since
        if elapsed >= max(self.rtt_min or 0.0, MIN_INTERVAL):
            sample = self._acked / elapsed
            if self.bandwidth:
                self.bandwidth += FILTER * (sample - self.bandwidth)
            else:
                self.bandwidth = sample
            self._acked = 0
            self._since = now

    def window(self, packet: int) -> int | None:
        """``bandwidth * minimum RTT`` in bytes (None until both are known), at least 4
        packets of ``packet`` bytes."""
        if not self.bandwidth or self.rtt_min is None:
            return None
        return max(int(self.bandwidth * self.rtt_min), 4 * packet)


class LossRecovery(SizedAssociation):
    """aiortc's SCTP with Westwood+ instead of Reno's reaction to loss."""

    westwood: Westwood

    def __init__(self, transport: RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        self.westwood = Westwood()

    async def _receive_chunk(self, chunk: sctp.Chunk) -> None:
        await super()._receive_chunk(chunk)
        if self.peer_is_p2pcp and isinstance(chunk, sctp.InitChunk | sctp.InitAckChunk):
            self._ssthresh = max(self._ssthresh, INITIAL_SSTHRESH)  # from the peer's window

    def _react_to_loss(
        self,
        recovery_before: int | None,
        cwnd_before: int,
        ssthresh_before: int,
        acked: int,
        heavy: bool = False,
    ) -> None:
        """After aiortc's window arithmetic for one SACK that newly acknowledged ``acked``
        TSNs: feed the estimate, and replace Reno's halving with Westwood+'s window (``heavy``:
        the SACK found a run of packets lost, congestion even without a queue)."""
        state = self.westwood
        state.on_acked(acked * self.data_size, time.time())
        window = state.window(self.data_size)
        if recovery_before is None and self._fast_recovery_exit is not None and window:
            # Reno just halved the window for a loss. Without a queue on the path the loss
            # was random: keep the window and keep growing it. With one, Westwood+: shrink
            # to the window the path carries without a queue.
            if heavy or state.queueing():
                self._ssthresh = window
                self._cwnd = min(cwnd_before, window)
            else:
                slow_start = cwnd_before <= ssthresh_before
                self._ssthresh = UNBOUNDED if slow_start else max(ssthresh_before, window)
                self._cwnd = cwnd_before
        elif self._cwnd <= self._ssthresh and state.queueing():
            self._ssthresh = self._cwnd  # slow start ends when a queue builds

    async def _receive_sack_chunk(self, chunk: sctp.SackChunk) -> None:
        """aiortc 1.16.0's SACK handling; Westwood+ after its window arithmetic."""
        if uint32_gt(self._last_sacked_tsn, chunk.cumulative_tsn):
            return

        received_time = time.time()
        recovery_before = self._fast_recovery_exit
        cwnd_before, ssthresh_before = self._cwnd, self._ssthresh
        acked = (chunk.cumulative_tsn - self._last_sacked_tsn) % sctp.SCTP_TSN_MODULO
        self._last_sacked_tsn = chunk.cumulative_tsn
        cwnd_fully_utilized = self._flight_size >= self._cwnd
        in_flight = len(self._sent_queue)
        struck = 0
        done = 0
        done_bytes = 0
        size = self.data_size

        # handle acknowledged data
        while self._sent_queue and uint32_gte(self._last_sacked_tsn, self._sent_queue[0].tsn):
            schunk = self._sent_queue.popleft()
            done += 1
            if not schunk._acked:
                done_bytes += schunk._book_size
            self._flight_size_decrease(schunk)

            # update RTO estimate
            if done == 1 and schunk._sent_count == 1 and schunk._sent_time is not None:
                self._update_rto(received_time - schunk._sent_time)

        # handle gap blocks
        loss = False
        if chunk.gaps:
            newly, struck = self._gap_blocks(chunk)
            done_bytes += newly
            loss = struck > 0

        # adjust congestion window
        if self._fast_recovery_exit is None:
            if done and cwnd_fully_utilized:
                if self._cwnd <= self._ssthresh:
                    # slow start, by what the SACK acknowledged (RFC 3465): a p2pcp peer's
                    # SACK stands for several standard packets or two large ones (delayed_sack)
                    most = sack_covers(size) if self.peer_is_p2pcp else size
                    self._cwnd += min(done_bytes, most)
                else:
                    # congestion avoidance
                    self._partial_bytes_acked += done_bytes
                    if self._partial_bytes_acked >= self._cwnd:
                        self._partial_bytes_acked -= self._cwnd
                        self._cwnd += size
            if loss:
                self._ssthresh = max(self._cwnd // 2, 4 * size)
                self._cwnd = self._ssthresh
                self._partial_bytes_acked = 0
                self._fast_recovery_exit = self._sent_queue[-1].tsn
                self._fast_recovery_transmit = True
        elif uint32_gte(chunk.cumulative_tsn, self._fast_recovery_exit):
            self._fast_recovery_exit = None

        if not self._sent_queue:
            # there is no outstanding data, stop T3
            self._t3_cancel()
        elif done:
            # the earliest outstanding chunk was acknowledged, restart T3
            self._t3_restart()

        heavy = heavy_loss(struck, in_flight)
        self._react_to_loss(recovery_before, cwnd_before, ssthresh_before, acked, heavy)
        self._update_advanced_peer_ack_point()
        await self._data_channel_flush()
        await self._transmit()

    def _gap_blocks(self, chunk: sctp.SackChunk) -> tuple[int, int]:
        """aiortc 1.16.0's handling of a SACK's gap blocks: chunks reported received are
        acknowledged, and those missing below the highest newly acknowledged one are struck
        (retransmitted at the third strike). Returns the bytes newly acknowledged and the
        chunks struck out.

        aiortc builds a set of every TSN the gaps cover and walks the queue of sent chunks
        twice, for every SACK: with a window of hundreds of standard packets and a hole in it
        (a long lossy path) that was half of the sender's CPU (100 ms + 1% lab, standard
        packets: 5-8 s of CPU for 16 MiB). The queue holds consecutive TSNs from the first one
        after the cumulative TSN, so a gap's chunks are found by their place in it, and only
        the holes between gaps are walked to strike; where the queue is not consecutive,
        aiortc's walk runs as it was."""
        queue = self._sent_queue
        cumulative = chunk.cumulative_tsn
        modulo = sctp.SCTP_TSN_MODULO
        items = list(queue)
        count = len(items)
        base = (items[0].tsn - cumulative) % modulo if items else 1
        gaps = [(start - base, end - base) for start, end in chunk.gaps]
        if (
            not items
            or (items[-1].tsn - items[0].tsn) % modulo != count - 1
            or any(low < 0 or low > high for low, high in gaps)
            or any(gaps[i][0] <= gaps[i - 1][1] for i in range(1, len(gaps)))
        ):
            return self._gap_blocks_walk(chunk)
        newly_bytes = 0
        newly_highest = -1  # index of the highest chunk newly acknowledged
        for low, high in gaps:
            for index in range(low, min(high, count - 1) + 1):
                schunk = items[index]
                if not schunk._acked:
                    newly_bytes += schunk._book_size
                    schunk._acked = True
                    newly_highest = index
                if schunk._in_flight:
                    self._flight_size_decrease(schunk)
        struck = 0
        hole_start = 0
        for low, high in gaps:
            for index in range(hole_start, min(low, newly_highest)):
                struck += self._strike(items[index])
            hole_start = high + 1
        return newly_bytes, struck

    def _strike(self, schunk: sctp.DataChunk) -> int:
        """One more report of ``schunk`` missing; at the third, it is lost: 1, else 0."""
        schunk._misses += 1
        if schunk._misses != 3:
            return 0
        schunk._misses = 0
        if schunk._sent_count == 1:  # a resent chunk is struck again early
            self.packets_lost += 1
        if not self._maybe_abandon(schunk):
            schunk._retransmit = True
        schunk._acked = False
        self._flight_size_decrease(schunk)
        return 1

    def _gap_blocks_walk(self, chunk: sctp.SackChunk) -> tuple[int, int]:
        """``_gap_blocks`` as aiortc 1.16.0 does it (the set of TSNs, the queue walked)."""
        done_bytes = 0
        struck = 0
        seen = set()
        for gap in chunk.gaps:
            for pos in range(gap[0], gap[1] + 1):
                highest_seen_tsn = (chunk.cumulative_tsn + pos) % sctp.SCTP_TSN_MODULO
                seen.add(highest_seen_tsn)

        # determined Highest TSN Newly Acked (HTNA)
        highest_newly_acked = chunk.cumulative_tsn
        for schunk in self._sent_queue:
            if uint32_gt(schunk.tsn, highest_seen_tsn):
                break
            if schunk.tsn in seen:
                if not schunk._acked:
                    done_bytes += schunk._book_size
                    schunk._acked = True
                    highest_newly_acked = schunk.tsn
                self._flight_size_decrease(schunk)

        # strike missing chunks prior to HTNA
        for schunk in self._sent_queue:
            if uint32_gt(schunk.tsn, highest_newly_acked):
                break
            if schunk.tsn not in seen:
                struck += self._strike(schunk)
        return done_bytes, struck

    def _t3_expired(self) -> None:
        """aiortc 1.16.0's retransmission timeout; slow start then aims for the path's
        window instead of half the last one."""
        self._t3_handle = None
        self.timeouts += 1
        if self._sent_queue and self._sent_queue[0]._sent_count == 1:
            self.packets_lost += 1  # the earliest outstanding chunk, at least, is lost

        # mark retransmit or abandoned chunks
        for chunk in self._sent_queue:
            if not self._maybe_abandon(chunk):
                chunk._retransmit = True
            # Chunks awaiting retransmission are not outstanding (RFC 9260 section 1.3).
            self._flight_size_decrease(chunk)
        self._update_advanced_peer_ack_point()

        # adjust congestion window
        self._fast_recovery_exit = None
        self._partial_bytes_acked = 0

        self._ssthresh = max(self._cwnd // 2, 4 * self.data_size)
        self._cwnd = self.data_size
        window = self.westwood.window(self.data_size)
        if window:
            self._ssthresh = max(self._ssthresh, window)  # slow start back to the path's window

        asyncio.ensure_future(self._transmit())

    def _update_rto(self, R: float) -> None:  # noqa: N803 (aiortc's name)
        """aiortc 1.16.0's RTO estimate with a 200 ms floor; the sample also feeds Westwood+."""
        self.westwood.on_rtt(R)
        if self._srtt is None or self._rttvar is None:
            self._rttvar = R / 2
            self._srtt = R
        else:
            self._rttvar = (1 - sctp.SCTP_RTO_BETA) * self._rttvar + sctp.SCTP_RTO_BETA * abs(
                self._srtt - R
            )
            self._srtt = (1 - sctp.SCTP_RTO_ALPHA) * self._srtt + sctp.SCTP_RTO_ALPHA * R
        self._rto = max(RTO_MIN, min(self._srtt + 4 * self._rttvar, sctp.SCTP_RTO_MAX))

    async def _transmit(self) -> None:
        """aiortc 1.16.0's ``_transmit``, its burst limit in the association's packets."""
        # send FORWARD TSN
        if self._forward_tsn_chunk is not None:
            await self._send_chunk(self._forward_tsn_chunk)
            self._forward_tsn_chunk = None

            # ensure T3 is running
            if not self._t3_handle:
                self._t3_start()

        # limit burst size
        if self._fast_recovery_exit is not None:
            burst_size = 2 * self.data_size
        else:
            burst_size = 4 * self.data_size
            if self.peer_is_p2pcp:
                burst_size = max(burst_size, BURST_BYTES)
        cwnd = min(self._flight_size + burst_size, self._cwnd)

        # retransmit
        retransmit_earliest = True
        for chunk in self._sent_queue:
            if chunk._retransmit:
                if self._fast_recovery_transmit:
                    self._fast_recovery_transmit = False
                elif self._flight_size >= cwnd:
                    return
                self._flight_size_increase(chunk)

                chunk._misses = 0
                chunk._retransmit = False
                chunk._sent_count += 1
                await self._send_chunk(chunk)
                if retransmit_earliest:
                    # restart the T3 timer as the earliest outstanding TSN
                    # is being retransmitted
                    self._t3_restart()
            retransmit_earliest = False

        while self._outbound_queue and self._flight_size < cwnd:
            chunk = self._outbound_queue.popleft()
            self._sent_queue.append(chunk)
            self._flight_size_increase(chunk)

            # update counters
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            self.packets_sent += 1

            await self._send_chunk(chunk)
            if not self._t3_handle:
                self._t3_start()
