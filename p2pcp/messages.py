"""The messages of the data-channel transfer protocol and their wire format: frozen dataclasses,
and :func:`encode` / :func:`decode` between them and frames. Pure functions, no state (that is
``protocol.py``'s). ``docs/protocol.md`` describes the same format for humans.

Frame layout: one kind byte, then the payload. ``0x00``: a control message, a UTF-8 JSON object
with a ``type`` field. ``0x01``: raw bytes of the file currently being sent. ``0x02``: the same,
as one zstd frame, only between peers whose ``hello`` both listed ``zstd``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from .compress import unpack
from .errors import ProtocolError

log = logging.getLogger(__name__)


PROTOCOL_NAME = "p2pcp"
PROTOCOL_VERSION = 3
"""Version 3: the receiver learns before it asks which files are here already: it sends the
sizes it holds (``holding``) right after the offer, the sender answers with the hashes of its
own prefixes (``resume.prefixes``), and ``accept`` then says where each file's data starts and
which files the sender leaves out (``skip``). Version 2: the same sizes and prefixes after
``accept``, then ``start``. The receiver never sends a hash of its files since version 2.
Version 1 and 2 peers are still spoken to (see ``protocol.Peer.version``)."""
OLDEST_VERSION = 1
WIRE_VERSION = 1
"""What a hello's ``version`` field always says: p2pcp before revisions refuses any other
number, so a later revision goes in ``revision`` and both releases still talk."""
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
    keepalive: int = 0
    """Seconds between this side's keep-alives when it has nothing else to send (0: it sends
    none, and must not be sent any: an earlier p2pcp or the page before them)."""


@dataclass(frozen=True)
class KeepAlive:
    """Sent when this side has sent nothing else for a while, to a peer that announced
    keep-alives in its hello; in any state, and never progress (``patience.moves_on``)."""


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
    sha256: str = ""
    """Hex SHA-256 of those bytes: version 1 only; a version 2 receiver never sends one."""


@dataclass(frozen=True)
class Holding:
    """Version 3, receiver to sender, right after the last offer part and before the receiver
    asks its user: the sizes it holds of offered files (a partial, or a complete file of the
    offered size). The sender answers with ``resume`` and its prefixes' hashes."""

    have: tuple[Held, ...] = ()
    """What the receiver holds (sizes only)."""


@dataclass(frozen=True)
class Accept:
    """The receiver accepts the offer (all of it, but for ``skip``)."""

    credit: int
    """Bytes of file data the sender may send before waiting for more credit."""
    have: tuple[Held, ...] = ()
    """Versions 1 and 2: what the receiver already holds, for resuming."""
    offsets: tuple[tuple[int, int], ...] = ()
    """Version 3: (file index, offset) where the receiver's bytes have the hash the sender gave
    in its ``resume``: the file's data starts there. Files not listed start at 0."""
    skip: tuple[int, ...] = ()
    """Version 3: indices of files the sender does not send at all (the receiver keeps its own
    different file under that name)."""


@dataclass(frozen=True)
class Resume:
    """The sender's answer to what the receiver holds, sent once, right after ``accept``."""

    offsets: tuple[tuple[int, int], ...] = ()
    """Version 1: (file index, offset): the file's data starts at ``offset`` (the held size if
    the prefix matched the sender's file, else 0). Files not listed start at 0."""
    prefixes: tuple[tuple[int, int, str], ...] = ()
    """Version 2: (file index, size, hex SHA-256 of the sender's first ``size`` bytes of that
    file) for what the receiver holds; the receiver compares them with its own and answers
    with ``start``. Empty: every file starts at 0, and no ``start`` follows."""


@dataclass(frozen=True)
class Start:
    """Version 2, receiver to sender, after a ``resume`` with prefixes: where data starts."""

    offsets: tuple[tuple[int, int], ...] = ()
    """(file index, offset): the held size where the receiver's prefix matched the sender's
    hash, else 0. Files not listed start at 0."""


@dataclass(frozen=True)
class Decline:
    """The receiver refuses the offer."""

    reason: str
    """``declined`` (by the user), ``refused`` (a file in place differs and overwrite is off),
    ``conflict`` (version 3: files in place differ and the receiver chose nothing to do with
    them; the sender keeps the code open for another try), ``space`` (the output directory
    cannot take it) or ``unsafe`` (the offer breaks a rule)."""
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
    Hello
    | KeepAlive
    | Offer
    | Holding
    | Accept
    | Resume
    | Start
    | Decline
    | Credit
    | Data
    | FileEnd
    | Done
    | Verified
    | Abort
)

TYPE_NAMES: dict[type[Any], str] = {
    Hello: "hello",
    KeepAlive: "keepalive",
    Offer: "offer",
    Holding: "holding",
    Accept: "accept",
    Resume: "resume",
    Start: "start",
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
    body: dict[str, Any] = {"type": TYPE_NAMES[type(message)]}
    if isinstance(message, Hello):
        body.update(protocol=PROTOCOL_NAME, version=min(message.version, WIRE_VERSION))
        if message.version > WIRE_VERSION:
            body.update(revision=message.version)
        if message.compress:
            body.update(compress=list(message.compress))
        if message.keepalive:
            body.update(keepalive=message.keepalive)
    elif isinstance(message, Offer):
        body.update(entries=[_entry_json(e) for e in message.entries], more=message.more)
    elif isinstance(message, Holding):
        body.update(have=[_held_json(h) for h in message.have])
    elif isinstance(message, Accept):
        body.update(
            credit=message.credit,
            have=[_held_json(h) for h in message.have],
        )
        if message.offsets:
            body.update(offsets=[list(pair) for pair in message.offsets])
        if message.skip:
            body.update(skip=list(message.skip))
    elif isinstance(message, Resume):
        body.update(offsets=[list(pair) for pair in message.offsets])
        if message.prefixes:
            body.update(prefixes=[list(p) for p in message.prefixes])
    elif isinstance(message, Start):
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


def _held_json(held: Held) -> dict[str, Any]:
    out: dict[str, Any] = {"index": held.index, "size": held.size}
    if held.sha256:
        out.update(sha256=held.sha256)
    return out


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
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
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
        keepalive = _int(body, "keepalive") if "keepalive" in body else 0
        version = _int(body, "version")
        if "revision" in body:  # a later revision of version 1 (WIRE_VERSION)
            version = max(version, _int(body, "revision"))
        return Hello(version, tuple(compress), keepalive)
    if kind == "keepalive":
        return KeepAlive()
    if kind == "offer":
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise ProtocolError("peer sent an offer without entries")
        return Offer(tuple(_entry(e) for e in entries), _bool(body, "more"))
    if kind == "holding":
        return Holding(_have(body))
    if kind == "accept":
        skip = body.get("skip", [])
        if not isinstance(skip, list) or not all(type(i) is int and i >= 0 for i in skip):
            raise ProtocolError("peer sent a malformed 'skip' list")
        offsets = _offsets(body.get("offsets", []))
        return Accept(_int(body, "credit"), _have(body), offsets, tuple(skip))
    if kind in ("resume", "start"):
        offsets = _offsets(body.get("offsets", []))
        if kind == "start":
            return Start(offsets)
        prefixes = body.get("prefixes", [])
        if not isinstance(prefixes, list) or not all(
            isinstance(p, list) and len(p) == 3 and isinstance(p[2], str) for p in prefixes
        ):
            raise ProtocolError("peer sent malformed resume prefixes")
        return Resume(
            offsets,
            tuple((*_offsets([p[:2]])[0], _digest({"sha256": p[2]})) for p in prefixes),
        )
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


def _have(body: dict[str, Any]) -> tuple[Held, ...]:
    have = body.get("have", [])
    if not isinstance(have, list) or not all(isinstance(h, dict) for h in have):
        raise ProtocolError("peer sent a malformed 'have' list")
    return tuple(
        Held(_int(h, "index"), _int(h, "size"), _digest(h) if "sha256" in h else "") for h in have
    )


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


def _offsets(raw: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(o, list) and len(o) == 2 and all(type(v) is int and v >= 0 for v in o)
        for o in raw
    ):
        raise ProtocolError("peer sent malformed resume offsets")
    return tuple((o[0], o[1]) for o in raw)


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
