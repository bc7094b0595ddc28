"""The ``p2pcp-signal`` command: run the rendezvous server.

Typer, as for ``p2pcp``: one style of options, help and usage errors (exit 2) for both commands
of the package, and both sets of options declared the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import typer

from . import __version__
from .server import Settings, SignalServer

log = logging.getLogger("signal_server")


DEFAULTS = Settings()
app = typer.Typer(
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Rendezvous server for p2pcp: pairs peers by nameplate and relays their sealed "
    "signaling. Example: p2pcp-signal --host 0.0.0.0 --port 8765",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"p2pcp-signal {__version__}")
        raise typer.Exit()


def _urls(urls: list[str]) -> list[str]:
    for url in urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise typer.BadParameter(f"not a STUN/TURN URL: {url}")
    return urls


@app.command()
def serve(
    host: str = typer.Option(DEFAULTS.host, help="Interface to listen on."),
    port: int = typer.Option(DEFAULTS.port, help="TCP port (0: any free)."),
    room_idle: float = typer.Option(
        DEFAULTS.room_idle_seconds, metavar="N", help="Seconds after which an idle room is closed."
    ),
    max_message_bytes: int = typer.Option(
        DEFAULTS.max_message_bytes, metavar="N", help="Largest WebSocket message accepted."
    ),
    max_rooms: int = typer.Option(DEFAULTS.max_rooms, metavar="N", help="Rooms open at once."),
    messages_per_second: float = typer.Option(
        DEFAULTS.messages_per_second,
        metavar="N",
        help="Messages per second one connection may send (bursts of twice that).",
    ),
    rooms_per_minute_per_ip: int = typer.Option(
        DEFAULTS.rooms_per_minute_per_ip,
        metavar="N",
        help="New rooms one client address may open per minute.",
    ),
    max_connections_per_ip: int = typer.Option(
        DEFAULTS.max_connections_per_ip,
        metavar="N",
        help="Open connections from one client address.",
    ),
    connections_per_minute_per_ip: int = typer.Option(
        DEFAULTS.connections_per_minute_per_ip,
        metavar="N",
        help="New connections one client address may open per minute (IPv6: per /64).",
    ),
    handshake_timeout: float = typer.Option(
        DEFAULTS.handshake_timeout,
        metavar="N",
        help="Seconds a client has to complete the WebSocket handshake.",
    ),
    turn_ttl: float = typer.Option(
        DEFAULTS.turn_ttl,
        metavar="N",
        help="Seconds minted TURN credentials stay valid for new allocations.",
    ),
    stun: list[str] = typer.Option(
        [],
        metavar="URL",
        callback=_urls,
        help="A STUN server to hand to clients, e.g. stun:turn.example.org:3478 (repeatable).",
    ),
    turn: list[str] = typer.Option(
        [],
        metavar="URL",
        callback=_urls,
        help="A TURN server to hand to clients, e.g. turn:turn.example.org:3478 (repeatable).",
    ),
    turn_secret: str | None = typer.Option(
        None,
        envvar="P2PCP_TURN_SECRET",
        show_envvar=False,
        help="coturn's static-auth-secret (better: env P2PCP_TURN_SECRET, which stays out of "
        "the process list).",
    ),
    redis: str | None = typer.Option(
        None, metavar="URL", help="redis://HOST:PORT/DB: share rooms with other server processes."
    ),
    trusted_proxy: list[str] = typer.Option(
        [],
        metavar="CIDR",
        help="A reverse proxy or load balancer in front (repeatable): from these addresses "
        "only, the client's address for the per-address limits is the right-most untrusted hop "
        "of X-Forwarded-For.",
    ),
    tls_cert: str | None = typer.Option(None, help="PEM certificate chain: serve wss:// directly."),
    tls_key: str | None = typer.Option(None, help="PEM private key for --tls-cert."),
    page: bool = typer.Option(
        True,
        "--page/--no-page",
        help="Serve the browser page at / (the WebSocket, /healthz and /metrics stay either way).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Rendezvous server for p2pcp: pairs peers by nameplate and relays their sealed signaling,
    until SIGINT or SIGTERM. Example: p2pcp-signal --host 0.0.0.0 --port 8765"""
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    for cidr in trusted_proxy:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise typer.BadParameter(f"--trusted-proxy: not an address or CIDR: {cidr}") from None
    if turn and not turn_secret:
        raise typer.BadParameter("--turn needs --turn-secret (or P2PCP_TURN_SECRET)")
    settings = Settings(
        host=host,
        port=port,
        stun=tuple(stun),
        turn=tuple(turn),
        turn_secret=turn_secret,
        redis=redis,
        trusted_proxies=tuple(trusted_proxy),
        tls_cert=tls_cert,
        tls_key=tls_key,
        page=page,
        room_idle_seconds=room_idle,
        max_message_bytes=max_message_bytes,
        max_rooms=max_rooms,
        messages_per_second=messages_per_second,
        rooms_per_minute_per_ip=rooms_per_minute_per_ip,
        max_connections_per_ip=max_connections_per_ip,
        connections_per_minute_per_ip=connections_per_minute_per_ip,
        handshake_timeout=handshake_timeout,
        turn_ttl=turn_ttl,
    )
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        _event_loop_run(run(settings))


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, on uvloop where it is installed (a dependency of p2pcp): under 1000
    pairs at once it cuts the relay latency's tail (docs/operations.md, Capacity)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or installed without it
        asyncio.run(main)
        return
    uvloop.run(main)


async def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = SignalServer(settings)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        raise SystemExit(1) from None
    except Exception as exc:  # e.g. Redis unreachable: one line, no traceback
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from None
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    log.info("listening on %s://%s:%d", server.scheme, host, server.port)
    # What start-up made lives for good: keep it out of every collection, and collect less
    # often. Under a thousand pairs at once (bench/signal_load.py, Redis) this cut each
    # server's CPU by about 8% and the relay p99 from 164-199 to 110-161 ms in 4 runs each.
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``p2pcp-signal``."""
    app(args=argv, prog_name="p2pcp-signal")


if __name__ == "__main__":
    main()
