"""The events a send or receive session emits, and the one sink interface that consumes them.

A session knows nothing of terminals or JSON: it calls ``sink.emit(event)``. The CLI picks the
sink (rich on stderr for people, NDJSON on stdout for scripts; see ``ui.py``). Each event's
``name`` is its ``"event"`` value in ``--json`` output and its fields are the JSON fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, cast

from .escape import show


@dataclass(frozen=True)
class Event:
    """Base of every session event."""

    name: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON object, ``event`` first."""
        return {"event": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CodeReady(Event):
    """The sender has a code for the receiver to type."""

    name: ClassVar[str] = "code"
    code: str
    """The full code, e.g. ``7-guitar-ocean``."""
    server: str | None
    """The rendezvous server URL, or None when the sender serves the LAN itself (mDNS)."""
    page: str | None = None
    """The server's browser page with the code filled in (``http(s)://HOST/#CODE``), or None
    when it serves none: a phone can receive there."""
    command: str = "receive"
    """What the other machine runs with the code: ``receive``, or ``pair`` for a pairing."""


@dataclass(frozen=True)
class Searching(Event):
    """With no server configured, the receiver looks for the sender on the local network."""

    name: ClassVar[str] = "searching"
    nameplate: str
    """The code's number, as announced by the sender."""


@dataclass(frozen=True)
class WaitingForSender(Event):
    """No sender holds the code yet; the receiver keeps asking (``--wait``)."""

    name: ClassVar[str] = "waiting"
    nameplate: str
    """The code's number."""
    seconds: float
    """How long the receiver keeps asking before it gives up (exit 3)."""


@dataclass(frozen=True)
class WaitingForDevice(Event):
    """``send --to``: the paired device holds no room yet; the sender keeps looking."""

    name: ClassVar[str] = "waiting_device"
    device: str
    """The device's name here."""
    seconds: float
    """How long the sender keeps looking before it gives up (exit 4)."""


@dataclass(frozen=True)
class Listening(Event):
    """``receive --from`` or ``listen``: waiting for these paired devices to send."""

    name: ClassVar[str] = "listening"
    devices: tuple[str, ...]
    """Their names here."""
    server: str | None
    """The rendezvous server, or None on the LAN (mDNS)."""


@dataclass(frozen=True)
class Incoming(Event):
    """``listen``: a paired device came and proved who it is; its policy decides the rest."""

    name: ClassVar[str] = "incoming"
    device: str
    """Its name here."""


@dataclass(frozen=True)
class Connected(Event):
    """The data channel is open."""

    name: ClassVar[str] = "connected"
    route: str
    """``direct`` or ``relay`` (the selected ICE pair goes through TURN)."""
    peer: str | None
    """The address of the peer's side of the selected ICE pair, if known."""


@dataclass(frozen=True)
class Verification(Event):
    """A short string derived from the session key: the same on both screens, or someone is in
    the middle."""

    name: ClassVar[str] = "verification"
    verification: str
    """E.g. ``3f-a0-11-9c-42``."""


@dataclass(frozen=True)
class AllSent(Event):
    """The sender has sent every byte and waits for the receiver to verify."""

    name: ClassVar[str] = "sent"


@dataclass(frozen=True)
class OfferEntry:
    """One entry of an offer as shown to the receiver."""

    path: str
    """Relative path, ``/``-separated."""
    kind: str
    """``file`` or ``dir``."""
    size: int | None
    """Bytes, or None for a stream of unknown length (and for directories)."""
    executable: bool = False
    """A file the sender marked executable (it is written with the executable bit)."""
    hidden: bool = False
    """Some component of the path starts with a dot."""
    lookalike: bool = False
    """The path holds a character drawn like a separator or like nothing (``names.lookalike``)."""
    status: str = ""
    """For a file: ``new``; ``identical`` (the same file is here: nothing moves); ``resumes``
    (``here`` bytes of it are here from an earlier run); ``differs`` (another file has its
    name here); ``exists`` (a file of the same size has its name here, compared once accepted:
    a sender before protocol version 3)."""
    here: int = 0
    """Bytes of it already here (``identical`` and ``resumes``)."""


@dataclass(frozen=True)
class OfferReceived(Event):
    """The receiver has been offered files."""

    name: ClassVar[str] = "offer"
    files: int
    """Number of files."""
    bytes: int
    """Total declared size of all files."""
    entries: tuple[OfferEntry, ...]
    """Every entry of the offer, in order."""
    free: int | None
    """Free bytes on the output file system (None when writing to stdout)."""
    home_hidden: tuple[str, ...] = ()
    """Dot entries the offer would create directly in the user's home directory (the output
    directory is the home directory): accepted only when confirmed on their own."""


@dataclass(frozen=True)
class Accepted(Event):
    """The receiver accepted; data is about to move."""

    name: ClassVar[str] = "accepted"


@dataclass(frozen=True)
class Progress(Event):
    """Bytes moved so far (rate-limited by the session)."""

    name: ClassVar[str] = "progress"
    bytes: int
    """File bytes sent or received so far in this run."""
    total: int | None
    """Total file bytes, None if a stream of unknown size is part of it."""
    path: str
    """The file being transferred."""
    file_bytes: int
    """Bytes of the current file so far."""
    file_size: int | None
    """Declared size of the current file."""


@dataclass(frozen=True)
class FileDone(Event):
    """One file was sent, or received and verified."""

    name: ClassVar[str] = "file_done"
    path: str
    """Relative path of the file."""
    bytes: int
    """Its size."""
    sha256: str
    """Hex SHA-256 of its content."""


@dataclass(frozen=True)
class TextReceived(Event):
    """A text message arrived and was verified."""

    name: ClassVar[str] = "text"
    text: str
    """The message (invalid UTF-8 replaced); shown escaped to people."""


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should know that is not an error (e.g. a skipped symlink)."""

    name: ClassVar[str] = "warning"
    message: str
    """One line of text."""


@dataclass(frozen=True)
class Reopened(Event):
    """The sender waits for a receiver again with the same code (the receiver refused over
    files that differ, and may run again with a choice)."""

    name: ClassVar[str] = "reopened"
    message: str
    """Why, in one line."""


@dataclass(frozen=True)
class Paired(Event):
    """Two devices are paired: this one stored the other's key under ``device``."""

    name: ClassVar[str] = "paired"
    device: str
    """What this device calls the other one (``send --to`` and ``receive --from`` take it)."""
    fingerprint: str
    """The pairing's fingerprint: the same on both screens."""
    key: str
    """The fingerprint of the other device's long-term key (``p2pcp devices`` lists it)."""
    policy: str
    """What ``p2pcp listen`` here does with its sends: ``ask``, ``accept`` or ``refuse``."""


@dataclass(frozen=True)
class Resuming(Event):
    """Part of the offer was already at the receiver and verified: it will not be sent again."""

    name: ClassVar[str] = "resuming"
    bytes_skipped: int
    """Bytes already present (partial prefixes and identical complete files)."""
    total: int | None
    """Total bytes of the offer, if known."""


@dataclass(frozen=True)
class Finished(Event):
    """The transfer succeeded: the receiver verified every file."""

    name: ClassVar[str] = "done"
    files: int
    """Files (and texts) in the offer, all verified."""
    bytes: int
    """Their total size."""
    seconds: float
    """Wall time from the receiver's acceptance (data starting to move) to the end."""
    bytes_transferred: int
    """File bytes that crossed the network in this run."""
    bytes_skipped: int
    """File bytes already present at the receiver and verified (resumed)."""


AnyEvent = (
    CodeReady
    | Searching
    | WaitingForSender
    | WaitingForDevice
    | Listening
    | Incoming
    | Connected
    | Verification
    | AllSent
    | OfferReceived
    | Accepted
    | Progress
    | FileDone
    | TextReceived
    | Notice
    | Reopened
    | Paired
    | Resuming
    | Finished
)
"""Every event a session emits: a renderer that leaves one out is a type error."""


E = TypeVar("E")


def escaped(event: E) -> E:
    """``event`` with every string in it passed through ``escape.show``, entries of an offer
    included. Both sinks render only what this returns. The one exception is the body of a text
    transfer (``TextReceived.text``): it is data, not a message, so ``--json`` carries it exactly
    (as JSON escapes in a pure-ASCII line) and the human sink shows it through ``show_text``."""
    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        return event
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, str):
            if isinstance(event, TextReceived) and field.name == "text":
                continue
            safe = show(value)
            if safe != value:
                changes[field.name] = safe
        elif isinstance(value, tuple):
            items = tuple(escaped(item) for item in value)
            if any(a is not b for a, b in zip(items, value, strict=True)):
                changes[field.name] = items
    return cast(E, dataclasses.replace(cast(Any, event), **changes)) if changes else event


class EventSink(Protocol):
    """Receives session events."""

    def emit(self, event: AnyEvent) -> None:
        """Handle one event."""
