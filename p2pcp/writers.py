"""Where received bytes go: :class:`FileWriter` writes into a temporary file beside the target
and renames it into place only after its SHA-256 matches; the others write to stdout, keep a text
message in memory, or stand for a file already complete here. All follow :class:`Writer`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import (
    LocalWriteError,
    RefusedError,
    TransferError,
    UnsafeOfferError,
)
from .escape import show
from .names import MAX_COMPONENT_BYTES
from .protocol import Entry

PART_SUFFIX = ".p2pcp-part"


@dataclass
class HeldLocal:
    """Bytes of an offered file already on disk here."""

    size: int
    """Leading bytes held."""
    sha256: str
    """Their hex SHA-256."""
    hasher: Any
    """The hash state after those bytes, to continue from."""
    complete: bool
    """True for a complete file under the final name, False for a partial."""


def held_file(name: str, dir_fd: int, size: int, complete: bool) -> HeldLocal | None:
    hasher = hash_prefix(name, size, dir_fd)
    return HeldLocal(size, hasher.hexdigest(), hasher, complete) if hasher is not None else None


def hash_prefix(path: str, size: int, dir_fd: int | None = None) -> Any | None:
    """The SHA-256 state after the first ``size`` bytes of ``path`` (None if it is shorter or
    unreadable). With ``dir_fd``, ``path`` is a name in that directory, never followed if it is
    a symlink."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if dir_fd is not None else 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError:
        return None
    hasher = hashlib.sha256()
    left = size
    try:
        while left:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                return None
            hasher.update(block)
            left -= len(block)
    except OSError:
        return None
    finally:
        os.close(fd)
    return hasher


def plain_partial(st: os.stat_result) -> bool:
    """A partial file this side may reopen: a regular file with one link, owned by this user.
    Anything else at a partial's name (a hard link to a file elsewhere, planted by another
    local user) is never written through."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid()


def part_name(name: str) -> str:
    """The temporary name a file is written under, beside its target."""
    candidate = f".{name}{PART_SUFFIX}"
    if len(candidate.encode("utf-8")) <= MAX_COMPONENT_BYTES:
        return candidate
    return f".{hashlib.sha256(name.encode('utf-8')).hexdigest()[:32]}{PART_SUFFIX}"


class FileWriter:
    """Writes one received file to a temporary name and moves it into place once verified."""

    may_block = False

    def __init__(
        self,
        entry: Entry,
        dir_fd: int,
        name: str,
        overwrite: bool,
        umask: int,
        start: HeldLocal | None = None,
        target: str | None = None,
        part: str | None = None,
        beside: bool = False,
    ) -> None:
        self.entry = entry
        self.size = 0
        self._dir = dir_fd
        self._name = target or name
        """The name it goes in under: the offered one, or ``target`` (``name (1).ext``)."""
        self.placed_as = "/".join((*entry.path.split("/")[:-1], self._name))
        self._part = part or part_name(name)
        self._offered = name
        self._beside = beside
        """A file that takes the name meanwhile is kept, and this one goes beside it."""
        self._overwrite = overwrite
        self._umask = umask
        self._hash = hashlib.sha256()
        # Resume after the verified prefix of a partial, or start the file afresh. A partial is
        # created new (O_EXCL: whatever was at its name is unlinked first, never opened) and
        # reopened only if it is still a plain file of ours (plain_partial). While written it
        # is locked (flock): another transfer into the same directory (listen, two devices at
        # once) then neither removes nor reuses it, but gets PartialBusy.
        offset = start.size if start is not None and not start.complete else 0
        try:
            if offset and start is not None:
                flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                self._fd: int | None = os.open(self._part, flags, dir_fd=dir_fd)
                _lock(self._fd, dir_fd, entry)
                if not plain_partial(os.fstat(self._fd)):
                    os.close(self._fd)
                    os.close(dir_fd)
                    raise UnsafeOfferError(
                        f"refusing to resume {show(entry.path)}: its partial file "
                        "changed into a link or another user's file"
                    )
                os.ftruncate(self._fd, offset)
                os.lseek(self._fd, offset, os.SEEK_SET)
                self._hash, self.size = start.hasher, offset
            else:
                _not_busy(self._part, dir_fd, entry)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._part, dir_fd=dir_fd)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                self._fd = os.open(self._part, flags, 0o600, dir_fd=dir_fd)
                _lock(self._fd, dir_fd, entry)
        except PartialBusy:
            os.close(dir_fd)
            raise
        except OSError as exc:
            os.close(dir_fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeOfferError(
                    f"refusing to write through a symlink at {show(entry.path)}"
                ) from None
            raise LocalWriteError(f"cannot write {show(entry.path)}: {exc.strerror}") from None

    def write(self, data: bytes) -> None:
        """Append ``data`` and hash it."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.abort()
            raise LocalWriteError(f"cannot write {show(self.entry.path)}: {exc.strerror}") from None
        self._hash.update(data)
        self.size += len(data)

    def finish(self, expected_sha256: str) -> str:
        """Verify the hash, then rename into place; remove the temporary file on any failure."""
        digest = self._hash.hexdigest()
        if digest != expected_sha256:
            self.abort()
            raise TransferError(
                f"{show(self.entry.path)} arrived corrupted (SHA-256 mismatch); removed"
            )
        assert self._fd is not None
        try:
            mode = 0o666 | (0o111 if self.entry.executable else 0)
            os.fchmod(self._fd, mode & ~self._umask)
            os.fsync(self._fd)
            if not self._still_ours():
                os.close(self._fd)
                self._fd = None
                self._close_dir()
                raise LocalWriteError(
                    f"the partial file of {show(self.entry.path)} was replaced during the "
                    "transfer; nothing was put in place"
                )
            self._move_into_place()  # under the lock still: nobody swaps the partial now
            os.close(self._fd)
            self._fd = None
        except OSError as exc:
            self.abort()
            if exc.errno == errno.EEXIST:
                raise RefusedError(
                    f"{show(self.entry.path)} appeared during the transfer; nothing was overwritten"
                ) from None
            raise LocalWriteError(f"cannot write {show(self.entry.path)}: {exc.strerror}") from None
        self._close_dir()
        return digest

    def _still_ours(self) -> bool:
        """Whether the partial's name still leads to the file we wrote."""
        assert self._fd is not None
        ours = os.fstat(self._fd)
        try:
            there = os.stat(self._part, dir_fd=self._dir, follow_symlinks=False)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

    def _move_into_place(self) -> None:
        if self._overwrite:
            os.replace(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            return
        # link() refuses an existing target atomically, so nothing that appeared meanwhile is lost.
        while True:
            try:
                os.link(
                    self._part,
                    self._name,
                    src_dir_fd=self._dir,
                    dst_dir_fd=self._dir,
                    follow_symlinks=False,
                )
            except FileExistsError:
                if not self._beside:
                    raise
                self._name = free_name(self._dir, self._offered)
                self.placed_as = "/".join((*self.entry.path.split("/")[:-1], self._name))
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                if os.path.lexists(os.path.join(f"/proc/self/fd/{self._dir}", self._name)):
                    raise FileExistsError(errno.EEXIST, "exists") from None
                os.rename(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
                return
            os.unlink(self._part, dir_fd=self._dir)
            return

    def abort(self) -> None:
        """Drop the temporary file (a no-op once the file is in place)."""
        if self._dir < 0:
            return
        with contextlib.suppress(OSError):  # unlinked while still ours (locked)
            if self._fd is not None:
                os.unlink(self._part, dir_fd=self._dir)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._close_dir()

    def suspend(self) -> None:
        """Stop, keeping the temporary file so a later run can resume it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1


def free_name(dir_fd: int, name: str) -> str:
    """The first of ``name (1).ext``, ``name (2).ext``, ... free in the directory (the way
    browsers and LocalSend keep both files); ``.ext`` is the last suffix, none for a dot file."""
    stem, ext = os.path.splitext(name)
    for number in range(1, 10_000):
        candidate = f"{stem} ({number}){ext}"
        while len(candidate.encode("utf-8")) > MAX_COMPONENT_BYTES and len(stem) > 1:
            stem = stem[:-1]
            candidate = f"{stem} ({number}){ext}"
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
    raise LocalWriteError(f"no free name beside {show(name)}: 9999 copies exist already")


class PartialBusy(LocalWriteError):
    """Another transfer is writing this file's partial right now."""


def _busy(entry: Entry) -> PartialBusy:
    return PartialBusy(
        f"another transfer is writing {show(entry.path)} here right now; try again when it ends"
    )


def _lock(fd: int, dir_fd: int, entry: Entry) -> None:
    """Lock our partial for as long as it is open (released by the kernel with the fd)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(entry) from None


def partial_busy(part: str, dir_fd: int) -> bool:
    """Whether another transfer is writing the partial file ``part`` right now."""
    try:
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False  # none (or not a plain file): nothing of anyone's to spare
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _not_busy(part: str, dir_fd: int, entry: Entry) -> None:
    """PartialBusy if a partial of that name is being written by another transfer."""
    if partial_busy(part, dir_fd):
        raise _busy(entry)


class ExistingFile:
    """A complete file already in place that the sender found identical: nothing to write."""

    may_block = False

    def __init__(self, entry: Entry, held: HeldLocal) -> None:
        self.entry = entry
        self.placed_as = entry.path
        self.size = held.size
        self._sha256 = held.sha256

    def write(self, data: bytes) -> None:
        """Never called: the protocol allows no data for a file resumed at its end."""
        raise AssertionError("no data for a complete file")

    def finish(self, expected_sha256: str) -> str:
        """Confirm the file in place is the one the sender has."""
        if expected_sha256 != self._sha256:
            raise TransferError(f"{show(self.entry.path)} in place differs from the sender's")
        return self._sha256

    def abort(self) -> None:
        """Nothing to undo: the file was there before."""

    def suspend(self) -> None:
        """Nothing to keep."""


class SkippedFile:
    """A file the receiver keeps its own different copy of, from a sender that sends it anyway
    (before protocol version 3): its bytes are read and dropped."""

    may_block = False

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.placed_as = entry.path
        self.size = 0

    def write(self, data: bytes) -> None:
        """Drop ``data``."""
        self.size += len(data)

    def finish(self, expected_sha256: str) -> str:
        """Nothing was written, so there is nothing to check."""
        return expected_sha256

    def abort(self) -> None:
        """Nothing to undo."""

    def suspend(self) -> None:
        """Nothing to keep."""


class StdoutWriter:
    """Streams the one received file to stdout, hashing it on the way.

    What reached stdout cannot be taken back: a hash mismatch at the end is reported as an
    error (exit 5) so that the consumer of the pipe can tell.
    """

    may_block = True

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.placed_as = entry.path
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Write ``data`` to stdout (may wait for the reader of the pipe)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(1, view) :]
        except BrokenPipeError:
            raise LocalWriteError("stdout was closed before the transfer ended") from None
        except OSError as exc:
            raise LocalWriteError(f"cannot write to stdout: {exc.strerror}") from None
        self._hash.update(data)
        self.size += len(data)

    def finish(self, expected_sha256: str) -> str:
        """Check the hash of what was written."""
        digest = self._hash.hexdigest()
        if digest != expected_sha256:
            raise TransferError("the data written to stdout is corrupted (SHA-256 mismatch)")
        return digest

    def abort(self) -> None:
        """Nothing to undo."""

    def suspend(self) -> None:
        """Nothing to keep: a stream cannot be resumed."""


class TextWriter:
    """Collects a text message (at most 1 MiB, enforced by the protocol) to show once verified."""

    may_block = False

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.placed_as = entry.path
        self.size = 0
        self._buffer = bytearray()
        self.text = ""
        """The verified message, once :meth:`finish` returned."""

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        self._buffer += data
        self.size += len(data)

    def finish(self, expected_sha256: str) -> str:
        """Verify the message and decode it (invalid UTF-8 is replaced, never trusted)."""
        digest = hashlib.sha256(self._buffer).hexdigest()
        if digest != expected_sha256:
            raise TransferError("the text message arrived corrupted (SHA-256 mismatch)")
        self.text = self._buffer.decode("utf-8", "replace")
        return digest

    def abort(self) -> None:
        """Nothing to undo."""

    def suspend(self) -> None:
        """Nothing to keep."""


class Writer(Protocol):
    """Where the bytes of one received file go."""

    entry: Entry
    """The offer's entry for the file."""
    placed_as: str
    """The path it goes in under (the entry's, or ``name (1).ext`` beside a different one)."""
    size: int
    """Bytes of the file written so far."""
    may_block: bool
    """Whether ``write`` may block (a pipe): then it runs in a worker thread."""

    def write(self, data: bytes) -> None:
        """Take the next bytes of the file."""

    def finish(self, expected_sha256: str) -> str:
        """Check the whole file against ``expected_sha256`` and keep it; the path it has."""

    def abort(self) -> None:
        """Give the file up, leaving nothing behind."""

    def suspend(self) -> None:
        """Stop, keeping what was written for a later resume."""
