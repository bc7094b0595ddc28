"""Making, parsing and validating transfer codes (``<nameplate>-<word>-<word>``).

The nameplate is a short number chosen by the rendezvous server; it is the only part of the code
the server ever sees. The words are chosen locally from :data:`WORDS` (256 of them, so two words
carry 16 bits) and, together with the nameplate, form the PAKE password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .errors import UsageError
from .wordlist import WORDS

WORD_COUNT = 2
_WORD_SET = frozenset(WORDS)
MAX_NAMEPLATE_DIGITS = 8


@dataclass(frozen=True)
class Code:
    """A parsed transfer code."""

    nameplate: str
    """The room number, sent to the server in clear."""
    words: tuple[str, ...]
    """The secret words, never sent anywhere."""

    def __str__(self) -> str:
        return "-".join((self.nameplate, *self.words))

    @property
    def password(self) -> bytes:
        """The PAKE password: the whole code, nameplate included."""
        return str(self).encode("ascii")


def make_code(nameplate: str, word_count: int = WORD_COUNT) -> Code:
    """Draw fresh secret words for ``nameplate`` from a CSPRNG."""
    check_nameplate(nameplate)
    return Code(nameplate, tuple(secrets.choice(WORDS) for _ in range(word_count)))


def check_nameplate(nameplate: str) -> None:
    """Raise :class:`UsageError` unless ``nameplate`` is a short decimal number."""
    if not (
        nameplate.isascii() and nameplate.isdigit() and 0 < len(nameplate) <= MAX_NAMEPLATE_DIGITS
    ):
        raise UsageError(f"the code must start with a number, like 7-{WORDS[0]}-{WORDS[1]}")


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): typos, with a swap of two
    neighbouring letters counted as one edit."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _shared_ends(a: str, b: str) -> int:
    """Letters ``a`` and ``b`` share at their start plus at their end."""
    head = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    rest_a, rest_b = a[head:][::-1], b[head:][::-1]
    tail = next(
        (i for i, (x, y) in enumerate(zip(rest_a, rest_b, strict=False)) if x != y),
        min(len(rest_a), len(rest_b)),
    )
    return head + tail


def suggest_word(word: str) -> str | None:
    """The code word closest to a mistyped ``word``, if one is close enough (at most two
    edits, or a word it begins); ties go to the one sharing more letters at its start and end,
    then to the first in the list. The page (``signal_server/web/p2pcp.js``) does the same,
    checked against ``tests/vectors/typos.json``."""
    best = min(WORDS, key=lambda w: (edit_distance(word, w), -_shared_ends(word, w)))
    if edit_distance(word, best) <= 2:
        return best
    starting = [w for w in WORDS if w.startswith(word)]
    return starting[0] if len(word) >= 3 and starting else None


def check_word(word: str) -> None:
    """Raise :class:`UsageError` naming the nearest word when ``word`` is not a code word."""
    if word in _WORD_SET:
        return
    shown = word.encode("ascii", "backslashreplace").decode("ascii")
    hint = suggest_word(word)
    message = f"'{shown}' is not a code word"
    raise UsageError(f"{message}: did you mean '{hint}'?" if hint else message)


def parse_code(text: str) -> Code:
    """Parse a code typed by a person: case and surrounding blanks do not matter.

    Every word is checked against the word list before anything is sent, so a typo never
    burns the one guess a code allows.
    """
    parts = [p for p in text.strip().lower().replace(" ", "-").split("-") if p]
    if not parts:
        raise UsageError("no code given")
    check_nameplate(parts[0])
    words = parts[1:]
    if len(words) != WORD_COUNT:
        raise UsageError(f"a code is a number and {WORD_COUNT} words, like 7-{WORDS[0]}-{WORDS[1]}")
    for word in words:
        check_word(word)
    return Code(parts[0], tuple(words))
