"""Yes/no questions on the terminal that never hold the process: the answer is read when stdin
has a line, inside the event loop, so Ctrl-C (which cancels the session) or the peer's cancel
ends the question at once. A thread blocked in ``input()`` would keep the process alive until
Enter (asyncio waits for its executor's threads at exit)."""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console

from .errors import UsageError

YES = frozenset({"y", "yes"})
NO = frozenset({"n", "no"})


async def ask_yes_no(console: Console, question: str, default: bool) -> bool:
    """Ask ``question`` (rich markup) until the answer is y, yes, n, no or empty (``default``).
    Cancelled, it ends the prompt's line, so what follows starts on a line of its own."""
    hint = "Y/n" if default else "y/N"
    try:
        while True:
            console.print(f"{question} [bold]\\[{hint}][/]: ", end="")
            answer = (await _line()).strip().lower()
            if not answer:
                return default
            if answer in YES or answer in NO:
                return answer in YES
            console.print("[red]Please answer y or n.[/]")
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
