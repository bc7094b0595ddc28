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
from .files import show, show_text

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

    def __init__(
        self, verb: str, console: Console | None = None, quiet: bool = False, message: bool = False
    ) -> None:
        # soft_wrap: a line too long for the terminal wraps as text; rich never breaks it.
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verb = verb
        self.quiet = quiet
        self.message = message
        """The transfer is a text message (the sender knows up front, the receiver on arrival)."""
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._file: TaskID | None = None

    def emit(self, event: ev.Event) -> None:
        """Render one event (with ``quiet``, only the code and a received text)."""
        if self.quiet and not isinstance(event, ev.CodeReady | ev.TextReceived):
            return
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            handler(event)

    def error(self, exit_code: int, message: str) -> None:
        """Print the final error line."""
        self._stop()
        self.console.print(f"[bold red]error:[/] {escape(message)}")

    def _on_code(self, event: ev.CodeReady) -> None:
        if self.quiet:
            self.console.print(event.code)
            return
        self.console.print(f"Code: [bold]{event.code}[/]")
        self.console.print(
            f"On the other machine run: [bold]p2pcp receive --server {escape(event.server)} "
            f"{event.code}[/]",
        )
        self.console.print("Waiting for the receiver...")

    def _on_connected(self, event: ev.Connected) -> None:
        where = f" ({escape(event.peer)})" if event.peer else ""
        how = "through a relay" if event.route == "relay" else "directly"
        self.console.print(f"Connected {how} to the peer{where}")

    def _on_warning(self, event: ev.Notice) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(event.message)}")

    def _on_text(self, event: ev.TextReceived) -> None:
        # The message is the output: on stdout, with every control character but newline and
        # tab escaped.
        self.message = True
        text = show_text(event.text)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def _on_offer(self, event: ev.OfferReceived) -> None:
        if all(e.kind == "text" for e in event.entries):
            return
        names = [e.path for e in event.entries if "/" not in e.path][:TOP_NAMES]
        more = len([e for e in event.entries if "/" not in e.path]) - len(names)
        shown = ", ".join(_safe(n) for n in names) + (f" and {more} more" if more > 0 else "")
        files = "file" if event.files == 1 else "files"
        unknown = any(e.kind == "file" and e.size is None for e in event.entries)
        size = human_size(event.bytes)
        if unknown:
            size = f"{size} and a stream of unknown size" if event.bytes else "a stream"
        self.console.print(f"Offered {event.files} {files} ({size}): {shown}")

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

    def _on_resuming(self, event: ev.Resuming) -> None:
        total = f" of {human_size(event.total)}" if event.total is not None else ""
        self.console.print(f"Resuming: {human_size(event.bytes_skipped)}{total} already here")

    def _on_file_done(self, event: ev.FileDone) -> None:
        if not self.interactive and not self.message:
            self.console.print(
                f"{self.verb} {_safe(event.path)} ({human_size(event.bytes)})", soft_wrap=True
            )

    def _on_done(self, event: ev.Finished) -> None:
        self._stop()
        if self.message:
            self.console.print(f"Done: the message was {self.verb} and verified")
            return
        rate = event.bytes_transferred / event.seconds if event.seconds > 0 else 0.0
        files = "file" if event.files == 1 else "files"
        verified = "; the receiver verified every file" if self.verb == "sent" else ", all verified"
        if event.bytes_skipped:
            verified += f" ({human_size(event.bytes_skipped)} were already there)"
        self.console.print(
            f"Done: {self.verb} {event.files} {files}, {human_size(event.bytes_transferred)} in "
            f"{event.seconds:.1f} s ({human_size(rate)}/s){verified}"
        )
