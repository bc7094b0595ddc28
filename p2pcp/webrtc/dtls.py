"""DTLS records for large packets, and every record's calls straight to OpenSSL.

aiortc reads and writes one DTLS record per datagram through pyOpenSSL, whose wrappers cost more
than the cipher, with a 1500-byte buffer. Our DTLS transport (a subclass substituted where
aiortc builds its transports) reads whole records into a buffer kept for the connection, writes
an SCTP packet larger than one record as several records that leave as one datagram, and splits
a datagram of several records (DTLS 1.2, RFC 6347 section 4.1.1) back into one packet. The
bytes on the wire are what OpenSSL writes: any DTLS peer reads them.

It uses pyOpenSSL 26.4.0's private names ``_ssl``, ``_into_ssl``, ``_from_ssl``,
``_raise_ssl_error`` and ``_handle_bio_errors`` (pinned; ``pins.py``).
"""

from __future__ import annotations

from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from OpenSSL import SSL
from OpenSSL._util import ffi, lib

RECORD_BUFFER = 1 << 17
MAX_RECORD = 16384
"""Largest DTLS record plaintext (2^14)."""
RECORD_HEADER = 13
"""DTLS 1.2 record header: type, version, epoch, sequence number, length (the last 2 bytes)."""
APPLICATION_DATA = 23
"""Content type of a DTLS 1.2 record carrying data (the first byte of its header)."""


def _record_end(datagram: bytes, offset: int) -> int:
    """Where the DTLS 1.2 record starting at ``offset`` ends (its header's last 2 bytes hold
    the length of what follows the header)."""
    return offset + RECORD_HEADER + (datagram[offset + 11] << 8 | datagram[offset + 12])


def several_records(dtls_transport: RTCDtlsTransport) -> bool:
    """Whether this DTLS connection may carry packets of several records: DTLS 1.2, by whose
    13-byte record header the receiver splits a datagram (DTLS 1.3's headers differ)."""
    ssl = dtls_transport._ssl
    return ssl is not None and ssl.get_protocol_version_name() == "DTLSv1.2"


class Records:
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


class DtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport whose data records go through :class:`Records`."""

    async def _recv_next(self) -> None:
        if self._ssl is not None and not isinstance(self._ssl, Records):
            self._ssl = Records(self._ssl)  # type: ignore[assignment]  # the same calls
        await super()._recv_next()

    async def _write_ssl(self) -> None:
        # aiortc reads at most 1500 bytes of what OpenSSL wrote, one datagram per call. During
        # the handshake that stays so; after it every send is one packet's records, read whole.
        ssl: Any = self._ssl
        if ssl is None:
            return
        if self.encrypted and isinstance(ssl, Records):
            data = ssl.output()
        else:
            try:
                data = ssl.bio_read(1500)
            except SSL.Error:
                data = b""
        if data:
            await self.transport._send(data)
            counters: Any = self  # aiortc's private statistics (name-mangled)
            counters._RTCDtlsTransport__tx_bytes += len(data)
            counters._RTCDtlsTransport__tx_packets += 1
