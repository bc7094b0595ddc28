"""The data-channel transfer protocol as a sans-I/O state machine.

It takes frames in and gives frames out; it never awaits, reads files or looks at a clock.
:class:`Peer` keeps the state, checks every message (sent or received) against the one
transition table :data:`TRANSITIONS`, and does the byte accounting that protects both sides: a
sender never exceeds the receiver's credit, and a receiver rejects more (or fewer) bytes than
the offer declared. The messages and their wire format are ``messages.py``'s, re-exported here
so that callers speak of ``protocol.Offer`` and ``protocol.encode``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from .compress import ZSTD, Packer
from .errors import ProtocolError
from .messages import (
    DATA_HEADER_SIZE,
    DATA_KINDS,
    KIND_CONTROL,
    KIND_DATA,
    KIND_ZSTD,
    MAX_CONTROL_SIZE,
    MAX_DATA_SIZE,
    MAX_FILE_SIZE,
    MAX_OFFER_ENTRIES,
    MAX_TEXT_SIZE,
    OLDEST_VERSION,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    TYPE_NAMES,
    Abort,
    Accept,
    Credit,
    Data,
    Decline,
    Done,
    Entry,
    FileEnd,
    Held,
    Hello,
    Holding,
    KeepAlive,
    Message,
    Offer,
    Resume,
    Start,
    Verified,
    decode,
    encode,
)

__all__ = [  # the messages, re-exported: the protocol's vocabulary
    "Abort",
    "Accept",
    "Credit",
    "DATA_HEADER_SIZE",
    "DATA_KINDS",
    "Data",
    "Decline",
    "Done",
    "Entry",
    "FileEnd",
    "Held",
    "Hello",
    "Holding",
    "KeepAlive",
    "KIND_CONTROL",
    "KIND_DATA",
    "KIND_ZSTD",
    "MAX_CONTROL_SIZE",
    "MAX_DATA_SIZE",
    "MAX_FILE_SIZE",
    "MAX_OFFER_ENTRIES",
    "MAX_TEXT_SIZE",
    "Message",
    "Offer",
    "PROTOCOL_NAME",
    "OLDEST_VERSION",
    "PROTOCOL_VERSION",
    "Resume",
    "Start",
    "TYPE_NAMES",
    "Verified",
    "decode",
    "encode",
    "Peer",
    "Role",
    "State",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "SEND",
    "RECV",
]

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 1
"""Seconds of silence after which a side sends a keep-alive (docs/protocol.md)."""
GONE_AFTER = 10.0
"""Seconds without a frame from a peer that sends keep-alives, after which it is gone."""


class Role(enum.Enum):
    """Which end of the transfer this peer is."""

    SENDER = "sender"
    RECEIVER = "receiver"


class State(enum.Enum):
    """Where a peer is in the conversation."""

    START = "start"
    AWAIT_HELLO = "await-hello"
    READY = "ready"
    AWAIT_OFFER = "await-offer"
    AWAIT_ANSWER = "await-answer"
    DECIDING = "deciding"
    COMPARING = "comparing"
    ACCEPTED = "accepted"
    AWAIT_START = "await-start"
    STARTING = "starting"
    TRANSFERRING = "transferring"
    AWAIT_VERIFIED = "await-verified"
    VERIFYING = "verifying"
    DONE = "done"
    DECLINED = "declined"
    ABORTED = "aborted"


TERMINAL_STATES = frozenset({State.DONE, State.DECLINED, State.ABORTED})


# -- the state machine ------------------------------------------------------------------------

SEND, RECV = "send", "recv"
_S, _R = Role.SENDER, Role.RECEIVER

#: (role, state, direction, message type) -> next state. Abort is allowed from every
#: non-terminal state and handled apart; everything not listed here is a protocol error.
TRANSITIONS: dict[tuple[Role, State, str, type[Any]], State] = {
    (_S, State.START, SEND, Hello): State.AWAIT_HELLO,
    (_S, State.AWAIT_HELLO, RECV, Hello): State.READY,
    (_S, State.READY, SEND, Offer): State.AWAIT_ANSWER,  # READY again while ``more``
    (_S, State.AWAIT_ANSWER, RECV, Holding): State.COMPARING,  # version 3, once
    (_S, State.COMPARING, SEND, Resume): State.AWAIT_ANSWER,
    (_S, State.AWAIT_ANSWER, RECV, Accept): State.ACCEPTED,  # TRANSFERRING in version 3
    (_S, State.ACCEPTED, SEND, Resume): State.TRANSFERRING,  # AWAIT_START with prefixes
    (_S, State.AWAIT_START, RECV, Start): State.TRANSFERRING,
    (_S, State.AWAIT_ANSWER, RECV, Decline): State.DECLINED,
    (_S, State.TRANSFERRING, SEND, Data): State.TRANSFERRING,
    (_S, State.TRANSFERRING, SEND, FileEnd): State.TRANSFERRING,
    (_S, State.TRANSFERRING, RECV, Credit): State.TRANSFERRING,
    (_S, State.TRANSFERRING, SEND, Done): State.AWAIT_VERIFIED,
    (_S, State.AWAIT_VERIFIED, RECV, Credit): State.AWAIT_VERIFIED,
    (_S, State.AWAIT_VERIFIED, RECV, Verified): State.DONE,
    (_R, State.START, SEND, Hello): State.AWAIT_HELLO,
    (_R, State.AWAIT_HELLO, RECV, Hello): State.AWAIT_OFFER,
    (_R, State.AWAIT_OFFER, RECV, Offer): State.DECIDING,  # AWAIT_OFFER again while ``more``
    (_R, State.DECIDING, SEND, Holding): State.COMPARING,  # version 3, once
    (_R, State.COMPARING, RECV, Resume): State.DECIDING,
    (_R, State.DECIDING, SEND, Accept): State.ACCEPTED,  # TRANSFERRING in version 3
    (_R, State.ACCEPTED, RECV, Resume): State.TRANSFERRING,  # STARTING with prefixes
    (_R, State.STARTING, SEND, Start): State.TRANSFERRING,
    (_R, State.DECIDING, SEND, Decline): State.DECLINED,
    (_R, State.TRANSFERRING, RECV, Data): State.TRANSFERRING,
    (_R, State.TRANSFERRING, RECV, FileEnd): State.TRANSFERRING,
    (_R, State.TRANSFERRING, SEND, Credit): State.TRANSFERRING,
    (_R, State.TRANSFERRING, RECV, Done): State.VERIFYING,
    (_R, State.VERIFYING, SEND, Verified): State.DONE,
}


@dataclass
class _FileCursor:
    """Which file of the offer is moving and how many of its bytes have moved."""

    sizes: list[int | None] = field(default_factory=list)
    index: int = 0
    moved: int = 0
    starts: dict[int, int] = field(default_factory=dict)
    """Where each resumed file's data starts (bytes the receiver already holds)."""
    skip: frozenset[int] = frozenset()
    """Files the sender leaves out (version 3): no data and no end for them."""

    def settle(self) -> None:
        """Move past the files left out, to the next file that moves, and start its count."""
        while self.index in self.skip:
            self.index += 1
        self.moved = self.starts.get(self.index, 0)

    def add(self, count: int, who: str) -> None:
        if self.index >= len(self.sizes):
            raise ProtocolError(f"{who} file data after the last file")
        size = self.sizes[self.index]
        if size is not None and self.moved + count > size:
            raise ProtocolError(f"{who} more bytes than declared for a file")
        self.moved += count

    def end(self, index: int, who: str) -> None:
        if index != self.index or index >= len(self.sizes):
            raise ProtocolError(f"{who} the end of file {index} out of order")
        size = self.sizes[index]
        if size is not None and self.moved != size:
            raise ProtocolError(f"{who} {self.moved} bytes for a file declared as {size} bytes")
        self.index += 1
        self.settle()


class Peer:
    """One side of a transfer: validates and encodes outgoing, decodes and validates incoming.

    ``send(message)`` returns the frame to put on the wire; ``receive(frame)`` returns the
    message. Both raise :class:`ProtocolError` when the message is not allowed now.
    """

    def __init__(self, role: Role, compress: bool = False) -> None:
        self.role = role
        self.compress: tuple[str, ...] = (ZSTD,) if compress else ()
        """What this side offers in its ``hello``: compressed data frames it takes and sends."""
        self.packer: Packer | None = None
        """The sender's per-frame choice, once both hellos listed ``zstd``."""
        self.state = State.START
        self.entries: list[Entry] = []
        self.credit = 0
        """Sender: bytes it may still send. Receiver: bytes it has granted and not yet seen."""
        self.files = _FileCursor()
        self.have: dict[int, Held] = {}
        """What the receiver said it holds, by file index."""
        self.prefixed: frozenset[int] = frozenset()
        """Version 3: the files whose prefix the sender hashed (a resume may start only there)."""
        self.compared = False
        """Version 3: the receiver's ``holding`` went and the sender's ``resume`` answered it."""
        self.version = PROTOCOL_VERSION
        """The version both sides speak: the lower of the two hellos'."""
        self.peer_keepalive = 0
        """Seconds between the peer's keep-alives, from its hello (0: it sends none and must
        be sent none)."""
        self.ended_by: str | None = None
        """SEND if this side said the last word (it should wait for the peer to close), RECV
        if the peer did (this side may close at once), None while the conversation goes on."""

    def _set_state(self, new: State, direction: str) -> None:
        if new is not self.state:
            log.debug("%s: %s -> %s", self.role.value, self.state.value, new.value)
            self.state = new
            if new in TERMINAL_STATES:
                self.ended_by = direction

    @property
    def finished(self) -> bool:
        """True once the conversation has ended, well or badly."""
        return self.state in TERMINAL_STATES

    def hello(self) -> Hello:
        """This side's first message."""
        return Hello(compress=self.compress, keepalive=KEEPALIVE_INTERVAL)

    def send(self, message: Message) -> bytes:
        """Check ``message`` against the state and return its frame."""
        self._advance(SEND, message)
        if isinstance(message, Data) and self.packer is not None:
            packed = self.packer.pack(message.data)
            if packed is not None:
                return bytes((KIND_ZSTD,)) + packed
        return encode(message)

    def receive(self, frame: bytes) -> Message:
        """Parse and check one frame from the peer."""
        message = decode(frame, zstd=ZSTD in self.compress)
        self._advance(RECV, message)
        return message

    def _advance(self, direction: str, message: Message) -> None:
        if isinstance(message, KeepAlive):
            if self.state in (State.START, State.AWAIT_HELLO) and direction == RECV:
                raise ProtocolError("peer sent 'keepalive' before its hello")
            return  # any time after the hellos; it changes nothing
        if isinstance(message, Abort):
            if self.finished:
                raise ProtocolError("abort after the transfer ended")
            self._set_state(State.ABORTED, direction)
            return
        key = (self.role, self.state, direction, type(message))
        new = TRANSITIONS.get(key)
        if new is None:
            who = "peer sent" if direction == RECV else "tried to send"
            name = TYPE_NAMES.get(type(message), "data")
            raise ProtocolError(f"{who} '{name}' while {self.state.value}")
        self._account(direction, message)
        if isinstance(message, Offer) and message.more:
            new = self.state
        if isinstance(message, Resume) and message.prefixes and self.state is State.ACCEPTED:
            new = State.AWAIT_START if self.role is Role.SENDER else State.STARTING
        if isinstance(message, Accept) and self.version >= 3:
            new = State.TRANSFERRING  # the resume came before, with the holding
        self._set_state(new, direction)

    def _account(self, direction: str, message: Message) -> None:
        who = "peer sent" if direction == RECV else "tried to send"
        if isinstance(message, Hello) and direction == RECV:
            if message.version < OLDEST_VERSION:
                raise ProtocolError(
                    f"peer speaks protocol version {message.version}, this p2pcp speaks "
                    f"versions {OLDEST_VERSION} to {PROTOCOL_VERSION}: update the older side"
                )
            self.version = min(PROTOCOL_VERSION, message.version)
            self.peer_keepalive = message.keepalive
            if self.role is Role.SENDER and ZSTD in self.compress and ZSTD in message.compress:
                self.packer = Packer()
        elif isinstance(message, Offer):
            if len(self.entries) + len(message.entries) > MAX_OFFER_ENTRIES:
                raise ProtocolError(f"{who} an offer with too many entries")
            self.entries.extend(message.entries)
            if any(e.kind == "text" for e in self.entries) and len(self.entries) > 1:
                raise ProtocolError(f"{who} a text message together with other entries")
            self.files.sizes.extend(e.size for e in message.entries if e.carries_data)
        elif isinstance(message, Holding):
            if self.version < 3:
                raise ProtocolError(f"{who} 'holding' outside protocol version 3")
            if self.compared:
                raise ProtocolError(f"{who} 'holding' twice")
            self._check_have(message.have, who)
        elif isinstance(message, Accept | Credit):
            grant = message.credit if isinstance(message, Accept) else message.bytes
            self.credit += grant
            if isinstance(message, Accept):
                self._check_accept(message, who)
        elif isinstance(message, Resume):
            self._check_resume(message, who)
            if self.state is State.COMPARING:
                self.compared = True
                self.prefixed = frozenset(index for index, _, _ in message.prefixes)
        elif isinstance(message, Start):
            self._check_starts(message.offsets, who)
        elif isinstance(message, Data):
            count = len(message.data)
            if count > self.credit:
                raise ProtocolError(f"{who} more data than the receiver allowed")
            self.credit -= count
            self.files.add(count, who)
        elif isinstance(message, FileEnd):
            self.files.end(message.index, who)
        elif isinstance(message, Done):
            if self.files.index != len(self.files.sizes):
                raise ProtocolError(f"{who} 'done' before every file was sent")
        elif isinstance(message, Verified):
            if message.files != len(self.files.sizes):
                raise ProtocolError(f"{who} a verification of the wrong number of files")

    def _check_have(self, have: tuple[Held, ...], who: str) -> None:
        for held in have:
            size = self.files.sizes[held.index] if held.index < len(self.files.sizes) else None
            if size is None or held.size > size or held.index in self.have:
                raise ProtocolError(f"{who} a claim to hold bytes of a file it cannot hold")
            self.have[held.index] = held

    def _check_accept(self, message: Accept, who: str) -> None:
        if self.version < 3:
            if message.offsets or message.skip:
                raise ProtocolError(f"{who} resume offsets in 'accept' before protocol version 3")
            self._check_have(message.have, who)
            return
        if message.have:
            raise ProtocolError(f"{who} a 'have' list in 'accept' in protocol version 3")
        if any(offset and index not in self.prefixed for index, offset in message.offsets):
            raise ProtocolError(f"{who} a resume offset the sender gave no hash for")
        skip = frozenset(message.skip)
        starting = {index for index, offset in message.offsets if offset}
        if (
            len(skip) != len(message.skip)
            or skip & starting
            or any(index >= len(self.files.sizes) for index in skip)
        ):
            raise ProtocolError(f"{who} a malformed list of files to leave out")
        self.files.skip = skip
        self._check_starts(message.offsets, who)

    def _check_resume(self, message: Resume, who: str) -> None:
        if message.prefixes:
            if self.version < 2 or message.offsets:
                raise ProtocolError(f"{who} resume prefixes outside protocol version 2")
            for index, size, _ in message.prefixes:
                held = self.have.get(index)
                if held is None or size != held.size:
                    raise ProtocolError(f"{who} a prefix of a file the receiver did not offer")
            return
        self._check_starts(message.offsets, who)

    def _check_starts(self, offsets: tuple[tuple[int, int], ...], who: str) -> None:
        starts: dict[int, int] = {}
        for index, offset in offsets:
            held = self.have.get(index)
            if held is None or offset not in (0, held.size) or index in starts:
                raise ProtocolError(f"{who} a resume offset the receiver did not offer")
            starts[index] = offset
        self.files.starts = starts
        self.files.settle()

    @property
    def file_count(self) -> int:
        """Files in the offer so far."""
        return len(self.files.sizes)
