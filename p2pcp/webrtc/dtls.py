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

from . import pieces

RECORD_BUFFER = 1 << 17
MAX_RECORD = 16384
"""Largest DTLS record plaintext (2^14)."""
RECORD_HEADER = 13
"""DTLS 1.2 record header: type, version, epoch, sequence number, length (the last 2 bytes)."""
APPLICATION_DATA = 23
"""Content type of a DTLS 1.2 record carrying data (the first byte of its header)."""
MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4."""
RECORD_OVERHEAD = 64
"""Bytes a record adds to its plaintext, at most (AES-GCM adds 37: header, nonce, tag)."""


def _record_end(datagram: bytes, offset: int) -> int:
    """Where the DTLS 1.2 record starting at ``offset`` ends (its header's last 2 bytes hold
    the length of what follows the header)."""
    return offset + RECORD_HEADER + (datagram[offset + 11] << 8 | datagram[offset + 12])


def several_records(dtls_transport: RTCDtlsTransport) -> bool:
    """Whether this DTLS connection may carry packets of several records: DTLS 1.2, by whose
    13-byte record header the receiver splits a datagram (DTLS 1.3's headers differ)."""
    ssl = dtls_transport._ssl
    return ssl is not None and ssl.get_protocol_version_name() == "DTLSv1.2"


class Joined(bytes):
    """A one-byte stand-in (content type 23, so aiortc takes it for DTLS) for an SCTP packet
    already decrypted and joined on arrival (``Records.take_datagram``): aiortc hands it to
    ``Records.bio_write``, whose ``recv`` then returns the packet."""

    packet: bytes


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
        self.piece_size = 0
        """Bytes of an SCTP packet per record, behind a piece header (``pieces.py``); 0: the
        peer does not take pieces, a packet goes out as it is."""
        self.max_datagram = MAX_DATAGRAM
        """Largest datagram ``datagrams`` makes of the records of one packet (the path's MTU
        less the IP and UDP headers, where the peer takes pieces)."""
        self._number = 0
        self.parity = False
        """Whether packets of several pieces carry a parity piece (pieces.py): from the start
        on a path of a small MTU (``take_pieces``), and then while the association sees loss."""
        self._joiner = pieces.Joiner()
        self._joined: bytes | None = None
        """A packet joined on arrival, for ``recv`` to return."""

    def take_pieces(self, max_datagram: int) -> None:
        """Cut every packet from now on into pieces that fit datagrams of ``max_datagram``
        bytes, one record or more each (the peer said it joins them)."""
        self.max_datagram = min(max_datagram, MAX_DATAGRAM)
        room = min(MAX_RECORD, self.max_datagram - RECORD_OVERHEAD)
        self.piece_size = room - pieces.HEADER.size - pieces.LENGTH.size  # a parity piece fits
        # Parity from the start where a packet takes many datagrams (a path of a small MTU,
        # likely lossy until shown otherwise); never within one host.
        self.parity = self.max_datagram < MAX_RECORD

    def recv(self, size: int) -> bytes:
        if self._joined is not None:
            packet, self._joined = self._joined, None
            return packet
        datagram = self._datagram
        if datagram is not None:
            self._datagram = None
            if self.piece_size:
                return self._join(self._read_pieces(datagram))
            return self._read_records(datagram)
        result: int = lib.SSL_read(self._ssl, self._buffer, RECORD_BUFFER)
        if result <= 0:
            self._connection._raise_ssl_error(self._ssl, result)
        data: bytes = ffi.buffer(self._buffer, result)[:]
        if self.piece_size:
            return self._join([data])
        return data

    def _join(self, plaintexts: list[bytes]) -> bytes:
        """The packet these pieces complete, or b"" (aiortc then hands nothing on)."""
        packet = None
        for piece in plaintexts:
            packet = self._joiner.add(piece) or packet
        return packet or b""

    def _read_pieces(self, datagram: bytes) -> list[bytes]:
        """The plaintext of each record in ``datagram``. Each record goes to OpenSSL on its
        own: aiortc reads once per datagram, so a second record would wait for the next
        datagram's read and every packet after it would come out shifted (and OpenSSL's DTLS
        reads at most about one record's worth from the memory BIO at a time, dropping the rest
        of a longer datagram). A record that fails its check is dropped by OpenSSL: its packet
        comes out incomplete (pieces) or short (its SCTP checksum then fails), and SCTP sends
        it again."""
        pointer = ffi.from_buffer(datagram)
        end = len(datagram)
        offset = result = 0
        plaintexts = []
        while end - offset > RECORD_HEADER:
            length = min(_record_end(datagram, offset), end) - offset
            written: int = lib.BIO_write(self._into_ssl, pointer + offset, length)
            if written <= 0:
                self._connection._handle_bio_errors(self._into_ssl, written)
            offset += length
            result = lib.SSL_read(self._ssl, self._buffer, RECORD_BUFFER)
            if result > 0:
                plaintexts.append(ffi.buffer(self._buffer, result)[:])
        if not plaintexts:
            self._connection._raise_ssl_error(self._ssl, result)
        return plaintexts

    def _read_records(self, datagram: bytes) -> bytes:
        """The plaintext of the records in ``datagram``, joined into one packet (a peer that
        takes no pieces)."""
        return b"".join(self._read_pieces(datagram))

    def send(self, data: bytes) -> int:
        if type(data) is not bytes:
            return self._connection.send(data)
        if self.piece_size:
            self._number += 1
            for piece in pieces.cut(data, self._number, self.piece_size, self.parity):
                self._write(piece)
            return len(data)
        if len(data) > MAX_RECORD:
            return self._send_records(data)
        result: int = lib.SSL_write(self._ssl, data, len(data))
        if result <= 0:
            self._connection._raise_ssl_error(self._ssl, result)
        return result

    def _write(self, plaintext: bytes) -> None:
        result: int = lib.SSL_write(self._ssl, plaintext, len(plaintext))
        if result <= 0:
            self._connection._raise_ssl_error(self._ssl, result)

    def _send_records(self, data: bytes) -> int:
        """``data`` as consecutive records, which ``output`` then hands on as one datagram."""
        pointer = ffi.from_buffer(data)
        for offset in range(0, len(data), MAX_RECORD):
            size = min(MAX_RECORD, len(data) - offset)
            result: int = lib.SSL_write(self._ssl, pointer + offset, size)
            if result <= 0:
                self._connection._raise_ssl_error(self._ssl, result)
        return len(data)

    def take_datagram(self, datagram: bytes) -> Joined | None:
        """Decrypt and join the pieces in ``datagram`` as it arrives; the packet they complete
        (as a :class:`Joined` for aiortc's receive loop), or None. The loop then wakes once per
        packet instead of once per datagram."""
        try:
            packet = self._join(self._read_pieces(datagram))
        except SSL.Error:  # no record of it passed its check: as if it was lost
            return None
        if not packet:
            return None
        joined = Joined(b"\x17")
        joined.packet = packet
        return joined

    def bio_write(self, data: bytes) -> int:
        if type(data) is Joined:
            self._joined = data.packet
            return len(data)
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

    def datagrams(self) -> list[bytes]:
        """What OpenSSL wrote since the last call, as datagrams of whole records, each as
        large as ``max_datagram`` lets it be (one, on the same host)."""
        data = self.output()
        if len(data) <= self.max_datagram:
            return [data] if data else []
        datagrams = []
        start = offset = 0
        while offset < len(data):
            end = _record_end(data, offset)
            if end - start > self.max_datagram and offset > start:
                datagrams.append(data[start:offset])
                start = offset
            offset = end
        datagrams.append(data[start:])
        return datagrams

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class DtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport whose data records go through :class:`Records`."""

    pieces_datagram = 0
    """Largest datagram of pieces (``Records.take_pieces``); 0: the peer takes no pieces."""

    def send_parity(self, on: bool) -> None:
        """Add a parity piece to packets of several pieces, or stop (pieces.py)."""
        if isinstance(self._ssl, Records):
            self._ssl.parity = on

    def take_pieces(self, max_datagram: int) -> None:
        """From now on, cut packets into pieces for datagrams of ``max_datagram`` bytes (and
        join the peer's pieces): both peers said they take them."""
        self.pieces_datagram = max_datagram
        if isinstance(self._ssl, Records):
            self._ssl.take_pieces(max_datagram)
        self._join_on_arrival()

    def _join_on_arrival(self) -> None:
        """Once the handshake is done and pieces are on: the ICE connection hands each data
        datagram to ``Records.take_datagram`` as it arrives (ice.py)."""
        connection = getattr(self.transport, "_connection", None)
        if (
            self.pieces_datagram
            and self.state == "connected"
            and isinstance(self._ssl, Records)
            and hasattr(connection, "take_datagram")
        ):
            connection.take_datagram = self._ssl.take_datagram

    def _set_state(self, state: Any) -> None:
        super()._set_state(state)
        self._join_on_arrival()

    async def _recv_next(self) -> None:
        if self._ssl is not None and not isinstance(self._ssl, Records):
            records = Records(self._ssl)
            if self.pieces_datagram:
                records.take_pieces(self.pieces_datagram)
            self._ssl = records  # type: ignore[assignment]  # the same calls
        await super()._recv_next()

    async def _write_ssl(self) -> None:
        # aiortc reads at most 1500 bytes of what OpenSSL wrote, one datagram per call. During
        # the handshake that stays so; after it every send is one packet's records, read whole.
        ssl: Any = self._ssl
        if ssl is None:
            return
        if self.encrypted and isinstance(ssl, Records):
            datagrams = ssl.datagrams()
            connection: Any = getattr(self.transport, "_connection", None)
            send_together = getattr(connection, "send_datagrams", None)  # ice.py's connection
            if len(datagrams) > 1 and send_together is not None and send_together(datagrams):
                self._count_sent(sum(map(len, datagrams)), len(datagrams))
                return
            for datagram in datagrams:
                await self._send_datagram(datagram)
            return
        try:
            data = ssl.bio_read(1500)
        except SSL.Error:
            data = b""
        if data:
            await self._send_datagram(data)

    async def _send_datagram(self, data: bytes) -> None:
        await self.transport._send(data)
        self._count_sent(len(data), 1)

    def _count_sent(self, size: int, datagrams: int) -> None:
        counters: Any = self  # aiortc's private statistics (name-mangled)
        counters._RTCDtlsTransport__tx_bytes += size
        counters._RTCDtlsTransport__tx_packets += datagrams
