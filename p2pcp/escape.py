"""The one escaping function: every string that comes from outside (the rendezvous server, an
mDNS announcement, the peer, a file name) passes through ``show`` before it reaches a terminal
or a ``--json`` line. ``ui.py`` applies it to every event and error it renders
(``events.escaped``), so a new event or message cannot forget it; modules that build messages
may call it earlier too (it is idempotent: what it returns is printable and unchanged by it)."""

from __future__ import annotations

import logging

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Characters that reorder the text around them (Trojan Source), printable or not."""


def show(text: str) -> str:
    """``text`` with every control, bidi and non-printable character escaped for a terminal:
    ESC becomes the four characters ``\\x1b``, a newline ``\\n``, U+202E ``\\u202e``."""
    if text.isprintable() and not BIDI_CONTROLS.intersection(text):
        return text  # the common case, at C speed
    out = []
    for ch in text:
        if ch.isprintable() and ch not in BIDI_CONTROLS:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def show_text(text: str) -> str:
    """A received message made safe for a terminal, keeping its newlines and tabs."""
    return "\n".join(
        "\t".join(show(part) for part in line.split("\t")) for line in text.split("\n")
    )


def show_all(value: object) -> object:
    """A JSON-like value (dicts, lists, strings, numbers) with every string in it shown."""
    if isinstance(value, str):
        return show(value)
    if isinstance(value, dict):
        return {show(str(k)): show_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [show_all(v) for v in value]
    return value


class ShownFormatter(logging.Formatter):
    """Log lines (``--debug``) with outside text in them escaped: each line through ``show``."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(show(line) for line in super().format(record).split("\n"))
