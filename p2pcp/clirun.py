"""What every ``p2pcp`` command shares: logging, the output sink, running a session on the
event loop with SIGINT and SIGTERM, and the one dispatch from error to message and exit code."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import typer

from . import config
from .errors import ExitCode, Interrupted, P2pcpError
from .escape import ShownFormatter
from .ui import HumanSink, JsonSink

SERVER_HELP = (
    "Rendezvous server URL, ws:// or wss:// (env P2PCP_SERVER); none: find each other on this "
    "network (mDNS)"
)
Sink = HumanSink | JsonSink


CA_HELP = "Trust this PEM CA bundle for a wss:// server (env P2PCP_CA_FILE)."
INSECURE_HELP = "Do not verify a wss:// server's certificate (for testing only)."
ICE_HELP = "A STUN or TURN server URL (repeatable) (env P2PCP_ICE_SERVERS, comma-separated)."


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise typer.BadParameter(f"{text!r} is not a number of seconds")
    return value


def effective_settings(**flags: Any) -> dict[str, config.Setting]:
    return config.effective(flags)


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    # --debug lines carry the milliseconds since start: ICE and transfer problems are timing.
    fmt = "%(levelname)s %(name)s: %(message)s"
    fmt = f"%(relativeCreated)7.0fms {fmt}" if debug else fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ShownFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    if debug:
        for noisy in ("aioice", "aiortc", "websockets", "zeroconf"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    else:
        # aiortc/aioice log benign errors on shutdown, zeroconf each interface its mDNS cannot
        # use (::1 over IPv6); our own errors are reported by us.
        for noisy in ("aioice", "aiortc", "websockets", "zeroconf", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


async def guarded(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro``; SIGINT and SIGTERM cancel it (so the peer is told) and set the exit code.

    An inherited ignored SIGINT (``nohup``, background jobs) stays ignored.
    """
    task = asyncio.ensure_future(coro)
    caught: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig)
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not caught:
            raise
        if caught[0] == signal.SIGTERM:
            raise Interrupted("terminated", signal_exit=ExitCode.TERMINATED) from None
        raise Interrupted("interrupted") from None


def event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, on uvloop where it is installed: aiortc is pure Python and pays the event
    loop per packet; uvloop made a transfer 19% faster with 20% less CPU (docs/performance.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or installed without it
        asyncio.run(main)
        return
    uvloop.run(main)


def run_session(
    sink: Sink, coro: Coroutine[Any, Any, None], debug: bool, stop_is_success: bool = False
) -> NoReturn:
    """Run a session and exit with its status: the single error-to-exit-code dispatch. With
    ``stop_is_success`` (a service: ``listen``), SIGINT and SIGTERM end it with status 0."""
    try:
        event_loop_run(guarded(coro))
    except Interrupted as exc:
        if not stop_is_success:
            fail(sink, exc, debug)
    except P2pcpError as exc:
        fail(sink, exc, debug)
    except KeyboardInterrupt:
        fail(sink, Interrupted(), debug)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks
        error = P2pcpError(f"internal error: {type(exc).__name__}: {exc} (run with --debug)")
        fail(sink, error, debug)
    raise typer.Exit(0)


def fail(sink: Sink, exc: P2pcpError, debug: bool) -> NoReturn:
    if debug:
        logging.getLogger("p2pcp").exception("failure")
    sink.error(int(exc.exit_code), exc.message)
    raise typer.Exit(int(exc.exit_code))


def make_sink(
    json_mode: bool,
    verb: str,
    quiet: bool,
    message: bool = False,
    qr: bool = False,
    bars: bool = True,
) -> Sink:
    if json_mode:
        return JsonSink()
    return HumanSink(verb, quiet=quiet, message=message, qr=qr, progress=bars)


NO_PROGRESS = "Plain lines instead of progress bars and spinners (NO_COLOR only drops colour)."
