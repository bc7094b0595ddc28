"""Names in an offer: the checks every path passes before anything is written (no absolute
paths, no ``..``, no control or bidirectional characters, no device names, no collisions after
case folding and normalisation), and :func:`show`, which escapes a name from outside before it
reaches a terminal or a log.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .errors import (
    UnsafeOfferError,
)
from .escape import BIDI_CONTROLS, show
from .protocol import Entry

MAX_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 4096
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)


# -- names ------------------------------------------------------------------------------------

LOOKALIKE_SEPARATORS = frozenset(
    "\u2215\u2044\u29f8\u29f5\u2571\u2572\uff0f\uff3c\u2216\ufe68\u29f9\u2298\u27cb\u27cd"
)
"""Characters drawn like ``/`` or ``\\`` (DIVISION SLASH, FRACTION SLASH, FULLWIDTH SOLIDUS, ...):
in a name they are literal, but ``photos\u2215..\u2215.bashrc`` reads like a path."""
BLANKS = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u00a0\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
)
"""Printable characters that show as nothing or as a plain space (fillers, odd spaces)."""


def hidden(path: str) -> bool:
    """Whether any component of ``path`` is a dot entry (hidden by ``ls`` and file managers)."""
    return any(part.startswith(".") for part in path.split("/"))


def lookalike(path: str) -> bool:
    """Whether ``path`` holds a character that looks like a separator or like nothing."""
    return any(ch in LOOKALIKE_SEPARATORS or ch in BLANKS for ch in path)


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
        if category in ("Cc", "Cs") or ch in BIDI_CONTROLS:
            return "a control character"
    if len(part) >= 2 and part[1] == ":" and part[0].isascii() and part[0].isalpha():
        return "a drive letter"
    if part[-1] in ". ":
        return "a trailing dot or space"
    if part.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_DEVICES:
        return "a reserved device name"
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        return "a name component that is too long"
    return None


def fold(path: str) -> str:
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
        key = fold(entry.path)
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
