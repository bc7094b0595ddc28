"""Making, parsing and validating transfer codes (``<nameplate>-<word>-<word>``).

The nameplate is a short number chosen by the rendezvous server; it is the only part of the code
the server ever sees. The words are chosen locally from :data:`WORDS` (256 of them, so two words
carry 16 bits) and, together with the nameplate, form the PAKE password.
"""

from __future__ import annotations

import difflib
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


def suggest_word(word: str) -> str | None:
    """The code word closest to a mistyped ``word``, if one is close enough."""
    matches = difflib.get_close_matches(word, WORDS, n=1, cutoff=0.6)
    return matches[0] if matches else None


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
