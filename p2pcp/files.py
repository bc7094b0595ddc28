"""Files on disk: the sender's manifest and sources, the receiver's safe writing.

Sending: :func:`build_sources` turns the user's paths into offer entries (directories walked
recursively, symlinks and special files skipped with a notice) and :class:`FileReader` reads
and hashes each file. Receiving: :func:`validate_entries` checks every name of an offer before
anything is written, and :class:`OutputDir` writes beneath the chosen directory only, through
directory file descriptors opened with ``O_NOFOLLOW`` (never through a symlink), into a temporary
file beside each target that is renamed only after its SHA-256 matches.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import (
    LocalWriteError,
    P2pcpError,
    RefusedError,
    TransferError,
    UnsafeOfferError,
    UsageError,
)
from .protocol import MAX_TEXT_SIZE, Entry

PART_SUFFIX = ".p2pcp-part"
STDIN = "-"
_MAX_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 4096
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


# -- names ------------------------------------------------------------------------------------


def name_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative name to write, or None if it is."""
    if not path:
        return "an empty name"
    if path.startswith("/"):
        return "an absolute path"
    if "\\" in path:
        return "a backslash"
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        return "a path that is too long"
    for component in path.split("/"):
        problem = _component_problem(component)
        if problem:
            return problem
    return None


def _component_problem(part: str) -> str | None:
    if part == "":
        return "an empty path component"
    if part in (".", ".."):
        return f"a '{part}' component"
    for ch in part:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or ch in _BIDI_CONTROLS:
            return "a control character"
    if len(part) >= 2 and part[1] == ":" and part[0].isascii() and part[0].isalpha():
        return "a drive letter"
    if part[-1] in ". ":
        return "a trailing dot or space"
    if part.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_DEVICES:
        return "a reserved device name"
    if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        return "a name component that is too long"
    return None


def _fold(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def validate_entries(entries: Sequence[Entry]) -> None:
    """Raise :class:`UnsafeOfferError` unless every entry may be written as named.

    Besides each name on its own, the offer as a whole must not name one path twice (after
    Unicode NFC and case folding, so it behaves the same on every file system), nor a file
    where another entry needs a directory.
    """
    kinds: dict[str, str] = {}
    for entry in entries:
        problem = name_problem(entry.path)
        if problem:
            raise UnsafeOfferError(f"unsafe offer: {show(entry.path)} has {problem}")
        key = _fold(entry.path)
        if key in kinds:
            raise UnsafeOfferError(f"unsafe offer: {show(entry.path)} is named twice")
        kinds[key] = entry.kind
    for key in kinds:
        parent = key
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if kinds.get(parent) == "file":
                raise UnsafeOfferError(
                    f"unsafe offer: {show(parent)} is both a file and a directory"
                )


def show(text: str) -> str:
    """``text`` with every control, bidi and non-printable character escaped for a terminal."""
    out = []
    for ch in text:
        if ch.isprintable() and ch not in _BIDI_CONTROLS:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def show_text(text: str) -> str:
    """A received message made safe for a terminal, keeping its newlines and tabs."""
    return "\n".join(
        "\t".join(show(part) for part in line.split("\t")) for line in text.split("\n")
    )


# -- sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One offer entry and where its bytes come from."""

    entry: Entry
    """What the receiver is told."""
    local: str
    """The local path to read (a directory path for directory entries, ``-`` for stdin)."""
    inline: bytes | None = None
    """The bytes themselves, for a text message."""


def text_source(text: bytes) -> Source:
    """A text message to show on the receiver's side."""
    if len(text) > MAX_TEXT_SIZE:
        raise UsageError("a text message is at most 1 MiB: send a file instead")
    return Source(Entry("text", "text", len(text)), "", text)


def build_sources(
    paths: Sequence[str], notice: Callable[[str], None], stdin_name: str = "stdin"
) -> list[Source]:
    """The entries to offer for ``paths``, in transfer order (``-`` is stdin, as ``stdin_name``).

    Directories are walked recursively (empty ones included); symlinks are never followed and
    special files are skipped, each with a ``notice``. Bad arguments raise :class:`UsageError`.
    """
    sources: list[Source] = []
    if list(paths).count(STDIN) > 1:
        raise UsageError("stdin ('-') can be sent only once")
    for path in paths:
        if path == STDIN:
            if "/" in stdin_name:
                raise UsageError("--name is a file name, without '/'")
            sources.append(Source(Entry(stdin_name, "file", None), STDIN))
        else:
            sources.extend(_sources_for(path, notice))
    names: dict[str, str] = {}
    for source in sources:
        problem = name_problem(source.entry.path)
        if problem:
            raise UsageError(f"cannot send {show(source.local)}: its name has {problem}")
        key = _fold(source.entry.path)
        if key in names:
            raise UsageError(
                f"two sources would arrive as {show(source.entry.path)}: "
                f"{show(names[key])} and {show(source.local)}"
            )
        names[key] = source.local
    if not any(s.entry.kind == "file" for s in sources) and not sources:
        raise UsageError("nothing to send")
    return sources


def _sources_for(path: str, notice: Callable[[str], None]) -> Iterable[Source]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UsageError(f"no such file or directory: {show(path)}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {show(path)}: {exc.strerror}") from None
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    if not name:
        raise UsageError(f"cannot send {show(path)}: give a directory below the root")
    yield from _walk(path, name, st, notice)


def _walk(
    local: str, rel: str, st: os.stat_result, notice: Callable[[str], None]
) -> Iterable[Source]:
    if stat.S_ISLNK(st.st_mode):
        notice(f"skipped symlink {show(local)} (symlinks are not followed)")
    elif stat.S_ISREG(st.st_mode):
        if not os.access(local, os.R_OK):
            raise UsageError(f"cannot read {show(local)}: permission denied")
        executable = bool(st.st_mode & stat.S_IXUSR)
        yield Source(Entry(rel, "file", st.st_size, executable), local)
    elif stat.S_ISDIR(st.st_mode):
        yield Source(Entry(rel, "dir"), local)
        try:
            children = sorted(os.scandir(local), key=lambda e: e.name)
        except OSError as exc:
            raise UsageError(f"cannot read directory {show(local)}: {exc.strerror}") from None
        for child in children:
            yield from _walk(
                child.path, f"{rel}/{child.name}", child.stat(follow_symlinks=False), notice
            )
    else:
        notice(f"skipped {show(local)}: not a regular file or directory")


class FileReader:
    """Reads a source (a file's declared size, or a stream to its end) and hashes it."""

    def __init__(self, source: Source, start: tuple[int, Any] | None = None) -> None:
        """``start``: (offset, hash state after that many bytes) to resume after a verified
        prefix."""
        self.source = source
        self.size = source.entry.size
        """Declared size, or None for stdin (read to the end)."""
        self.done = 0
        self.may_block = source.local == STDIN
        """Reads may wait on another process: the caller should read from a thread."""
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        if source.inline is not None:
            self._file = io.BytesIO(source.inline)
        elif source.local != STDIN:
            try:
                self._file = open(source.local, "rb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise TransferError(f"cannot read {show(source.local)}: {exc.strerror}") from None
        if start is not None and start[0] and self._file is not None:
            self._file.seek(start[0])
            self.done, self._hash = start

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` next bytes; ``b""`` once the declared size (or the stream) ends."""
        if self._file is None:
            try:
                data = os.read(0, limit)
            except OSError as exc:
                raise TransferError(f"cannot read stdin: {exc.strerror}") from None
        else:
            want = limit if self.size is None else min(limit, self.size - self.done)
            if want <= 0:
                return b""
            data = self._file.read(want)
            if not data and self.size is not None:
                raise TransferError(f"{show(self.source.local)} shrank while it was being sent")
        self._hash.update(data)
        self.done += len(data)
        return data

    def finish(self) -> str:
        """Check the file did not grow and return its hex SHA-256."""
        if self._file is not None and self.size is not None and self._file.read(1):
            raise TransferError(f"{show(self.source.local)} grew while it was being sent")
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Release the file."""
        if self._file is not None:
            self._file.close()


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

    def free_bytes(self) -> int:
        """Free space available to this user on the output file system."""
        st = os.fstatvfs(self._root)
        return st.f_bavail * st.f_frsize

    def check(self, entries: Sequence[Entry], resume: bool = False) -> None:
        """Refuse the offer before anything is written: unsafe names, symlinks, conflicts, space.

        With ``resume``, an existing file of the offered size is not a conflict yet: it is
        reported as held, and refused later only if the sender's copy differs.
        """
        entries = [e for e in entries if e.kind != "text"]  # shown, never written
        validate_entries(entries)
        total = sum(e.size or 0 for e in entries if e.kind == "file")
        free = self.free_bytes()
        if total > free:
            raise LocalWriteError(
                f"not enough space in {show(self.path)}: the offer needs {total} bytes, "
                f"{free} are free"
            )
        for entry in entries:
            self._check_entry(entry, resume)

    def _check_entry(self, entry: Entry, resume: bool) -> None:
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
                elif entry.kind == "file" and not self.overwrite:
                    if resume and st.st_size == entry.size:
                        return
                    raise RefusedError(
                        f"{show(where)} already exists; nothing was overwritten "
                        "(pass --overwrite to replace it)"
                    )
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

    def open_file(self, entry: Entry, start: HeldLocal | None = None) -> FileWriter:
        """Start writing ``entry`` into its temporary file (after ``start``'s bytes, if any)."""
        fd, name = self._open_parent(entry.path, create=True)
        return FileWriter(entry, fd, name, self.overwrite, self._umask, start)

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
                if complete and st.st_size != entry.size:
                    continue
                size = min(st.st_size, entry.size or 0)
                if size:
                    return _hash_prefix(candidate, fd, size, complete)
            return None
        finally:
            os.close(fd)

    def stale_partials(self, days: float = 7, limit: int = 10_000) -> list[str]:
        """Partial files below the output directory older than ``days`` (``limit`` names read)."""
        cutoff = time.time() - days * 86400
        stale: list[str] = []
        seen = 0
        for root, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in names:
                seen += 1
                if seen > limit:
                    return stale
                path = os.path.join(root, name)
                if name.endswith(PART_SUFFIX) and os.lstat(path).st_mtime < cutoff:
                    stale.append(path)
        return stale


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


def _hash_prefix(name: str, dir_fd: int, size: int, complete: bool) -> HeldLocal | None:
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


def part_name(name: str) -> str:
    """The temporary name a file is written under, beside its target."""
    candidate = f".{name}{PART_SUFFIX}"
    if len(candidate.encode("utf-8")) <= _MAX_COMPONENT_BYTES:
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
    ) -> None:
        self.entry = entry
        self.size = 0
        self._dir = dir_fd
        self._name = name
        self._part = part_name(name)
        self._overwrite = overwrite
        self._umask = umask
        self._hash = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd: int | None = os.open(self._part, flags, 0o600, dir_fd=dir_fd)
            # Resume after the verified prefix of a partial, or start the file afresh.
            offset = start.size if start is not None and not start.complete else 0
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
            if start is not None and offset:
                self._hash, self.size = start.hasher, offset
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
            os.close(self._fd)
            self._fd = None
            self._move_into_place()
        except OSError as exc:
            self.abort()
            if exc.errno == errno.EEXIST:
                raise RefusedError(
                    f"{show(self.entry.path)} appeared during the transfer; nothing was overwritten"
                ) from None
            raise LocalWriteError(f"cannot write {show(self.entry.path)}: {exc.strerror}") from None
        self._close_dir()
        return digest

    def _move_into_place(self) -> None:
        if self._overwrite:
            os.replace(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            return
        # link() refuses an existing target atomically, so nothing that appeared meanwhile is lost.
        try:
            os.link(
                self._part,
                self._name,
                src_dir_fd=self._dir,
                dst_dir_fd=self._dir,
                follow_symlinks=False,
            )
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if os.path.lexists(os.path.join(f"/proc/self/fd/{self._dir}", self._name)):
                raise FileExistsError(errno.EEXIST, "exists") from None
            os.rename(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            return
        os.unlink(self._part, dir_fd=self._dir)

    def abort(self) -> None:
        """Drop the temporary file (a no-op once the file is in place)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir < 0:
            return
        try:
            os.unlink(self._part, dir_fd=self._dir)
        except OSError:
            pass
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


class ExistingFile:
    """A complete file already in place that the sender found identical: nothing to write."""

    may_block = False

    def __init__(self, entry: Entry, held: HeldLocal) -> None:
        self.entry = entry
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


class StdoutWriter:
    """Streams the one received file to stdout, hashing it on the way.

    What reached stdout cannot be taken back: a hash mismatch at the end is reported as an
    error (exit 5) so that the consumer of the pipe can tell.
    """

    may_block = True

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
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


class StdoutOutput:
    """``-o -``: the receiver takes exactly one file (or a text) and writes it to stdout."""

    path = "-"
    overwrite = False

    def check(self, entries: Sequence[Entry], resume: bool = False) -> None:
        """Refuse anything but a single file or text."""
        if len(entries) != 1 or not entries[0].carries_data:
            count = len(entries)
            raise RefusedError(
                f"-o - writes one file to stdout, but the offer has {count} entries "
                "(the sender can pipe a tar stream: tar c DIR | p2pcp send -)"
            )

    def free_bytes(self) -> int | None:
        """Unknown: stdout has no free space to speak of."""
        return None

    def make_dir(self, path: str) -> None:
        """Never needed: :meth:`check` refuses directories."""
        raise AssertionError("no directories on stdout")

    def open_file(self, entry: Entry, start: HeldLocal | None = None) -> StdoutWriter:
        """Stream the file to stdout (nothing is ever held: ``start`` is always None)."""
        return StdoutWriter(entry)

    def held(self, entries: Sequence[Entry]) -> dict[int, HeldLocal]:
        """Nothing: a stream to stdout cannot resume."""
        return {}

    def stale_partials(self) -> list[str]:
        """None: there is no directory."""
        return []

    def close(self) -> None:
        """Nothing to release."""


Writer = FileWriter | StdoutWriter | TextWriter | ExistingFile
Output = OutputDir | StdoutOutput
