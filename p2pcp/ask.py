"""Yes/no questions on the terminal that never hold the process: the answer is read when stdin
has a line, inside the event loop, so Ctrl-C (which cancels the session) or the peer's cancel
ends the question at once. A thread blocked in ``input()`` would keep the process alive until
Enter (asyncio waits for its executor's threads at exit)."""

from __future__ import annotations

import asyncio
import sys
from typing import TypeVar

from rich.console import Console

from .errors import UsageError

YES = frozenset({"y", "yes"})
NO = frozenset({"n", "no"})
T = TypeVar("T")


async def ask_yes_no(console: Console, question: str, default: bool) -> bool:
    """Ask ``question`` (rich markup) until the answer is y, yes, n, no or empty (``default``).
    Cancelled, it ends the prompt's line, so what follows starts on a line of its own."""
    hint = "Y/n" if default else "y/N"
    answers = {word: word in YES for word in YES | NO}
    return await _ask(console, f"{question} [bold]\\[{hint}][/]: ", answers, default, "y or n")


async def ask_choice(console: Console, question: str, choices: dict[str, str]) -> str:
    """Ask ``question`` until the answer is one of ``choices`` (by its first letter or whole);
    return the choice. No default: an empty line asks again."""
    answers = {word: word for word in choices} | {word[0]: word for word in choices}
    hint = "/".join(word[0] for word in choices)
    listed = ", ".join(f"[bold]{word[0]}[/]{word[1:]} ({what})" for word, what in choices.items())
    prompt = f"{question} {listed} [bold]\\[{hint}][/]: "
    return await _ask(console, prompt, answers, None, " or ".join(choices))


async def _ask(
    console: Console, prompt: str, answers: dict[str, T], default: T | None, words: str
) -> T:
    try:
        while True:
            console.print(prompt, end="")
            answer = (await _line()).strip().lower()
            if not answer and default is not None:
                return default
            if answer in answers:
                return answers[answer]
            console.print(f"[red]Please answer {words}.[/]")
    except BaseException:
        console.print()  # the cursor was left after the question
        raise


async def _line() -> str:
    """The next line of stdin, read once the terminal has one (canonical mode: after Enter)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    line = sys.stdin.readline()
    if not line:
        raise UsageError("stdin closed before the question was answered")
    return line
