"""What a receiver does with each offered file, given what its output directory holds: pure
functions from what is here (partials, files in place, the sender's prefix hashes) to a mark
per file for the offer table, and from the user's choice for files that differ to where each
file's data starts and which files the sender leaves out."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from .writers import HeldLocal

CHOICES = ("overwrite", "skip", "rename")
"""What may become of a different file in place: replaced, kept (the offered one is not
received), or kept beside the new one, which goes in as ``name (1).ext``."""

NEW, IDENTICAL, RESUMES, DIFFERS, EXISTS = "new", "identical", "resumes", "differs", "exists"
"""A file's mark (``events.OfferEntry.status``)."""


def differ_here(count: int) -> str:
    """``1 file here differs`` / ``N files here differ``: how the prompt and the refusal
    name the files that differ."""
    return "1 file here differs" if count == 1 else f"{count} files here differ"


def matching(held: Mapping[int, HeldLocal], prefixes: tuple[tuple[int, int, str], ...]) -> set[int]:
    """The held files whose bytes have the hash the sender gave for its prefix of that size."""
    theirs = {index: (size, sha) for index, size, sha in prefixes}
    return {i for i, h in held.items() if theirs.get(i) == (h.size, h.sha256)}


def statuses(
    files: int, held: Mapping[int, HeldLocal], existing: Set[int], matched: Set[int] | None
) -> list[str]:
    """The mark of each of ``files`` offered files. ``held``: what is here of each (partial or
    complete file of the offered size), ``existing``: files whose name is taken here,
    ``matched``: the held ones the sender's hashes confirmed (None: not known yet, before
    protocol version 3)."""
    marks = []
    for index in range(files):
        here = held.get(index)
        known = matched is None or index in matched
        if here is not None and here.complete:
            marks.append(EXISTS if matched is None else IDENTICAL if known else DIFFERS)
        elif index in existing:
            marks.append(DIFFERS)
        elif here is not None and known:
            marks.append(RESUMES)
        else:
            marks.append(NEW)
    return marks


@dataclass(frozen=True)
class Plan:
    """What the receiver answers, file by file (protocol version 3)."""

    offsets: dict[int, int] = field(default_factory=dict)
    """Where each file's data starts: its size for an identical file, the partial's size for
    one that resumes."""
    skip: frozenset[int] = frozenset()
    """Files the sender leaves out: a different file in place is kept."""
    conflict: dict[int, str] = field(default_factory=dict)
    """``overwrite`` or ``rename`` for each file written over or beside a different one."""


def plan(marks: list[str], held: Mapping[int, HeldLocal], choice: str) -> Plan:
    """The answer for ``marks`` (every held file matched), with ``choice`` (one of
    :data:`CHOICES`, or empty when nothing differs) for the files that differ."""
    offsets: dict[int, int] = {}
    skip: set[int] = set()
    conflict: dict[int, str] = {}
    for index, mark in enumerate(marks):
        here = held.get(index)
        if mark == DIFFERS and choice == "skip":
            skip.add(index)
            continue
        if mark == DIFFERS:
            conflict[index] = choice
        if here is not None and not (mark == DIFFERS and here.complete):
            offsets[index] = here.size  # identical, or a partial that continues
    return Plan(offsets, frozenset(skip), conflict)
