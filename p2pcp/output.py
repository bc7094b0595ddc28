"""The receiver's output: :class:`OutputDir` writes beneath the chosen directory only, through
directory file descriptors opened with ``O_NOFOLLOW`` (never through a symlink), checks an offer
against what is there (conflicts, free space, partial files) before anything is written;
:class:`StdoutOutput` streams to stdout. Both follow :class:`Output`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Sequence
from typing import Protocol

from .errors import (
    LocalWriteError,
    P2pcpError,
    RefusedError,
    UnsafeOfferError,
    UsageError,
)
from .escape import show
from .names import validate_entries
from .protocol import Entry
from .writers import (
    PART_SUFFIX,
    FileWriter,
    HeldLocal,
    PartialBusy,
    StdoutWriter,
    Writer,
    free_name,
    held_file,
    part_name,
    partial_busy,
    plain_partial,
)

# -- receiving --------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputDir:
    """The receiver's output directory: checks an offer against it, then writes entries.

    Every path is opened component by component from the output directory's descriptor with
    ``O_NOFOLLOW``, so no symlink (already there or raced in) is ever written through.
    """

    keeps_partials = True
    """A broken transfer leaves partial files here to resume."""

    def __init__(self, path: str, overwrite: bool) -> None:
        self.path = path
        self.overwrite = overwrite
        try:
            self._root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UsageError(f"output directory {show(path)} does not exist") from None
        except NotADirectoryError:
            raise UsageError(f"output {show(path)} is not a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot open output directory {show(path)}: {exc.strerror}") from None
        self._umask = _umask()

    def close(self) -> None:
        """Release the directory descriptor."""
        os.close(self._root)

    def home_hidden(self, entries: Sequence[Entry]) -> list[str]:
        """The dot entries ``entries`` would create directly in the user's home directory (when
        the output directory is it), in offer order."""
        try:
            home = os.path.realpath(os.path.expanduser("~"))
            if os.path.realpath(self.path) != home:
                return []
        except OSError:
            return []
        tops = dict.fromkeys(e.path.split("/", 1)[0] for e in entries)
        return [top for top in tops if top.startswith(".")]

    def free_bytes(self) -> int:
        """Free space available to this user on the output file system."""
        st = os.fstatvfs(self._root)
        return st.f_bavail * st.f_frsize

    def check(self, entries: Sequence[Entry]) -> None:
        """Refuse the offer before anything is written: unsafe names, symlinks, something
        other than a regular file where a file goes, space. A regular file in place is no
        refusal: the receiver decides it per file (``existing``, ``held``)."""
        entries = [e for e in entries if e.kind != "text"]  # shown, never written
        validate_entries(entries)
        total = sum(e.size or 0 for e in entries if e.kind == "file")
        free = self.free_bytes()
        if total > free:
            raise LocalWriteError(
                f"not enough space in {show(self.path)}: the offer needs {total} bytes, "
                f"{free} are free"
            )
        self._check_writable()
        for entry in entries:
            self._check_entry(entry)

    def _check_writable(self) -> None:
        """Create and remove a probe file: a read-only or immutable directory, or a read-only
        file system, is refused before the user is asked, not after."""
        probe = f".p2pcp-probe-{secrets.token_hex(6)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=self._root)  # fmt: skip
        except OSError as exc:
            raise LocalWriteError(
                f"cannot write in the output directory {show(self.path)}: {exc.strerror}"
            ) from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe, dir_fd=self._root)

    def _check_entry(self, entry: Entry) -> None:
        parts = entry.path.split("/")
        fd = os.dup(self._root)
        try:
            for i, part in enumerate(parts):
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                where = "/".join(parts[: i + 1])
                last = i == len(parts) - 1
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeOfferError(
                        f"refusing to write through the symlink {show(where)} in the output dir"
                    )
                if not last:
                    if not stat.S_ISDIR(st.st_mode):
                        raise RefusedError(f"{show(where)} exists and is not a directory")
                    new = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = new
                elif entry.kind == "dir" and not stat.S_ISDIR(st.st_mode):
                    raise RefusedError(f"{show(where)} exists and is not a directory")
                elif entry.kind == "file" and not stat.S_ISREG(st.st_mode):
                    raise RefusedError(f"{show(where)} exists and is not a regular file")
                # A regular file in place is a conflict, decided per file (``existing``).
        finally:
            os.close(fd)

    def _open_parent(self, path: str, create: bool) -> tuple[int, str]:
        """A descriptor of ``path``'s parent directory (made if needed) and its last name."""
        *parents, name = path.split("/")
        fd = os.dup(self._root)
        for part in parents:
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                new = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                is_link = _is_symlink(part, fd)
                os.close(fd)
                if is_link:
                    raise UnsafeOfferError(
                        f"refusing to write through a symlink in {show(path)}"
                    ) from None
                raise LocalWriteError(f"cannot create {show(path)}: {exc.strerror}") from None
            os.close(fd)
            fd = new
        return fd, name

    def make_dir(self, path: str) -> None:
        """Create directory ``path`` (and its parents) unless it exists."""
        fd, name = self._open_parent(path, create=True)
        try:
            os.mkdir(name, 0o777, dir_fd=fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise RefusedError(f"{show(path)} exists and is not a directory") from None
        except OSError as exc:
            raise LocalWriteError(f"cannot create {show(path)}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def open_file(
        self, entry: Entry, start: HeldLocal | None = None, conflict: str = ""
    ) -> FileWriter:
        """Start writing ``entry`` into its temporary file (after ``start``'s bytes, if any).
        ``conflict`` says what becomes of a file in place: ``overwrite`` replaces it,
        ``rename`` puts the new one beside it as ``name (1).ext`` (and so does
        ``rename-if-taken`` for a file of the name that appears meanwhile); otherwise nothing
        in place is ever replaced."""
        fd, name = self._open_parent(entry.path, create=True)
        overwrite = self.overwrite or conflict == "overwrite"
        target = free_name(fd, name) if conflict == "rename" else None
        beside = conflict in ("rename", "rename-if-taken")
        try:
            return FileWriter(entry, fd, name, overwrite, self._umask, start, target, None, beside)
        except PartialBusy:
            if start is not None:
                raise
        # Another transfer writes this name right now (listen, two devices at once): keep
        # both, under the next free name and that name's own partial (never the other's).
        fd, name = self._open_parent(entry.path, create=True)
        target = free_name(fd, name)
        part = part_name(target)
        return FileWriter(entry, fd, name, overwrite, self._umask, None, target, part, True)

    def existing(self, entries: Sequence[Entry]) -> set[int]:
        """The indices (among the offer's files) of files whose name is taken here already."""
        found: set[int] = set()
        files = [e for e in entries if e.carries_data]
        for index, entry in enumerate(files):
            if entry.kind != "file":
                continue
            try:
                fd, name = self._open_parent(entry.path, create=False)
            except P2pcpError:
                continue
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
                found.add(index)
            except OSError:
                pass
            finally:
                os.close(fd)
        return found

    def held(self, entries: Sequence[Entry]) -> dict[int, HeldLocal]:
        """What this directory already holds of each offered file, by file index: a partial
        from an earlier run, or a complete file of the offered size. Hashes what it finds."""
        found: dict[int, HeldLocal] = {}
        index = -1
        for entry in entries:
            if not entry.carries_data:
                continue
            index += 1
            if entry.kind == "file" and entry.size:
                held = self._held_one(entry)
                if held is not None:
                    found[index] = held
        return found

    def _held_one(self, entry: Entry) -> HeldLocal | None:
        try:
            fd, name = self._open_parent(entry.path, create=False)
        except P2pcpError:
            return None
        try:
            for candidate, complete in ((name, True), (part_name(name), False)):
                try:
                    st = os.stat(candidate, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if not complete and not plain_partial(st):
                    continue  # a planted hard link or someone else's file: never resumed
                if not complete and partial_busy(candidate, fd):
                    continue  # another transfer writes it right now: not ours to resume
                if complete and st.st_size != entry.size:
                    continue
                size = min(st.st_size, entry.size or 0)
                if size:
                    return held_file(candidate, fd, size, complete)
            return None
        finally:
            os.close(fd)

    def stale_partials(self, days: float = 7, limit: int = 10_000) -> list[str]:
        """Partial files below the output directory older than ``days`` (``limit`` names read)."""
        cutoff = time.time() - days * 86400
        return [path for path, st in self.partials(limit) if st.st_mtime < cutoff]

    def partials(self, limit: int | None = None) -> list[tuple[str, os.stat_result]]:
        """Every partial file below the output directory (regular files named like one; no
        symlink followed), with its stat, after at most ``limit`` names read."""
        found: list[tuple[str, os.stat_result]] = []
        seen = 0
        for root, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in names:
                seen += 1
                if limit is not None and seen > limit:
                    return found
                path = os.path.join(root, name)
                if name.endswith(PART_SUFFIX):
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode):
                        found.append((path, st))
        return found


class StdoutOutput:
    """``-o -``: the receiver takes exactly one file (or a text) and writes it to stdout."""

    keeps_partials = False

    path = "-"
    overwrite = False

    def check(self, entries: Sequence[Entry]) -> None:
        """Refuse anything but a single file or text."""
        if len(entries) != 1 or not entries[0].carries_data:
            count = len(entries)
            raise RefusedError(
                f"-o - writes one file to stdout, but the offer has {count} entries "
                "(the sender can pipe a tar stream: tar c DIR | p2pcp send -)"
            )

    def home_hidden(self, entries: Sequence[Entry]) -> list[str]:
        """None: nothing is created on disk."""
        return []

    def free_bytes(self) -> int | None:
        """Unknown: stdout has no free space to speak of."""
        return None

    def make_dir(self, path: str) -> None:
        """Never needed: :meth:`check` refuses directories."""
        raise AssertionError("no directories on stdout")

    def open_file(
        self, entry: Entry, start: HeldLocal | None = None, conflict: str = ""
    ) -> StdoutWriter:
        """Stream the file to stdout (nothing is ever held or in place: ``start`` is always
        None and ``conflict`` empty)."""
        return StdoutWriter(entry)

    def held(self, entries: Sequence[Entry]) -> dict[int, HeldLocal]:
        """Nothing: a stream to stdout cannot resume."""
        return {}

    def existing(self, entries: Sequence[Entry]) -> set[int]:
        """Nothing: stdout holds no files."""
        return set()

    def stale_partials(self) -> list[str]:
        """None: there is no directory."""
        return []

    def close(self) -> None:
        """Nothing to release."""


class Output(Protocol):
    """Where a receiver puts what it is offered."""

    keeps_partials: bool
    """Whether a broken transfer leaves something here to resume."""

    overwrite: bool
    """Whether files in place may be replaced."""

    def check(self, entries: Sequence[Entry]) -> None:
        """Refuse an offer that cannot be written here, before anything is."""

    def home_hidden(self, entries: Sequence[Entry]) -> list[str]:
        """Dot entries the offer would create directly in the user's home directory."""

    def free_bytes(self) -> int | None:
        """Bytes free for the output (None: no limit known)."""

    def make_dir(self, path: str) -> None:
        """Create the directory ``path`` of the offer."""

    def open_file(self, entry: Entry, start: HeldLocal | None = None, conflict: str = "") -> Writer:
        """A writer for ``entry``, continuing ``start`` where it resumes; ``conflict`` says
        what becomes of a different file in place (``overwrite`` or ``rename``)."""

    def held(self, entries: Sequence[Entry]) -> dict[int, HeldLocal]:
        """What is already here of each file entry, by index."""

    def existing(self, entries: Sequence[Entry]) -> set[int]:
        """Indices of the offered files whose name is taken here."""

    def stale_partials(self) -> list[str]:
        """Partial files of earlier transfers old enough to mention."""

    def close(self) -> None:
        """Release what the output holds open."""
