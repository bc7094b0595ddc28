"""What a sender reads: :func:`build_sources` turns the user's paths into offer entries
(directories walked recursively, symlinks and special files skipped with a notice), and
:class:`FileReader` reads and hashes each file.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import (
    TransferError,
    UsageError,
)
from .escape import show
from .names import fold, name_problem
from .protocol import MAX_TEXT_SIZE, Entry

STDIN = "-"


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
        key = fold(source.entry.path)
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
