"""The two renderings of session events: rich text on stderr for people, NDJSON for scripts.

Everything human goes to stderr so that stdout stays clean for pipes and ``--json``. Both sinks
escape every string of every event and error (``events.escaped``, ``escape.show``) before it
reaches a terminal or a JSON line: the server, mDNS, the peer and file names are outside input.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO, assert_never, cast

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from . import events as ev
from .bars import Bars
from .doctor import Report
from .escape import show, show_text
from .units import human_size

if TYPE_CHECKING:
    from .landoctor import LanReport  # imports zeroconf: only for doctor

TABLE_ROWS = 10


_MARKS = {
    "new": "new",
    "identical": "[green]identical: skipped[/]",
    "differs": "[yellow]differs from yours[/]",
    "exists": "[yellow]same size here: compared once accepted[/]",
}


def _mark(entry: ev.OfferEntry) -> str:
    """What is here of one offered file (``OfferEntry.status``), as the table's cell."""
    if entry.status == "resumes":
        return f"resumes: {human_size(entry.here)} here"
    return _MARKS.get(entry.status, "")


def _mark_counts(entries: Sequence[ev.OfferEntry]) -> str:
    """The marks counted over the whole offer: "2 new, 1 identical (skipped), ..."."""
    counts = Counter(e.status for e in entries if e.status)
    words = {
        "new": "new",
        "identical": "identical (skipped)",
        "resumes": "resume",
        "differs": "differ from yours",
        "exists": "of the same size here",
    }
    return ", ".join(f"{counts[s]} {w}" for s, w in words.items() if counts[s])


def _notes(entry: ev.OfferEntry) -> str:
    notes = [
        note
        for flag, note in (
            (entry.hidden, "hidden"),
            (entry.executable, "executable"),
            (entry.lookalike, "look-alike characters"),
        )
        if flag
    ]
    return ", ".join(notes)


def attention(entries: Sequence[ev.OfferEntry]) -> list[str]:
    """Lines naming every hidden entry (a hidden directory once, with what it holds), every
    executable file and every name with look-alike characters, however long the offer."""
    lines = []
    hidden: dict[str, int] = {}
    for entry in entries:
        if entry.hidden:
            parts = entry.path.split("/")
            top = next(i for i, part in enumerate(parts) if part.startswith("."))
            key = "/".join(parts[: top + 1])
            hidden[key] = hidden.get(key, 0) + (key != entry.path)
    if hidden:
        named = [f"{key}/ (and {n} inside)" if n else key for key, n in hidden.items()]
        lines.append(f"Hidden ({len(named)}): " + ", ".join(named))
    executables = [e.path for e in entries if e.executable]
    if executables:
        lines.append(f"Executable ({len(executables)}): " + ", ".join(executables))
    lookalikes = [e.path for e in entries if e.lookalike]
    if lookalikes:
        lines.append(
            f"Look-alike separators or blank characters ({len(lookalikes)}; written as one "
            "literal name each): " + ", ".join(lookalikes)
        )
    return lines


def _safe(text: str) -> str:
    return escape(show(text))


class JsonSink:
    """One JSON object per line on stdout, flushed as each event happens."""

    def __init__(self, stream: IO[str] | None = None, device: str | None = None) -> None:
        self.stream = stream or sys.stdout
        self.device = device
        """With ``listen``: the paired device whose transfer this sink reports, on each line."""

    def tagged(self, device: str) -> JsonSink:
        """This sink, for the events of one device's transfer."""
        return JsonSink(self.stream, device)

    def emit(self, event: ev.AnyEvent) -> None:
        """Write one event, every string in it escaped."""
        self._write(ev.escaped(event).to_json())

    def error(self, exit_code: int, message: str) -> None:
        """Write the final error event."""
        self._write({"event": "error", "exit_code": exit_code, "message": show(message)})

    def _write(self, obj: dict[str, Any]) -> None:
        if self.device is not None:
            obj["device"] = show(self.device)
        self.stream.write(json.dumps(obj, ensure_ascii=True) + "\n")
        self.stream.flush()


class HumanSink:
    """Rich output on stderr: the code, the route, progress bars, and a summary line.

    Spinners (waiting for the peer, waiting for verification) are transient: they vanish when
    the wait ends, so the finished screen holds only lasting lines.
    """

    def __init__(
        self,
        verb: str,
        console: Console | None = None,
        quiet: bool = False,
        message: bool = False,
        qr: bool = False,
        progress: bool = True,
    ) -> None:
        # At a terminal rich wraps long lines at word boundaries for its real width; elsewhere
        # (a pipe, a log file) it must not break lines at all.
        self.console = console or Console(stderr=True, highlight=False)
        self.console.soft_wrap = not self.console.is_terminal
        self.verb = verb
        self.quiet = quiet
        self.message = message
        """The transfer is a text message (the sender knows up front, the receiver on arrival)."""
        self.qr = qr
        self.interactive = self.console.is_terminal and not quiet and progress
        self._bars: Bars | None = None
        self._status: Status | None = None

    def emit(self, event: ev.AnyEvent) -> None:
        """Render one event (with ``quiet``, only the code and a received text), every string in
        it escaped."""
        event = ev.escaped(event)
        if self.quiet and not isinstance(event, ev.CodeReady | ev.TextReceived):
            return
        match event:
            case ev.CodeReady():
                self._on_code(event)
            case ev.Searching():
                self._on_searching(event)
            case ev.WaitingForSender():
                self._on_waiting(event)
            case ev.WaitingForDevice():
                self._wait(
                    f"Waiting for {event.device} to receive (p2pcp receive --from, or "
                    f"p2pcp listen there)..."
                )
            case ev.Incoming():
                self.pause()
                self.console.print(f"Incoming from [bold]{escape(event.device)}[/]")
            case ev.Listening():
                where = f"through {event.server}" if event.server else "on this network"
                self._wait(f"Waiting for {', '.join(event.devices)} to send, {where}...")
            case ev.Connected():
                self._on_connected(event)
            case ev.Verification():
                self._on_verification(event)
            case ev.AllSent():
                self._on_sent(event)
            case ev.OfferReceived():
                self._on_offer(event)
            case ev.Accepted():
                self._on_accepted(event)
            case ev.Progress():
                self._on_progress(event)
            case ev.FileDone():
                self._on_file_done(event)
            case ev.TextReceived():
                self._on_text(event)
            case ev.Notice():
                self._on_warning(event)
            case ev.Reopened():
                self._on_reopened(event)
            case ev.Paired():
                self._on_paired(event)
            case ev.Resuming():
                self._on_resuming(event)
            case ev.Finished():
                self._on_done(event)
            case _:
                assert_never(event)

    def error(self, exit_code: int, message: str) -> None:
        """Print the final error line."""
        self.pause()
        self.console.print(f"[bold red]error:[/] {_safe(message)}")

    def pause(self) -> None:
        """Stop any spinner or progress display (before a prompt, an error, the end)."""
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def waiting(self, text: str) -> None:
        """A spinner with ``text`` until the next thing happens (plain text off a terminal)."""
        self._wait(text)

    def _wait(self, text: str) -> None:
        self.pause()
        if self.interactive:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self.console.print(text)

    def _on_code(self, event: ev.CodeReady) -> None:
        if self.quiet:
            self.console.print(event.code)
            return
        server = f"--server {event.server} " if event.server else ""
        command = f"p2pcp {event.command} {server}{event.code}"
        self.console.print(f"Code: [bold]{event.code}[/]")
        self.console.print("On the other machine run:")
        self.console.print(f"  [bold]{escape(command)}[/]")
        if event.page:
            self.console.print(f"or open [bold]{escape(event.page)}[/] in a browser")
        if self.qr:
            import segno  # only for --qr: it costs 20 ms of start-up

            # A phone that scans it lands on the page ready to receive; without a page, the
            # command (for a phone with a terminal, or a copy).
            qr = segno.make(event.page or command, error="l")
            qr.terminal(out=cast(TextIO, self.console.file), compact=True)
        other = "other device" if event.command == "pair" else "receiver"
        self._wait(f"Waiting for the {other} to connect...")

    def _on_searching(self, event: ev.Searching) -> None:
        self._wait(f"Looking for sender {event.nameplate} on this network...")

    def _on_waiting(self, event: ev.WaitingForSender) -> None:
        self._wait(
            f"No sender holds code {event.nameplate} yet; asking again for up to "
            f"{event.seconds:g} s..."
        )

    def _on_verification(self, event: ev.Verification) -> None:
        self.pause()
        self.console.print(
            f"Verification: [bold]{event.verification}[/] (same on the other screen)"
        )

    def _on_connected(self, event: ev.Connected) -> None:
        self.pause()
        if event.route == "relay":
            self.console.print(f"Connected through the relay {escape(event.peer or '')}")
        else:
            where = f" to {escape(event.peer.rsplit(':', 1)[0])}" if event.peer else ""
            self.console.print(f"Connected directly{where}")
        if self.verb == "sent":
            self._wait("Waiting for the receiver to accept...")

    def _on_reopened(self, event: ev.Reopened) -> None:
        self.pause()
        self.console.print(f"[yellow]{_safe(event.message)}[/]")
        self._wait("Waiting for the receiver to connect...")

    def _on_paired(self, event: ev.Paired) -> None:
        self.pause()
        self.console.print(
            f"Paired with [bold]{escape(event.device)}[/] (fingerprint {event.fingerprint}). "
            f"Send to it with: [bold]p2pcp send --to {escape(event.device)} FILE[/]"
        )

    def _on_warning(self, event: ev.Notice) -> None:
        self.console.print(f"[yellow]warning:[/] {_safe(event.message)}")

    def _on_text(self, event: ev.TextReceived) -> None:
        # The message is the output: on stdout, with every control character but newline and
        # tab escaped.
        self.message = True
        text = show_text(event.text)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def _on_offer(self, event: ev.OfferReceived) -> None:
        if all(e.kind == "text" for e in event.entries):
            self.message = True  # shown when it arrives; no table, no bars
            return
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("offered", overflow="fold")
        table.add_column("size", justify="right", no_wrap=True)
        marked = any(e.status not in ("", "new") for e in event.entries)
        if marked:
            table.add_column("here", no_wrap=True)
        flagged = any(_notes(e) for e in event.entries)
        if flagged:
            table.add_column("note", style="yellow")
        for entry in event.entries[:TABLE_ROWS]:
            size = (
                "dir"
                if entry.kind == "dir"
                else ("stream" if entry.size is None else human_size(entry.size))
            )
            table.add_row(
                _safe(entry.path),
                size,
                *([_mark(entry)] if marked else []),
                *([_notes(entry)] if flagged else []),
            )
        rest = len(event.entries) - TABLE_ROWS
        if rest > 0:
            table.add_row(f"... and {rest} more", "", *[""] * (marked + flagged))
        self.console.print(table)
        # Whatever the table cut, what could hide a trap is named in full.
        for line in attention(event.entries):
            self.console.print(f"[yellow]{_safe(line)}[/]")
        files = "file" if event.files == 1 else "files"
        streams = any(e.size is None and e.kind != "dir" for e in event.entries)
        size = "size unknown" if streams else f"{human_size(event.bytes)} in all"
        line = f"{event.files} {files}, {size}"
        if event.free is not None:
            line += f"; {human_size(event.free)} free on this disk"
        self.console.print(line)
        if marked:  # whatever the table cut, the counts are whole
            self.console.print(_mark_counts(event.entries))

    def _on_accepted(self, event: ev.Accepted) -> None:
        self.pause()

    def _on_progress(self, event: ev.Progress) -> None:
        if not self.interactive or self.message:
            return  # a text message is shown, not measured
        path = _safe(event.path)
        if self._bars is None:
            self.pause()  # a spinner (waiting for the peer) gives way to the bars
            self._bars = Bars(self.console, event.total, path, event.bytes - event.file_bytes)
        self._bars.update(event.bytes, path, event.file_bytes, event.file_size)

    def _on_resuming(self, event: ev.Resuming) -> None:
        total = f" of {human_size(event.total)}" if event.total is not None else ""
        self.console.print(f"Resuming: {human_size(event.bytes_skipped)}{total} already here")

    def _on_file_done(self, event: ev.FileDone) -> None:
        if not self.interactive and not self.message:
            self.console.print(f"{self.verb} {_safe(event.path)} ({human_size(event.bytes)})")

    def _on_sent(self, event: ev.AllSent) -> None:
        if self.message:
            return
        self.pause()
        self.console.print("Sent; waiting for the receiver to verify")
        self._wait("Waiting for the receiver to verify...")

    def _on_done(self, event: ev.Finished) -> None:
        self.pause()
        if self.message:
            self.console.print(f"Done: the message was {self.verb} and verified")
            return
        files = "file" if event.files == 1 else "files"
        verified = "; the receiver verified every file" if self.verb == "sent" else ", all verified"
        if event.bytes_skipped:
            verified += f" ({human_size(event.bytes_skipped)} were already there)"
        if not event.bytes_transferred:  # all there already: nothing moved, no rate to speak of
            self.console.print(f"Done: {event.files} {files}, nothing needed to move{verified}")
            return
        # The rate of bars.py: bytes that crossed the network over the seconds they took.
        rate = event.bytes_transferred / event.seconds if event.seconds > 0 else 0.0
        speed = f" ({human_size(rate)}/s)" if event.seconds >= 0.05 else ""
        self.console.print(
            f"Done: {self.verb} {event.files} {files}, {human_size(event.bytes_transferred)} in "
            f"{event.seconds:.1f} s{speed}{verified}"
        )


def show_report(report: Report, console: Console) -> None:
    """``p2pcp doctor``'s findings as a table, then the verdict and advice."""
    table = Table(title="p2pcp doctor", title_justify="left", show_header=True)
    table.add_column("check")
    table.add_column("server")
    table.add_column("result")
    server = report.server
    table.add_row("rendezvous", _safe(server["url"]), f"[green]ok[/] ({server['seconds']} s)")
    for answer in report.stun:
        seen = f"sees us as {_safe(str(answer.mapped))}" if answer.mapped else "[red]no answer[/]"
        table.add_row("STUN", _safe(answer.url), seen)
    for turn in report.turn:
        result = (
            f"[green]relay at {_safe(str(turn.relayed))}[/]"
            if turn.ok
            else f"[red]{_safe(turn.error or '')}[/]"
        )
        table.add_row(f"TURN ({turn.transport})", _safe(turn.url), result)
    for change in report.stack:
        state = "[green]in force[/]" if change.in_force else f"[red]{_safe(change.why_not)}[/]"
        table.add_row("aiortc change", change.name, state)
    console.print(table)
    console.print(f"NAT: [bold]{report.nat}[/]   direct connections: [bold]{report.direct}[/]")
    for line in report.advice:
        console.print(f"- {_safe(line)}")


def show_lan_report(report: LanReport, console: Console) -> None:
    """``p2pcp doctor`` without a server: each LAN check, then the advice."""
    table = Table(title="p2pcp doctor: LAN mode", title_justify="left", show_header=True)
    table.add_column("check")
    table.add_column("result")
    for step in report.steps:
        mark = "[green]ok[/]" if step.ok else "[red]failed[/]"
        table.add_row(step.name, f"{mark} {_safe(step.detail)}")
    console.print(table)
    for line in report.advice:
        console.print(f"- {_safe(line)}")
