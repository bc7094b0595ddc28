"""Congestion control for aiortc's SCTP that survives random loss (Westwood+ and a delay check),
and delayed acknowledgements.

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

The receiver acknowledges every second packet (or after 20 ms), not every packet, as RFC 4960
section 6.2 allows, and at once when data arrives out of order or twice. Both sides then spend
less per packet: on loopback 27.3 -> 31.7 MB/s, 4.0 -> 3.1 CPU seconds for the sender
(bench/transfer.py, 128 MiB, median of 3). It changes only what this side sends, so any peer
(Chromium, an unmodified aiortc) works with it.

Between two p2pcp peers whose route carries them, SCTP packets grow to 64 KB (four DTLS records
in one datagram; see "large packets" below and docs/protocol.md): aiortc pays per packet, so that
is where most of the speed on one host comes from.

This is the only module that changes aiortc internals. It wraps seven methods of
``RTCSctpTransport`` and two of ``RTCDtlsTransport``, and is written for aiortc 1.16.0 (pinned
in pyproject.toml): with any other version it changes nothing and logs why.
``tests/test_sctp.py`` checks the arithmetic, counts SACKs on a real transfer, checks the large
packets against a p2pcp peer, an earlier one and an unmodified aiortc, and checks that it is in
force; the bad-link tests in ``tests/test_netlab.py`` and the browser tests run with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import Any

import aiortc
from aiortc import rtcdtlstransport as dtls
from aiortc import rtcsctptransport as sctp
from OpenSSL import SSL
from OpenSSL._util import ffi, lib

log = logging.getLogger(__name__)

WRITTEN_FOR = "1.16.0"
PACKET = sctp.USERDATA_MAX_LENGTH
"""aiortc's standard user data per DATA chunk (large packets change the module's value)."""
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
LARGE_PACKETS = os.environ.get("P2PCP_LARGE_PACKETS", "1") != "0"
"""Whether to probe for large packets at all (P2PCP_LARGE_PACKETS=0 turns it off, for tests
and for comparison)."""
SACK_EVERY = 2
"""Acknowledge at least every second packet with data (RFC 4960 section 6.2)."""
SACK_DELAY = 0.02
"""Longest delay (s) of an acknowledgement (RFC 4960 allows 200 ms; shorter keeps request and
answer exchanges quick)."""
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

    def window(self) -> int | None:
        """``bandwidth * minimum RTT`` in bytes (None until both are known), at least 4
        packets."""
        if not self.bandwidth or self.rtt_min is None:
            return None
        return max(int(self.bandwidth * self.rtt_min), 4 * sctp.USERDATA_MAX_LENGTH)


def _state(transport: Any) -> Westwood:
    state = transport.__dict__.get("_p2pcp_westwood")
    if state is None:
        state = transport._p2pcp_westwood = Westwood()
    return state  # type: ignore[no-any-return]


_original_send_sack = sctp.RTCSctpTransport._send_sack
_original_forward_tsn = sctp.RTCSctpTransport._receive_forward_tsn_chunk
_original_sack = sctp.RTCSctpTransport._receive_sack_chunk
_original_t3 = sctp.RTCSctpTransport._t3_expired
_original_rto = sctp.RTCSctpTransport._update_rto
_original_peer_ack = sctp.RTCSctpTransport._update_advanced_peer_ack_point


async def _receive_sack_chunk(self: Any, chunk: Any) -> None:
    # aiortc adjusts the window and then calls _update_advanced_peer_ack_point before it sends
    # more: that is where the loss reaction is replaced, so the next burst uses it.
    self._p2pcp_before = (
        self._fast_recovery_exit,
        self._cwnd,
        self._ssthresh,
        self._last_sacked_tsn,
    )
    try:
        await _original_sack(self, chunk)
    finally:
        self._p2pcp_before = None


def _update_advanced_peer_ack_point(self: Any) -> None:
    before = self.__dict__.get("_p2pcp_before")
    if before is not None:
        self._p2pcp_before = None
        recovery_before, cwnd_before, ssthresh_before, last_tsn_before = before
        state = _state(self)
        advanced = (self._last_sacked_tsn - last_tsn_before) % sctp.SCTP_TSN_MODULO
        state.on_acked(advanced * sctp.USERDATA_MAX_LENGTH, time.time())
        window = state.window()
        if recovery_before is None and self._fast_recovery_exit is not None and window:
            # Reno just halved the window for a loss. Without a queue on the path the loss
            # was random: keep the window and keep growing it. With one, Westwood+: shrink
            # to the window the path carries without a queue.
            if state.queueing():
                self._ssthresh = window
                self._cwnd = min(cwnd_before, window)
            else:
                slow_start = cwnd_before <= ssthresh_before
                self._ssthresh = UNBOUNDED if slow_start else max(ssthresh_before, window)
                self._cwnd = cwnd_before
        elif self._cwnd <= self._ssthresh and state.queueing():
            self._ssthresh = self._cwnd  # slow start ends when a queue builds
    _original_peer_ack(self)


def _t3_expired(self: Any) -> None:
    _original_t3(self)
    window = _state(self).window()
    if window:
        self._ssthresh = max(self._ssthresh, window)  # slow start back to the path's window


def _update_rto(self: Any, rtt: float) -> None:
    _state(self).on_rtt(rtt)
    _original_rto(self, rtt)


# -- delayed acknowledgement (RFC 4960 section 6.2) -------------------------------------------


async def _send_sack(self: Any) -> None:
    """aiortc acknowledges every packet that carried data. RFC 4960 lets a receiver acknowledge
    every second packet, within SACK_DELAY of the first unacknowledged one, and at once when
    data arrives out of order or twice, or on a FORWARD TSN: so do we. That halves the SACKs
    this side builds, encrypts and sends, and the ones the sender parses."""
    pending = self.__dict__.get("_p2pcp_unacked", 0) + 1
    urgent = self.__dict__.pop("_p2pcp_sack_now", False)
    if urgent or pending >= SACK_EVERY or self._sack_misordered or self._sack_duplicates:
        self._p2pcp_unacked = 0
        timer = self.__dict__.pop("_p2pcp_sack_timer", None)
        if timer is not None:
            timer.cancel()
        await _original_send_sack(self)
        return
    self._p2pcp_unacked = pending
    if self.__dict__.get("_p2pcp_sack_timer") is None:
        self._p2pcp_sack_timer = self._loop.call_later(SACK_DELAY, _sack_timer, self)


def _sack_timer(self: Any) -> None:
    self._p2pcp_sack_timer = None
    if self._sack_needed and self._association_state == sctp.RTCSctpTransport.State.ESTABLISHED:
        self._p2pcp_sack_now = True
        asyncio.ensure_future(_send_sack(self))


async def _receive_forward_tsn_chunk(self: Any, chunk: Any) -> None:
    self._p2pcp_sack_now = True
    await _original_forward_tsn(self, chunk)


# -- large packets where both peers take them and the path carries them ----------------------

LARGE_DATA = 64000
"""User data per DATA chunk once large packets are on. The SCTP packet (64028 bytes) is more
than one DTLS record holds (16384 bytes of plaintext at most), so it goes out as consecutive
records in one UDP datagram (RFC 6347 section 4.1.1 allows several records per datagram) and
the receiver joins the records of a datagram back into one packet."""
SINGLE_RECORD_DATA = 16000
"""The large size of earlier p2pcp versions, whose SCTP packet (16028 bytes) fits one record:
used with a peer that says it takes only that much."""
MAX_RECORD = 16384
"""Largest DTLS record plaintext (2^14)."""
RECORD_HEADER = 13
"""DTLS 1.2 record header: type, version, epoch, sequence number, length (the last 2 bytes)."""
RECORD_OVERHEAD = 64
"""Bytes a record adds to its plaintext, at most (AES-GCM adds 37: header, nonce, tag)."""
APPLICATION_DATA = 23
"""Content type of a DTLS 1.2 record carrying data (the first byte of its header)."""
SCTP_OVERHEAD = 28
"""SCTP common header (12) and DATA chunk header (16)."""
PROBE_TIMEOUT = 1.0
RECORD_BUFFER = 1 << 17
PROBE_MARK = b"p2pcp-large-packet-probe:"
IP_MTU = 14  # Linux <linux/in.h>; the socket module does not export it


def data_size() -> int:
    """User data per DATA chunk this process sends now (standard, or large after a probe)."""
    return sctp.USERDATA_MAX_LENGTH


def _record_end(datagram: bytes, offset: int) -> int:
    """Where the DTLS 1.2 record starting at ``offset`` ends (its header's last 2 bytes hold
    the length of what follows the header)."""
    return offset + RECORD_HEADER + (datagram[offset + 11] << 8 | datagram[offset + 12])


def several_records(dtls_transport: Any) -> bool:
    """Whether this DTLS connection may carry packets of several records: DTLS 1.2, by whose
    13-byte record header the receiver splits a datagram (DTLS 1.3's headers differ)."""
    return bool(dtls_transport._ssl.get_protocol_version_name() == "DTLSv1.2")


def needed_mtu(size: int) -> int:
    """The path MTU that carries a DATA packet of ``size`` user bytes unfragmented: the SCTP
    packet, the overhead of each DTLS record it takes, UDP's 8 bytes and IPv6's 40."""
    packet = size + SCTP_OVERHEAD
    records = -(-packet // MAX_RECORD)
    return packet + records * RECORD_OVERHEAD + 8 + 40


class _Records:
    """The DTLS connection of one transport, with the calls aiortc makes for every packet going
    straight to OpenSSL (pyOpenSSL's wrappers cost more than the cipher): whole records are
    read (aiortc's buffer is 1500 bytes) into a buffer kept for the connection, and nothing is
    read, instead of an exception raised, when OpenSSL has nothing to send. An SCTP packet
    larger than one record is written as several records, and a datagram of several records
    is read as one packet. Errors go through pyOpenSSL's own checks, so aiortc sees the same
    exceptions; every other call goes to the pyOpenSSL connection."""

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection
        self._ssl = connection._ssl
        self._into_ssl = connection._into_ssl
        self._from_ssl = connection._from_ssl
        self._buffer = ffi.new("char[]", RECORD_BUFFER)
        self._datagram: bytes | None = None
        """A datagram of several records, written by ``bio_write`` for ``recv`` to read."""

    def recv(self, size: int) -> bytes:
        datagram = self._datagram
        if datagram is not None:
            self._datagram = None
            return self._read_records(datagram)
        result: int = lib.SSL_read(self._ssl, self._buffer, RECORD_BUFFER)
        if result <= 0:
            self._connection._raise_ssl_error(self._ssl, result)
        data: bytes = ffi.buffer(self._buffer, result)[:]
        return data

    def _read_records(self, datagram: bytes) -> bytes:
        """The plaintext of the records in ``datagram``, joined. Each record goes to OpenSSL on
        its own: aiortc reads once per datagram, so a second record would wait for the next
        datagram's read and every packet after it would come out shifted (and OpenSSL's DTLS
        reads at most about one record's worth from the memory BIO at a time, dropping the rest
        of a longer datagram). A record that fails its check is dropped by OpenSSL, which leaves
        the joined packet short: its SCTP checksum then fails and SCTP retransmits it."""
        pointer = ffi.from_buffer(datagram)
        end = len(datagram)
        offset = total = result = 0
        while end - offset > RECORD_HEADER:
            length = min(_record_end(datagram, offset), end) - offset
            written: int = lib.BIO_write(self._into_ssl, pointer + offset, length)
            if written <= 0:
                self._connection._handle_bio_errors(self._into_ssl, written)
            offset += length
            result = lib.SSL_read(self._ssl, self._buffer + total, RECORD_BUFFER - total)
            if result > 0:
                total += result
        if total == 0:
            self._connection._raise_ssl_error(self._ssl, result)
        data: bytes = ffi.buffer(self._buffer, total)[:]
        return data

    def send(self, data: bytes) -> int:
        if type(data) is not bytes:
            return self._connection.send(data)
        if len(data) > MAX_RECORD:
            return self._send_records(data)
        result: int = lib.SSL_write(self._ssl, data, len(data))
        if result <= 0:
            self._connection._raise_ssl_error(self._ssl, result)
        return result

    def _send_records(self, data: bytes) -> int:
        """``data`` as consecutive records, which ``output`` then hands on as one datagram."""
        pointer = ffi.from_buffer(data)
        for offset in range(0, len(data), MAX_RECORD):
            size = min(MAX_RECORD, len(data) - offset)
            result: int = lib.SSL_write(self._ssl, pointer + offset, size)
            if result <= 0:
                self._connection._raise_ssl_error(self._ssl, result)
        return len(data)

    def bio_write(self, data: bytes) -> int:
        if type(data) is not bytes:
            return self._connection.bio_write(data)
        if (
            data[0] == APPLICATION_DATA
            and len(data) > RECORD_HEADER
            and len(data) > _record_end(data, 0)
        ):
            self._datagram = data  # several records: aiortc's recv() right after reads them
            return len(data)
        result: int = lib.BIO_write(self._into_ssl, data, len(data))
        if result <= 0:
            self._connection._handle_bio_errors(self._into_ssl, result)
        return result

    def output(self) -> bytes:
        """What OpenSSL wrote since the last call (the records of one packet after the
        handshake), or b""."""
        pending = lib.BIO_get_mem_data(self._from_ssl, ffi.NULL)
        if pending <= 0:
            return b""
        result: int = lib.BIO_read(self._from_ssl, self._buffer, min(pending, RECORD_BUFFER))
        if result <= 0:
            return b""
        data: bytes = ffi.buffer(self._buffer, result)[:]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


_original_recv_next = dtls.RTCDtlsTransport._recv_next
_original_receive_chunk = sctp.RTCSctpTransport._receive_chunk


async def _recv_next(self: Any) -> None:
    ssl = self.__dict__.get("_ssl")
    if ssl is not None and not isinstance(ssl, _Records):
        self._ssl = _Records(ssl)
    await _original_recv_next(self)


async def _write_ssl(self: Any) -> None:
    # aiortc reads at most 1500 bytes of what OpenSSL wrote, one datagram per call. During the
    # handshake that stays so; after it every send is one packet's records, read whole.
    ssl = self._ssl
    if self.encrypted and isinstance(ssl, _Records):
        data = ssl.output()
    else:
        try:
            data = ssl.bio_read(1500)
        except SSL.Error:
            data = b""
    if data:
        await self.transport._send(data)
        self._RTCDtlsTransport__tx_bytes += len(data)
        self._RTCDtlsTransport__tx_packets += 1


async def _receive_chunk(self: Any, chunk: Any) -> None:
    if isinstance(chunk, sctp.HeartbeatAckChunk):
        waiter = self.__dict__.get("_p2pcp_probe")
        for _, value in chunk.params:
            if waiter is not None and not waiter.done() and value == waiter.info:
                waiter.set_result(True)
    await _original_receive_chunk(self, chunk)


def path_mtu(address: tuple[str, int]) -> int:
    """The MTU of this machine's route to ``address`` (Linux IP_MTU on a connected UDP socket;
    0 where unknown). Large packets are only worth it where they need no IP fragmentation: on
    the same host (the loopback route, MTU 65536) or on jumbo-frame links. A fragmented 64 KB
    packet is lost when any of its 44 fragments is, which multiplies the loss of a lossy path."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return 0


class _Probe(asyncio.Future[bool]):
    info: bytes


async def probe_large_packets(transport: Any, data_size: int = LARGE_DATA) -> bool:
    """Send one HEARTBEAT padded to the size of a DATA packet of ``data_size`` user bytes; if
    its echo comes back within PROBE_TIMEOUT, the peer took a packet that large (its DTLS and
    SCTP accept them: only a peer with this module does, an unmodified aiortc's 1500-byte buffer
    cuts the record) and the path carried one each way. Then this process sends DATA chunks of
    that size from now on: aiortc reads the chunk size from a module constant, so the switch
    holds for every association of the process (the CLI has one). A HEARTBEAT is never
    retransmitted, so a lost probe costs nothing: the standard size simply stays."""
    if aiortc.__version__ != WRITTEN_FOR or not LARGE_PACKETS:
        return False
    # HEARTBEAT: chunk header 4, parameter header 4, info; DATA: chunk header 16, user data.
    info = PROBE_MARK + os.urandom(data_size + 8 - len(PROBE_MARK))
    waiter = _Probe()
    waiter.info = info
    transport._p2pcp_probe = waiter
    chunk = sctp.HeartbeatChunk()
    chunk.params = [(1, info)]
    try:
        await transport._send_chunk(chunk)
        await asyncio.wait_for(waiter, PROBE_TIMEOUT)
    except (TimeoutError, ConnectionError, OSError):
        log.debug("large packets: no echo of the probe, standard size kept (%d bytes)", data_size)
        return False
    finally:
        transport._p2pcp_probe = None
    sctp.USERDATA_MAX_LENGTH = data_size
    log.debug("large packets: the probe came back, DATA chunks of %d bytes", data_size)
    return True


def install() -> bool:
    """Put Westwood+ in force (once); False, changing nothing, on another aiortc version."""
    cls = sctp.RTCSctpTransport
    if cls._receive_sack_chunk is _receive_sack_chunk:
        return True
    if aiortc.__version__ != WRITTEN_FOR:
        log.warning("aiortc %s: SCTP loss recovery left as it is", aiortc.__version__)
        return False
    cls._receive_sack_chunk = _receive_sack_chunk  # type: ignore[method-assign]
    cls._update_advanced_peer_ack_point = _update_advanced_peer_ack_point  # type: ignore[method-assign]
    cls._t3_expired = _t3_expired  # type: ignore[method-assign]
    cls._update_rto = _update_rto  # type: ignore[method-assign,assignment]
    cls._send_sack = _send_sack  # type: ignore[method-assign]
    cls._receive_chunk = _receive_chunk  # type: ignore[method-assign]
    dtls.RTCDtlsTransport._recv_next = _recv_next  # type: ignore[method-assign]
    dtls.RTCDtlsTransport._write_ssl = _write_ssl  # type: ignore[method-assign]
    cls._receive_forward_tsn_chunk = _receive_forward_tsn_chunk  # type: ignore[method-assign]
    sctp.SCTP_RTO_MIN = RTO_MIN  # type: ignore[assignment]
    return True
