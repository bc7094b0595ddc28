"""The two renderings of session events: rich text on stderr for people, NDJSON for scripts.

Everything human goes to stderr so that stdout stays clean for pipes and ``--json``. Names that
came from the peer are escaped (``files.show``) before they reach a terminal.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from . import events as ev
from .files import show

TOP_NAMES = 5


def human_size(count: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class _RateColumn(ProgressColumn):
    """Transfer rate in the same binary units as the sizes."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{human_size(speed)}/s" if speed else "?", style="progress.data.speed")


def _safe(text: str) -> str:
    return escape(show(text))


class JsonSink:
    """One JSON object per line on stdout, flushed as each event happens."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, event: ev.Event) -> None:
        """Write one event."""
        self._write(event.to_json())

    def error(self, exit_code: int, message: str) -> None:
        """Write the final error event."""
        self._write({"event": "error", "exit_code": exit_code, "message": message})

    def _write(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, ensure_ascii=True) + "\n")
        self.stream.flush()


class HumanSink:
    """Rich output on stderr: the code, the route, progress bars, and a summary line."""

    def __init__(self, verb: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.verb = verb
        self.interactive = self.console.is_terminal
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._file: TaskID | None = None

    def emit(self, event: ev.Event) -> None:
        """Render one event."""
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            handler(event)

    def error(self, exit_code: int, message: str) -> None:
        """Print the final error line."""
        self._stop()
        self.console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)

    def _on_code(self, event: ev.CodeReady) -> None:
        self.console.print(f"Code: [bold]{event.code}[/]")
        self.console.print(
            f"On the other machine run: [bold]p2pcp receive --server {escape(event.server)} "
            f"{event.code}[/]",
            soft_wrap=True,
        )
        self.console.print("Waiting for the receiver...")

    def _on_connected(self, event: ev.Connected) -> None:
        where = f" ({escape(event.peer)})" if event.peer else ""
        how = "through a relay" if event.route == "relay" else "directly"
        self.console.print(f"Connected {how} to the peer{where}")

    def _on_warning(self, event: ev.Notice) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(event.message)}", soft_wrap=True)

    def _on_offer(self, event: ev.OfferReceived) -> None:
        names = [e.path for e in event.entries if "/" not in e.path][:TOP_NAMES]
        more = len([e for e in event.entries if "/" not in e.path]) - len(names)
        shown = ", ".join(_safe(n) for n in names) + (f" and {more} more" if more > 0 else "")
        files = "file" if event.files == 1 else "files"
        self.console.print(
            f"Offered {event.files} {files} ({human_size(event.bytes)}): {shown}", soft_wrap=True
        )

    def _on_progress(self, event: ev.Progress) -> None:
        if not self.interactive:
            return
        if self._progress is None:
            self._start(event.total)
        assert self._progress is not None and self._overall is not None and self._file is not None
        self._progress.update(self._overall, completed=event.bytes)
        self._progress.update(
            self._file,
            completed=event.file_bytes,
            total=event.file_size,
            description=_safe(event.path)[-40:],
        )

    def _start(self, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._overall = self._progress.add_task("total", total=total)
        self._file = self._progress.add_task("", total=None)
        self._progress.start()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _on_file_done(self, event: ev.FileDone) -> None:
        if not self.interactive:
            self.console.print(
                f"{self.verb} {_safe(event.path)} ({human_size(event.bytes)})", soft_wrap=True
            )

    def _on_done(self, event: ev.Finished) -> None:
        self._stop()
        rate = event.bytes / event.seconds if event.seconds > 0 else 0.0
        files = "file" if event.files == 1 else "files"
        verified = "; the receiver verified every file" if self.verb == "sent" else ", all verified"
        self.console.print(
            f"Done: {self.verb} {event.files} {files}, {human_size(event.bytes)} in "
            f"{event.seconds:.1f} s ({human_size(rate)}/s){verified}"
        )
