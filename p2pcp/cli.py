"""The ``p2pcp`` command line: parses options, picks the output mode, runs one session.

This is the one place where an exception becomes a message and an exit code (see
``errors.ExitCode``); no protocol logic lives here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__, config, session
from .ask import ask_yes_no
from .clirun import (
    CA_HELP,
    ICE_HELP,
    INSECURE_HELP,
    NO_PROGRESS,
    SERVER_HELP,
    Sink,
    effective_settings,
    fail,
    make_sink,
    parse_seconds,
    run_session,
    setup_logging,
)
from .code import parse_code
from .codeprompt import read_code
from .configcli import config_app
from .consent import Consent
from .devicescli import LISTEN_EPILOG, devices_app, listen_command, pair_command, pairing_for
from .doctor import diagnose
from .errors import (
    ConnectError,
    P2pcpError,
    UsageError,
)
from .escape import show, show_all
from .partials import partials
from .protocol import MAX_TEXT_SIZE
from .ui import HumanSink, show_lan_report, show_report

app = typer.Typer(
    name="p2pcp",
    help="Copy files directly between two machines over an encrypted WebRTC data channel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"p2pcp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Copy files directly between two machines."""


VERIFY_HELP = "Show a verification string on both screens and ask to confirm they match."


def _confirmer(sink: Sink, verify: bool) -> session.Confirm | None:
    """The --verify question, asked after any spinner has stopped."""
    if not verify:
        return None
    console = Console(stderr=True, highlight=False)

    async def confirm(verification: str) -> bool:
        if isinstance(sink, HumanSink):
            sink.pause()
        question = f"Does the other screen show {escape(verification)}?"
        matches = await ask_yes_no(console, question, default=False)
        if matches and isinstance(sink, HumanSink):
            sink.waiting("Waiting for the other side to check the verification string...")
        return matches

    return confirm


SEND_EPILOG = """Examples:

  p2pcp send report.pdf photos/

  tar c photos | p2pcp send --name photos.tar -

  p2pcp send --text "the wifi password is hunter2"
"""

RECEIVE_EPILOG = """Examples:

  p2pcp receive -o ~/Downloads 7-guitar-ocean

  P2PCP_CODE=7-guitar-ocean p2pcp receive --yes -o - | tar x
"""


def _text_argument(text: str) -> bytes:
    if text != "-":
        return text.encode("utf-8")
    data = sys.stdin.buffer.read(MAX_TEXT_SIZE + 1)
    if len(data) > MAX_TEXT_SIZE:
        raise UsageError("a text message is at most 1 MiB: send a file instead (p2pcp send -)")
    return data


@app.command(epilog=SEND_EPILOG)
def send(
    paths: list[str] | None = typer.Argument(
        None, help="Files and directories to send; '-' streams stdin."
    ),
    text: str | None = typer.Option(
        None, "--text", help="Send this text message instead of files ('-': read it from stdin)."
    ),
    name: str = typer.Option("stdin", "--name", help="File name the receiver gets for '-'."),
    no_resume: bool = typer.Option(
        False, "--no-resume", help="Send everything again, even what the receiver holds."
    ),
    compress: bool | None = typer.Option(
        None,
        "--compress/--no-compress",
        help="Send pieces that zstd shrinks compressed, across a network (default: yes).",
    ),
    code: str | None = typer.Option(
        None,
        "--code",
        help="Use this code instead of a new one; better in env P2PCP_CODE, "
        "which stays out of the process list.",
    ),
    to: str | None = typer.Option(
        None, "--to", help="Send to this paired device, with no code (see p2pcp pair)."
    ),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    ice_server: list[str] | None = typer.Option(None, "--ice-server", help=ICE_HELP),
    ca_file: str | None = typer.Option(None, "--ca-file", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print NDJSON events on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the code and errors."),
    no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS),
    qr: bool = typer.Option(False, "--qr", help="Also draw the receive command as a QR code."),
    verify: bool = typer.Option(False, "--verify", help=VERIFY_HELP),
    debug: bool = typer.Option(False, "--debug", help="Log details and show tracebacks."),
) -> None:
    """Send files, directories, stdin or a text message; prints a code for the receiver."""
    setup_logging(debug)
    sink = make_sink(
        json_mode, "sent", quiet, message=text is not None, qr=qr, bars=not no_progress
    )
    try:
        if verify and not sys.stdin.isatty():
            raise UsageError("--verify asks a question: stdin must be a terminal")
        if bool(paths) == (text is not None):
            raise UsageError("give either files to send or --text, not both and not neither")
        if to is not None and code is not None:
            raise UsageError("--to sends to a paired device, with no code: drop --code")
        chosen = None if to is not None else code or os.environ.get("P2PCP_CODE")
        settings = effective_settings(
            server=server, ice_servers=ice_server, ca_file=ca_file, compress=compress
        )
        options = session.SendOptions(
            paths=paths or [],
            server=settings["server"].value,
            ice_servers=config.ice_servers(settings["ice_servers"].value),
            code=parse_code(chosen) if chosen else None,
            tls=session.Tls(settings["ca_file"].value, insecure),
            text=_text_argument(text) if text is not None else None,
            stdin_name=name,
            resume=not no_resume,
            compress=settings["compress"].value,
            to=pairing_for(to) if to is not None else None,
        )
    except P2pcpError as exc:
        fail(sink, exc, debug)
    run_session(sink, session.send(options, sink, _confirmer(sink, verify)), debug)


@app.command(epilog=RECEIVE_EPILOG)
def receive(
    code: str | None = typer.Argument(None, help="The code from the sender (env P2PCP_CODE)."),
    sender: str | None = typer.Option(
        None, "--from", help="Receive from this paired device, with no code (see p2pcp pair)."
    ),
    output: str | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Directory to write into (default: '.'); '-' writes the one file to stdout.",
    ),
    overwrite: bool | None = typer.Option(
        None,
        "--overwrite/--no-overwrite",
        help="Replace files here that differ from the sender's (default: ask).",
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Keep files here that differ from the sender's."
    ),
    rename: bool = typer.Option(
        False, "--rename", help="Save files that differ from those here as 'name (1).ext'."
    ),
    no_resume: bool = typer.Option(
        False,
        "--no-resume",
        help="Start partial files over (identical files here are still skipped).",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Accept the offer without asking."),
    allow_hidden: bool = typer.Option(
        False,
        "--allow-hidden",
        help="Also accept, without a question of its own, an offer that creates hidden (dot) "
        "entries directly in your home directory (refused under --yes without this).",
    ),
    wait: float = typer.Option(
        0.0,
        "--wait",
        parser=parse_seconds,
        metavar="SECONDS",
        help="If no sender holds the code yet, keep asking for up to this many seconds "
        "(for scripts that start both sides at once with a chosen code).",
    ),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    ice_server: list[str] | None = typer.Option(None, "--ice-server", help=ICE_HELP),
    ca_file: str | None = typer.Option(None, "--ca-file", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print NDJSON events on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS),
    verify: bool = typer.Option(False, "--verify", help=VERIFY_HELP),
    list_partials: bool = typer.Option(
        False, "--list-partials", help="List the partial files (.NAME.p2pcp-part) under -o."
    ),
    clean_partials: bool = typer.Option(
        False, "--clean-partials", help="Delete the partial files under -o (no resume then)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Log details and show tracebacks."),
) -> None:
    """Receive files (or a text message) with a code from the sender."""
    if list_partials or clean_partials:
        partials(output, clean_partials, json_mode)
    setup_logging(debug)
    sink = make_sink(json_mode, "received", quiet, bars=not no_progress)
    console = Console(stderr=True, highlight=False)
    try:
        settings = effective_settings(
            server=server,
            ice_servers=ice_server,
            output=output,
            overwrite=overwrite,
            ca_file=ca_file,
        )
        target = settings["output"].value
        if target != "-":
            target = os.path.expanduser(target)  # the config file may say ~/Downloads
        if json_mode and target == "-":
            raise UsageError("--json and -o - both write to stdout: choose one")
        if sum((bool(settings["overwrite"].value), skip_existing, rename)) > 1:
            raise UsageError("choose one of --overwrite, --skip-existing and --rename")
        if (verify or not yes) and not sys.stdin.isatty():
            raise UsageError("cannot ask whether to accept: stdin is not a terminal; pass --yes")
        if sender is not None and code is not None:
            raise UsageError("--from receives from a paired device, with no code: drop the code")
        options = session.ReceiveOptions(
            code=read_code(code, console) if sender is None else None,
            sender=pairing_for(sender) if sender is not None else None,
            server=settings["server"].value,
            output=target,
            overwrite=settings["overwrite"].value,
            resume=not no_resume,
            ice_servers=config.ice_servers(settings["ice_servers"].value),
            tls=session.Tls(settings["ca_file"].value, insecure),
            wait=wait,
        )
    except P2pcpError as exc:
        fail(sink, exc, debug)

    choice = "skip" if skip_existing else "rename" if rename else ""
    decide = Consent(console, sink.pause if isinstance(sink, HumanSink) else lambda: None,
                     yes, allow_hidden, "overwrite" if options.overwrite else choice)  # fmt: skip
    run_session(sink, session.receive(options, sink, decide, _confirmer(sink, verify)), debug)


@app.command()
def doctor(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    ice_server: list[str] | None = typer.Option(None, "--ice-server", help=ICE_HELP),
    ca_file: str | None = typer.Option(None, "--ca-file", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Log details and show tracebacks."),
) -> None:
    """Check the rendezvous server, its STUN and TURN servers, and this host's NAT; without a
    server, the LAN mode and one real transfer through it. Say what will work from here."""
    setup_logging(debug)
    sink = make_sink(json_mode, "checked", quiet=False)
    try:
        settings = effective_settings(server=server, ice_servers=ice_server, ca_file=ca_file)
        url = settings["server"].value
        tls = session.Tls(settings["ca_file"].value, insecure)
        ice_servers = config.ice_servers(settings["ice_servers"].value)
    except P2pcpError as exc:
        fail(sink, exc, debug)

    async def check() -> None:
        if url is None:  # no server: the LAN mode, and one real transfer through it
            from .landoctor import diagnose_lan

            lan = await diagnose_lan()
            if json_mode:
                typer.echo(json.dumps(show_all({"lan": lan.to_json()})))
            else:
                show_lan_report(lan, Console(highlight=False))
            if not lan.ok:
                raise ConnectError("LAN mode does not work on this host (see above)")
            return
        report = await diagnose(url, tls, ice_servers)
        if json_mode:
            typer.echo(json.dumps(show_all(report.to_json())))
        else:
            show_report(report, Console(highlight=False))

    run_session(sink, check(), debug)


app.add_typer(config_app, name="config")
app.command("pair")(pair_command)
app.command("listen", epilog=LISTEN_EPILOG)(listen_command)
app.add_typer(devices_app, name="devices")


CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
"""The command-line parser's errors (Typer's click, vendored or not)."""


def main() -> NoReturn:
    """Entry point of ``p2pcp``: the parser's errors are one ``error:`` line and exit 2, like
    every other error of ours."""
    try:
        status: object = app(standalone_mode=False, prog_name="p2pcp")
    except SystemExit as exc:
        status = exc.code
    except CLICK_ERROR as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        message = exc.format_message()  # type: ignore[attr-defined]
        sys.stderr.write(f"error: {show(message)}{hint}\n")
        status = getattr(exc, "exit_code", 2)
    _exit(status)


def _exit(status: object) -> NoReturn:
    """End the process at once, once everything is written: by then every received file is
    closed, synced and renamed, and stdout is written unbuffered. Python's own teardown of the
    aiortc, OpenSSL and asyncio objects took 90 ms after every transfer (bench/transfer.py), a
    fifth of a small transfer's time."""
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:
        sys.stderr.write(f"{status}\n")
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away: nothing left to tell it
    os._exit(code)
