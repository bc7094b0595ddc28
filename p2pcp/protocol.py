"""The data-channel transfer protocol as a sans-I/O state machine.

This module owns the wire format of data-channel frames and the order in which messages may
appear. It takes frames in and gives frames out; it never awaits, reads files or looks at a
clock. :class:`Peer` keeps the state, checks every message (sent or received) against the one
transition table :data:`TRANSITIONS`, and does the byte accounting that protects both sides: a
sender never exceeds the receiver's credit, and a receiver rejects more (or fewer) bytes than
the offer declared. ``docs/protocol.md`` describes the same format for humans.

Frame layout: one kind byte, then the payload. ``0x00``: a control message, a UTF-8 JSON object
with a ``type`` field. ``0x01``: raw bytes of the file currently being sent. ``0x02``: the same,
as one zstd frame, only between peers whose ``hello`` both listed ``zstd``.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .compress import ZSTD, Packer, unpack
from .errors import ProtocolError

log = logging.getLogger(__name__)

PROTOCOL_NAME = "p2pcp"
PROTOCOL_VERSION = 1
KIND_CONTROL = 0x00
KIND_DATA = 0x01
KIND_ZSTD = 0x02
DATA_HEADER_SIZE = 1
MAX_OFFER_ENTRIES = 1_000_000
MAX_CONTROL_SIZE = 256 * 1024
MAX_DATA_SIZE = 256 * 1024
"""The most file bytes a compressed data frame may unpack to (no frame is larger)."""
MAX_FILE_SIZE = 1 << 62
MAX_TEXT_SIZE = 1 << 20
DATA_KINDS = frozenset({"file", "text"})


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
    ACCEPTED = "accepted"
    TRANSFERRING = "transferring"
    AWAIT_VERIFIED = "await-verified"
    VERIFYING = "verifying"
    DONE = "done"
    DECLINED = "declined"
    ABORTED = "aborted"


TERMINAL_STATES = frozenset({State.DONE, State.DECLINED, State.ABORTED})


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One item of an offer."""

    path: str
    """Relative path with ``/`` separators, as the sender names it (validated by the receiver)."""
    kind: str
    """``file``, ``dir``, or ``text`` (a message to show, not to write)."""
    size: int | None = None
    """Declared size of a file in bytes; None for a stream of unknown length or a directory."""
    executable: bool = False
    """Whether the receiver should set the executable bit on the file."""

    @property
    def carries_data(self) -> bool:
        """Whether data frames follow for this entry (files and text)."""
        return self.kind in DATA_KINDS


@dataclass(frozen=True)
class Hello:
    """First message on the channel from both sides."""

    version: int = PROTOCOL_VERSION
    """Protocol version the sender of this message speaks."""
    compress: tuple[str, ...] = ()
    """Compressed data frames this side takes and sends (``zstd``); empty for none."""


@dataclass(frozen=True)
class Offer:
    """What the sender proposes to send; split over several messages when large."""

    entries: tuple[Entry, ...]
    """Entries of this part, in transfer order."""
    more: bool = False
    """True when another Offer part follows."""


@dataclass(frozen=True)
class Held:
    """Bytes of one offered file the receiver already holds (a partial or a complete file)."""

    index: int
    """The file's index among the offer's files."""
    size: int
    """How many leading bytes it holds."""
    sha256: str
    """Hex SHA-256 of those bytes."""


@dataclass(frozen=True)
class Accept:
    """The receiver accepts the whole offer."""

    credit: int
    """Bytes of file data the sender may send before waiting for more credit."""
    have: tuple[Held, ...] = ()
    """What the receiver already holds, for resuming."""


@dataclass(frozen=True)
class Resume:
    """The sender's verdict on what the receiver holds, sent once, right after ``accept``."""

    offsets: tuple[tuple[int, int], ...] = ()
    """(file index, offset): the file's data starts at ``offset`` (the held size if the prefix
    matched the sender's file, else 0). Files not listed start at 0."""


@dataclass(frozen=True)
class Decline:
    """The receiver refuses the offer."""

    reason: str
    """``declined`` (by the user), ``refused`` (a file in place differs and overwrite is off),
    ``space`` (the output directory cannot take it) or ``unsafe`` (the offer breaks a rule)."""
    message: str = ""
    """Human-readable detail."""


@dataclass(frozen=True)
class Credit:
    """The receiver has written more data; the sender may send this many more bytes."""

    bytes: int
    """Additional bytes granted."""


@dataclass(frozen=True)
class Data:
    """A piece of the current file."""

    data: bytes
    """Raw file bytes."""


@dataclass(frozen=True)
class FileEnd:
    """The sender has sent all bytes of the current file."""

    index: int
    """Index of the file among the offer's files (directories not counted)."""
    sha256: str
    """Hex SHA-256 of the whole file."""


@dataclass(frozen=True)
class Done:
    """The sender has sent every file."""


@dataclass(frozen=True)
class Verified:
    """The receiver has written and verified every file."""

    files: int
    """Number of files verified."""


@dataclass(frozen=True)
class Abort:
    """Either side gives up; the other reports ``message``."""

    reason: str
    """``cancelled`` (by the user), ``refused`` (the receiver found a file in place that differs
    from the sender's) or ``error``."""
    message: str = ""
    """Human-readable detail."""


Message = (
    Hello | Offer | Accept | Resume | Decline | Credit | Data | FileEnd | Done | Verified | Abort
)

_TYPE_NAMES: dict[type[Any], str] = {
    Hello: "hello",
    Offer: "offer",
    Accept: "accept",
    Resume: "resume",
    Decline: "decline",
    Credit: "credit",
    FileEnd: "file_end",
    Done: "done",
    Verified: "verified",
    Abort: "abort",
}


# -- encoding ---------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """Serialize one message to a frame."""
    if isinstance(message, Data):
        return bytes((KIND_DATA,)) + message.data
    body: dict[str, Any] = {"type": _TYPE_NAMES[type(message)]}
    if isinstance(message, Hello):
        body.update(protocol=PROTOCOL_NAME, version=message.version)
        if message.compress:
            body.update(compress=list(message.compress))
    elif isinstance(message, Offer):
        body.update(entries=[_entry_json(e) for e in message.entries], more=message.more)
    elif isinstance(message, Accept):
        body.update(
            credit=message.credit,
            have=[{"index": h.index, "size": h.size, "sha256": h.sha256} for h in message.have],
        )
    elif isinstance(message, Resume):
        body.update(offsets=[list(pair) for pair in message.offsets])
    elif isinstance(message, Decline | Abort):
        body.update(reason=message.reason, message=message.message)
    elif isinstance(message, Credit):
        body.update(bytes=message.bytes)
    elif isinstance(message, FileEnd):
        body.update(index=message.index, sha256=message.sha256)
    elif isinstance(message, Verified):
        body.update(files=message.files)
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return bytes((KIND_CONTROL,)) + payload


def _entry_json(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": entry.path, "kind": entry.kind}
    if entry.kind == "file":
        out.update(size=entry.size, executable=entry.executable)
    elif entry.kind == "text":
        out.update(size=entry.size)
    return out


def decode(frame: bytes, zstd: bool = False) -> Message:
    """Parse one frame from the peer; raise :class:`ProtocolError` on anything malformed.
    ``zstd``: this side said it takes compressed data frames."""
    if not frame:
        raise ProtocolError("peer sent an empty frame")
    kind = frame[0]
    if kind == KIND_DATA:
        return Data(bytes(frame[1:]))
    if kind == KIND_ZSTD:
        if not zstd:
            raise ProtocolError("peer sent a compressed frame, which this side did not offer")
        return Data(unpack(bytes(frame[1:]), MAX_DATA_SIZE))
    if kind != KIND_CONTROL:
        raise ProtocolError(f"peer sent a frame of unknown kind {kind}")
    if len(frame) > MAX_CONTROL_SIZE:
        raise ProtocolError("peer sent an oversized control message")
    try:
        body = json.loads(bytes(frame[1:]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("peer sent a malformed control message") from exc
    if not isinstance(body, dict):
        raise ProtocolError("peer sent a control message that is not an object")
    return _from_json(body)


def _from_json(body: dict[str, Any]) -> Message:
    kind = body.get("type")
    if kind == "hello":
        if body.get("protocol") != PROTOCOL_NAME:
            raise ProtocolError("peer does not speak the p2pcp protocol")
        compress = body.get("compress", [])
        if not isinstance(compress, list) or not all(isinstance(c, str) for c in compress):
            raise ProtocolError("peer sent a malformed 'compress' list")
        return Hello(_int(body, "version"), tuple(compress))
    if kind == "offer":
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise ProtocolError("peer sent an offer without entries")
        return Offer(tuple(_entry(e) for e in entries), _bool(body, "more"))
    if kind == "accept":
        have = body.get("have", [])
        if not isinstance(have, list) or not all(isinstance(h, dict) for h in have):
            raise ProtocolError("peer sent a malformed 'have' list")
        held = tuple(Held(_int(h, "index"), _int(h, "size"), _digest(h)) for h in have)
        return Accept(_int(body, "credit"), held)
    if kind == "resume":
        offsets = body.get("offsets")
        if not isinstance(offsets, list) or not all(
            isinstance(o, list) and len(o) == 2 and all(type(v) is int and v >= 0 for v in o)
            for o in offsets
        ):
            raise ProtocolError("peer sent malformed resume offsets")
        return Resume(tuple((o[0], o[1]) for o in offsets))
    if kind == "decline":
        return Decline(_str(body, "reason"), _str(body, "message"))
    if kind == "credit":
        return Credit(_int(body, "bytes"))
    if kind == "file_end":
        return FileEnd(_int(body, "index"), _digest(body))
    if kind == "done":
        return Done()
    if kind == "verified":
        return Verified(_int(body, "files"))
    if kind == "abort":
        return Abort(_str(body, "reason"), _str(body, "message"))
    raise ProtocolError(f"peer sent an unknown message type {str(kind)[:40]!r}")


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise ProtocolError("peer sent a malformed offer entry")
    kind = _str(raw, "kind")
    if kind == "dir":
        return Entry(_str(raw, "path"), "dir")
    if kind == "text":
        text_size = _int(raw, "size")
        if text_size > MAX_TEXT_SIZE:
            raise ProtocolError("peer offered a text message larger than 1 MiB")
        return Entry(_str(raw, "path"), "text", text_size)
    if kind != "file":
        raise ProtocolError(f"peer offered an entry of unknown kind {kind[:20]!r}")
    size: int | None = None
    if raw.get("size") is not None:
        size = _int(raw, "size")
        if size > MAX_FILE_SIZE:
            raise ProtocolError("peer offered a file of impossible size")
    return Entry(_str(raw, "path"), "file", size, _bool(raw, "executable"))


def _digest(body: dict[str, Any]) -> str:
    digest = _str(body, "sha256")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ProtocolError("peer sent a malformed file hash")
    return digest


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if type(value) is not int or value < 0:
        raise ProtocolError(f"peer sent a message with a bad {key!r} field")
    return value


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"peer sent a message with a bad {key!r} field")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"peer sent a message with a bad {key!r} field")
    return value


# -- the state machine ------------------------------------------------------------------------

SEND, RECV = "send", "recv"
_S, _R = Role.SENDER, Role.RECEIVER

#: (role, state, direction, message type) -> next state. Abort is allowed from every
#: non-terminal state and handled apart; everything not listed here is a protocol error.
TRANSITIONS: dict[tuple[Role, State, str, type[Any]], State] = {
    (_S, State.START, SEND, Hello): State.AWAIT_HELLO,
    (_S, State.AWAIT_HELLO, RECV, Hello): State.READY,
    (_S, State.READY, SEND, Offer): State.AWAIT_ANSWER,  # READY again while ``more``
    (_S, State.AWAIT_ANSWER, RECV, Accept): State.ACCEPTED,
    (_S, State.ACCEPTED, SEND, Resume): State.TRANSFERRING,
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
    (_R, State.DECIDING, SEND, Accept): State.ACCEPTED,
    (_R, State.ACCEPTED, RECV, Resume): State.TRANSFERRING,
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
        self.moved = self.starts.get(self.index, 0)


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
        return Hello(compress=self.compress)

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
        if isinstance(message, Abort):
            if self.finished:
                raise ProtocolError("abort after the transfer ended")
            self._set_state(State.ABORTED, direction)
            return
        key = (self.role, self.state, direction, type(message))
        new = TRANSITIONS.get(key)
        if new is None:
            who = "peer sent" if direction == RECV else "tried to send"
            name = _TYPE_NAMES.get(type(message), "data")
            raise ProtocolError(f"{who} '{name}' while {self.state.value}")
        self._account(direction, message)
        if isinstance(message, Offer) and message.more:
            new = self.state
        self._set_state(new, direction)

    def _account(self, direction: str, message: Message) -> None:
        who = "peer sent" if direction == RECV else "tried to send"
        if isinstance(message, Hello) and direction == RECV:
            if message.version != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"peer speaks protocol version {message.version}, this p2pcp speaks "
                    f"version {PROTOCOL_VERSION}: update the older side"
                )
            if self.role is Role.SENDER and ZSTD in self.compress and ZSTD in message.compress:
                self.packer = Packer()
        elif isinstance(message, Offer):
            if len(self.entries) + len(message.entries) > MAX_OFFER_ENTRIES:
                raise ProtocolError(f"{who} an offer with too many entries")
            self.entries.extend(message.entries)
            if any(e.kind == "text" for e in self.entries) and len(self.entries) > 1:
                raise ProtocolError(f"{who} a text message together with other entries")
            self.files.sizes.extend(e.size for e in message.entries if e.carries_data)
        elif isinstance(message, Accept | Credit):
            grant = message.credit if isinstance(message, Accept) else message.bytes
            self.credit += grant
            if isinstance(message, Accept):
                self._check_have(message.have, who)
        elif isinstance(message, Resume):
            self._check_resume(message, who)
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

    def _check_resume(self, message: Resume, who: str) -> None:
        starts: dict[int, int] = {}
        for index, offset in message.offsets:
            held = self.have.get(index)
            if held is None or offset not in (0, held.size) or index in starts:
                raise ProtocolError(f"{who} a resume offset the receiver did not offer")
            starts[index] = offset
        self.files.starts = starts
        self.files.moved = starts.get(0, 0)

    @property
    def file_count(self) -> int:
        """Files in the offer so far."""
        return len(self.files.sizes)
