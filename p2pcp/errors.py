"""The exception tree of p2pcp and the one table from error to exit code.

Every failure a user can meet is a :class:`P2pcpError` subclass carrying its exit code. The
CLI is the only place that turns one into a message and a process exit status. Errors the
local side caused (bad input, a full disk) are kept apart from errors the peer caused
(:class:`PeerError`: a hostile or broken sender, a peer that vanished) so that messages can
say whose fault it was.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, documented in the README."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    BAD_CODE = 3
    CONNECT = 4
    TRANSFER = 5
    REFUSED = 6
    INTERRUPTED = 130
    TERMINATED = 143


class P2pcpError(Exception):
    """Root of every error p2pcp reports to the user."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(P2pcpError):
    """The command line or its environment is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class CodeError(P2pcpError):
    """The code is wrong, unknown or already used (exit 3)."""

    exit_code = ExitCode.BAD_CODE


class ConnectError(P2pcpError):
    """Could not reach the server or the peer (exit 4)."""

    exit_code = ExitCode.CONNECT


class TransferError(P2pcpError):
    """The transfer failed after the peers connected (exit 5)."""

    exit_code = ExitCode.TRANSFER


class LocalWriteError(TransferError):
    """Writing received data failed on this machine (disk full, permissions)."""


class PeerError(TransferError):
    """The peer broke the protocol, sent bad data, or went away."""


class ProtocolError(PeerError):
    """A frame from the peer was malformed, unexpected or out of order."""


class UnsafeOfferError(PeerError):
    """The offer names a path that must not be written."""


class RefusedError(P2pcpError):
    """The transfer was declined, or would overwrite without consent (exit 6)."""

    exit_code = ExitCode.REFUSED


class ConflictDeclined(RefusedError):
    """The receiver has different files of the offered names and chose nothing to do with
    them: the sender keeps the code open for the receiver's next try."""


class Interrupted(P2pcpError):
    """The user interrupted the transfer (exit 130, or 143 for SIGTERM)."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted", *, signal_exit: ExitCode | None = None):
        super().__init__(message)
        if signal_exit is not None:
            self.exit_code = signal_exit
