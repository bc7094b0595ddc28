"""The receiver's code: from the argument, ``P2PCP_CODE``, a pipe, or a prompt with Tab
completion of the code words (where Python has readline)."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.prompt import Prompt

from .code import Code, parse_code
from .errors import Interrupted, UsageError
from .wordlist import WORDS


def _complete_code_words() -> None:
    """Tab completion of code words at the prompt (where Python has readline)."""
    try:
        import readline
    except ImportError:  # pragma: no cover - Windows, or Python built without readline
        return

    def complete(text: str, state: int) -> str | None:
        # After the first word comes a hyphen: "8-apo" Tab gives "8-apollo-".
        first = readline.get_line_buffer()[: readline.get_begidx()].count("-") == 1
        matches = [w + ("-" if first else "") for w in WORDS if w.startswith(text.lower())]
        return matches[state] if state < len(matches) else None

    readline.set_completer_delims(" -")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")


def read_code(code: str | None, console: Console) -> Code:
    text = code or os.environ.get("P2PCP_CODE")
    if text:
        return parse_code(text)
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line.strip():
            raise UsageError("no code given: pass it as an argument, in P2PCP_CODE, or on stdin")
        return parse_code(line)
    _complete_code_words()
    while True:
        try:
            typed = Prompt.ask("Enter the code (Tab completes words)", console=console)
        except KeyboardInterrupt:
            console.print()  # end the prompt's line before the error
            raise Interrupted() from None
        except EOFError:
            console.print()
            raise UsageError("no code given: stdin closed at the prompt") from None
        try:
            return parse_code(typed)
        except UsageError as exc:
            console.print(f"[red]{exc.message}[/]")
