"""The exact versions of aiortc, aioice and pyOpenSSL our changes were written for, and the checks
that what runs is what they were written against.

Two checks, one cheap and one thorough. ``version_mismatches`` compares the installed versions
with :data:`PINNED` (pyproject.toml pins the same): every process runs it before substituting
anything. ``source_mismatches`` compares a fingerprint of the source of each aiortc and aioice
method we copied or override with the one recorded when the change was written: ``p2pcp
doctor`` and the tests run it, so a copy that no longer matches its original fails a test even
where someone installed another version past the pin.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata
from typing import Any

PINNED = {"aiortc": "1.16.0", "aioice": "0.13.0", "pyOpenSSL": "26.4.0"}
"""Distribution name -> the version our subclasses were written for (pyproject.toml pins these)."""


def installed(distribution: str) -> str | None:
    """The installed version of ``distribution`` (None if it is missing)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def version_mismatches(*distributions: str) -> list[str]:
    """One line per distribution whose installed version is not the pinned one."""
    lines = []
    for name in distributions:
        version = installed(name)
        if version != PINNED[name]:
            lines.append(f"{name} {version or 'missing'} installed, written for {PINNED[name]}")
    return lines


def fingerprint(function: Any) -> str:
    """The first 16 hex digits of the SHA-256 of ``function``'s source."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def source_mismatches(recorded: dict[str, tuple[Any, str]]) -> list[str]:
    """One line per method (name -> (the original function, its recorded fingerprint)) whose
    source is no longer the one our change was written against."""
    lines = []
    for name, (function, expected) in recorded.items():
        try:
            actual = fingerprint(function)
        except (OSError, TypeError):
            actual = "unreadable"
        if actual != expected:
            lines.append(f"{name} changed upstream ({actual}, written against {expected})")
    return lines
