"""The progress bars of a transfer, for people at a terminal.

One bar while a single file moves, named after it; from the second file on, a "total" bar and a
bar for the current file. One definition of rate everywhere, on the bar and in the summary line:
the bytes that crossed the network divided by the seconds since data started to move (bytes
already there from an earlier run are not counted). The time left is the bytes left at that
rate. Each bar keeps to one line: names are cut in the middle to fit the terminal, and a bar
with nothing moving for STALLED_AFTER seconds says "stalled".
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TaskID
from rich.text import Text

from .units import human_size

STALLED_AFTER = 3.0
"""Seconds without progress after which a bar says "stalled" (keep-alives end the transfer
after 10 s of silence from the peer)."""


def middle(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (``abc…xyz``)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def rate(task: Task) -> float | None:
    """Bytes per second since the bar's data started to move (None before there is any)."""
    started: float | None = task.fields.get("started")
    updated: float | None = task.fields.get("updated")
    base: float = task.fields.get("base", 0)
    if started is None or updated is None or updated <= started:
        return None
    return (task.completed - base) / (updated - started)


class _NameColumn(ProgressColumn):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def render(self, task: Task) -> Text:
        return Text(middle(task.description, self.width).ljust(self.width), no_wrap=True)


class _RateColumn(ProgressColumn):
    """The rate (module docstring), or "stalled"; blank on the current-file bar."""

    def render(self, task: Task) -> Text:
        if task.fields.get("file_bar"):
            return Text("")
        updated = task.fields.get("updated")
        if not task.finished and updated is not None:
            if time.monotonic() - updated > STALLED_AFTER:
                return Text("stalled", style="bold yellow")
        speed = rate(task)
        return Text(f"{human_size(speed)}/s" if speed else "", style="progress.data.speed")


class _TimeColumn(ProgressColumn):
    """Time left at the rate; the time taken once done; blank where unknown."""

    def render(self, task: Task) -> Text:
        if task.fields.get("file_bar"):
            return Text("")
        speed = rate(task)
        if task.finished:
            seconds = task.finished_time or 0.0
        elif speed and task.total is not None:
            seconds = (task.total - task.completed) / speed
        else:
            return Text("")
        minutes, secs = divmod(int(seconds + 0.5), 60)
        return Text(f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}", style="progress.remaining")


class Bars:
    """The bars of one transfer on ``console``."""

    def __init__(self, console: Console, total: int | None, path: str, done: int) -> None:
        width = console.width
        self.name_width = max(12, min(30, width - 46))
        self.progress = Progress(
            _NameColumn(self.name_width),
            BarColumn(bar_width=None),
            DownloadColumn(binary_units=True),
            _RateColumn(),
            _TimeColumn(),
            console=console,
            expand=True,
        )
        now = time.monotonic()
        self.first_path = path
        self.overall: TaskID = self.progress.add_task(
            path, total=total, completed=done, started=now, updated=now, base=done
        )
        self.file: TaskID | None = None
        self.progress.start()

    def update(self, done: int, path: str, file_done: int, file_size: int | None) -> None:
        now = time.monotonic()
        if self.file is None and path != self.first_path:  # a second file: total + current
            self.progress.update(self.overall, description="total")
            self.file = self.progress.add_task(path, total=file_size, file_bar=True)
        self.progress.update(self.overall, completed=done, updated=now)
        if self.file is not None:
            self.progress.update(
                self.file, completed=file_done, total=file_size, description=path, updated=now
            )

    def stop(self) -> None:
        self.progress.stop()
