"""The ``p2pcp-signal`` command: run the rendezvous server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from . import __version__
from .server import Settings, SignalServer

log = logging.getLogger("signal_server")


NUMERIC_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--room-idle", "room_idle_seconds", float, "seconds after which an idle room is closed"),
    ("--max-message-bytes", "max_message_bytes", int, "largest WebSocket message accepted"),
    ("--max-rooms", "max_rooms", int, "rooms open at once"),
    (
        "--messages-per-second",
        "messages_per_second",
        float,
        "messages per second one connection may send (bursts of twice that)",
    ),
    (
        "--rooms-per-minute-per-ip",
        "rooms_per_minute_per_ip",
        int,
        "new rooms one client address may open per minute",
    ),
    (
        "--max-connections-per-ip",
        "max_connections_per_ip",
        int,
        "open connections from one client address",
    ),
    (
        "--handshake-timeout",
        "handshake_timeout",
        float,
        "seconds a client has to complete the WebSocket handshake",
    ),
    ("--turn-ttl", "turn_ttl", float, "seconds minted TURN credentials stay valid"),
)
"""The server's numeric limits: flag, Settings field, type, help."""


def parse_args(argv: list[str] | None) -> Settings:
    """Settings from the command line."""
    parser = argparse.ArgumentParser(
        prog="p2pcp-signal",
        description="Rendezvous server for p2pcp: pairs peers by nameplate and relays "
        "their sealed signaling. Example: p2pcp-signal --host 0.0.0.0 --port 8765",
    )
    defaults = Settings()
    parser.add_argument("--host", default=defaults.host, help="interface to listen on")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port (0: any free)")
    for flag, field, kind, text in NUMERIC_FLAGS:
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=getattr(defaults, field),
            metavar="N",
            help=f"{text} (default: %(default)s)",
        )
    parser.add_argument(
        "--stun",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN server to hand to clients, e.g. stun:turn.example.org:3478",
    )
    parser.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="URL",
        help="a TURN server to hand to clients, e.g. turn:turn.example.org:3478",
    )
    parser.add_argument(
        "--turn-secret",
        default=os.environ.get("P2PCP_TURN_SECRET"),
        help="coturn's static-auth-secret (better: env P2PCP_TURN_SECRET, which "
        "stays out of the process list)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="redis://HOST:PORT/DB: share rooms with other server processes",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve wss:// directly")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--no-page",
        dest="page",
        action="store_false",
        help="do not serve the browser page at / (the WebSocket, /healthz and /metrics stay)",
    )
    parser.add_argument("--version", action="version", version=f"p2pcp-signal {__version__}")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.turn and not args.turn_secret:
        parser.error("--turn needs --turn-secret (or P2PCP_TURN_SECRET)")
    for url in args.stun + args.turn:
        if not url.startswith(("stun:", "turn:", "turns:")):
            parser.error(f"not a STUN/TURN URL: {url}")
    return Settings(
        host=args.host,
        port=args.port,
        stun=tuple(args.stun),
        turn=tuple(args.turn),
        turn_secret=args.turn_secret,
        redis=args.redis,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        page=args.page,
        **{field: getattr(args, field) for _, field, _, _ in NUMERIC_FLAGS},
    )


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``p2pcp-signal``."""
    settings = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
