"""``p2pcp pair`` and ``p2pcp devices``: pair this device with another once, then list, rename,
set the policy of, or remove the devices it is paired with."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import config, identity
from .ask import ask_yes_no
from .clirun import (
    CA_HELP,
    ICE_HELP,
    INSECURE_HELP,
    SERVER_HELP,
    effective_settings,
    fail,
    make_sink,
    run_session,
    setup_logging,
)
from .code import parse_code
from .consent import Consent
from .devicekeys import fingerprint
from .devices import POLICIES, Device, DeviceStore, check_name, check_policy
from .errors import CodeError, P2pcpError, UsageError
from .escape import show
from .events import EventSink, OfferReceived
from .listening import listen
from .meeting import Pairing
from .pairing import ConfirmPair, PairOptions, pair
from .session import ReceiveOptions, Tls
from .transfer import Decide
from .ui import HumanSink, JsonSink

POLICY_HELP = (
    "What 'p2pcp listen' here does with its sends: ask (refused when no terminal is attached), "
    "accept, or refuse."
)

devices_app = typer.Typer(
    help="The devices this one is paired with: list (the default), rename, policy, remove.",
    invoke_without_command=True,
)


def pair_command(
    code: str | None = typer.Argument(
        None, help="The code the other device shows; none: show one here (env P2PCP_CODE)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="What to call the other device here (default: its host name)."
    ),
    policy: str = typer.Option("ask", "--policy", help=POLICY_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Pair without asking."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    ca_file: str | None = typer.Option(None, "--ca-file", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print NDJSON events on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Log details and show tracebacks."),
) -> None:
    """Pair with another device of yours: one side shows a code, the other types it. Then
    'p2pcp send --to NAME' needs no code."""
    setup_logging(debug)
    sink = make_sink(json_mode, "paired", quiet=False)
    try:
        if not yes and not sys.stdin.isatty():
            raise UsageError("cannot ask whether to pair: stdin is not a terminal; pass --yes")
        check_policy(policy)
        if name is not None:
            check_name(name)
        settings = effective_settings(server=server, ca_file=ca_file)
        typed = code  # P2PCP_CODE only for the side that types: the showing side has none yet
        options = PairOptions(
            code=parse_code(typed) if typed else None,
            server=settings["server"].value,
            directory=config.config_dir(),
            name=name,
            policy=policy,
            tls=Tls(settings["ca_file"].value, insecure),
        )
    except P2pcpError as exc:
        fail(sink, exc, debug)

    async def run() -> None:
        await pair(options, sink, _pair_question(sink, yes))

    run_session(sink, run(), debug)


def _pair_question(sink: HumanSink | JsonSink, yes: bool) -> ConfirmPair:
    console = Console(stderr=True, highlight=False)

    async def confirm(offered: str, name: str, shown: str) -> bool:
        if isinstance(sink, HumanSink):
            sink.pause()
        if not isinstance(sink, JsonSink):
            console.print(
                f"The other device calls itself [bold]{escape(show(offered))}[/]; it will be "
                f"[bold]{escape(name)}[/] here."
            )
            console.print(f"Fingerprint: [bold]{shown}[/] (the other screen shows the same)")
        if yes:
            return True
        return await ask_yes_no(console, "Pair with it?", default=False)

    return confirm


@devices_app.callback()
def devices_list(
    ctx: typer.Context,
    json_mode: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """List the paired devices: name, key fingerprint, policy, when paired and last seen."""
    if ctx.invoked_subcommand is not None:
        return
    devices = _store().paired()
    if json_mode:
        typer.echo(json.dumps({"devices": [_public(d) for d in devices]}))
        return
    console = Console(highlight=False)
    if not devices:
        console.print("No paired devices. Pair one with: p2pcp pair")
        return
    table = Table("name", "fingerprint", "policy", "paired", "last seen", box=None)
    for d in devices:
        table.add_row(
            escape(d.name), fingerprint(d.key), d.policy, _date(d.paired), _date(d.last_seen)
        )
    console.print(table)


@devices_app.command("rename")
def devices_rename(
    old: str = typer.Argument(..., help="The device's name now."),
    new: str = typer.Argument(..., help="Its new name."),
) -> None:
    """Call a paired device by another name here (the other device is not told)."""
    _change(old, f"renamed {old} to {new}", name=new)


@devices_app.command("policy")
def devices_policy(
    name: str = typer.Argument(..., help="The device."),
    policy: str = typer.Argument(..., help=f"One of: {', '.join(POLICIES)}."),
) -> None:
    """Set what 'p2pcp listen' does with the device's sends."""
    _change(name, f"{name}: policy {policy}", policy=policy)


@devices_app.command("remove")
def devices_remove(name: str = typer.Argument(..., help="The device.")) -> None:
    """Unpair a device: its sends and receives are refused from now on (pair again to undo)."""
    _change(name, f"removed {name}: it is refused from now on", removed=time.time())


def _change(device: str, done: str, **changes: object) -> None:
    try:
        _store().update(device, **changes)
    except P2pcpError as exc:
        typer.echo(f"error: {show(exc.message)}", err=True)
        raise typer.Exit(int(exc.exit_code)) from None
    typer.echo(done, err=True)


LISTEN_EPILOG = """Examples:

  p2pcp listen -o ~/Inbox

  p2pcp listen --from laptop --from phone --json >> ~/p2pcp-listen.log
"""


def listen_command(
    output: str | None = typer.Option(
        None, "-o", "--output", help="Directory to write into (default: the config's output)."
    ),
    senders: list[str] | None = typer.Option(
        None, "--from", help="Serve only this paired device (repeatable; default: all)."
    ),
    overwrite: bool | None = typer.Option(
        None, "--overwrite/--no-overwrite", help="Replace files here that differ from theirs."
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Keep files here that differ from the sender's."
    ),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    ice_server: list[str] | None = typer.Option(None, "--ice-server", help=ICE_HELP),
    ca_file: str | None = typer.Option(None, "--ca-file", help=CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    json_mode: bool = typer.Option(False, "--json", help="Print an NDJSON event log on stdout."),
    debug: bool = typer.Option(False, "--debug", help="Log details and show tracebacks."),
) -> None:
    """Receive from paired devices until stopped (SIGTERM or Ctrl-C: exit 0, partial files
    kept for resume). Each device's policy applies: ask, accept or refuse (p2pcp devices).
    Files here that differ from the sender's are kept, and the new ones saved as
    'name (1).ext', unless --overwrite or --skip-existing."""
    setup_logging(debug)
    sink: HumanSink | JsonSink = JsonSink() if json_mode else HumanSink("received", progress=False)
    console = Console(stderr=True, highlight=False)
    try:
        settings = effective_settings(
            server=server,
            ice_servers=ice_server,
            output=output,
            overwrite=overwrite,
            ca_file=ca_file,
        )
        if settings["overwrite"].value and skip_existing:
            raise UsageError("choose one of --overwrite and --skip-existing")
        directory = config.config_dir()
        store = DeviceStore(directory)
        devices = [store.find(n) for n in senders] if senders else store.load()
        if not any(d.removed is None for d in devices):
            raise UsageError("no paired devices to listen for: pair one with p2pcp pair")
        own = identity.load(directory)
        if own is None:
            raise CodeError(f"this device has lost its key ({directory}): pair again")
        options = ReceiveOptions(
            code=None,
            server=settings["server"].value,
            output=os.path.expanduser(settings["output"].value),
            overwrite=settings["overwrite"].value,
            ice_servers=config.ice_servers(settings["ice_servers"].value),
            tls=Tls(settings["ca_file"].value, insecure),
        )
    except P2pcpError as exc:
        fail(sink, exc, debug)
    choice = "overwrite" if options.overwrite else "skip" if skip_existing else "rename"
    questions = asyncio.Lock()  # one question at a time, whichever device asks

    def decide_for(device: Device) -> Decide:
        pause = sink.pause if isinstance(sink, HumanSink) else lambda: None
        consent = Consent(console, pause, device.policy == "accept", False, choice)

        async def decide(offer: OfferReceived) -> bool | str:
            async with questions:
                return await consent(offer)

        return decide

    def sink_for(device: Device) -> EventSink:
        return sink.tagged(device.name) if isinstance(sink, JsonSink) else sink

    pairings = [Pairing(own, d, store) for d in devices]
    attended = sys.stdin.isatty() and not json_mode
    work = listen(pairings, options, sink, sink_for, decide_for, attended, bool(senders))
    run_session(sink, work, debug, stop_is_success=True)


def pairing_for(name: str) -> Pairing:
    """This device and the paired device called ``name`` (exit 3 if unknown or removed)."""
    directory = config.config_dir()
    store = DeviceStore(directory)
    device = store.find(name)
    own = identity.load(directory)
    if own is None:
        raise CodeError(f"this device has lost its key ({directory}): pair again with p2pcp pair")
    return Pairing(own, device, store)


def _store() -> DeviceStore:
    return DeviceStore(config.config_dir())


def _public(device: Device) -> dict[str, object]:
    """What ``devices --json`` shows of a device: never its pairing secret."""
    return {
        "name": device.name,
        "fingerprint": fingerprint(device.key),
        "policy": device.policy,
        "paired": _iso(device.paired),
        "last_seen": _iso(device.last_seen),
    }


def _iso(when: float | None) -> str | None:
    return None if when is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _date(when: float | None) -> str:
    return "never" if when is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
