"""``p2pcp doctor``: what this host looks like from outside, and what will work from here.

It connects to the rendezvous server, asks every STUN server it hands out (and those configured
locally) for this host's reflexive address from one UDP socket, tries a TURN allocation on every
TURN server, and turns the answers into a verdict: whether this host sits behind a NAT, which
kind (two STUN servers on different addresses that see the same port mean endpoint-independent
mapping, "cone"; different ports, "symmetric"), whether UDP gets out at all, and so whether direct
connections and the relay will work. It also says whether our changes to aiortc and aioice
(p2pcp/webrtc/) are in force: without them transfers work, but slower.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aioice.ice import get_host_addresses

from . import webrtc
from .netcheck import Allocation, IceServer, parse_url, reflexive_addresses, try_turn
from .signaling import Signaling, Tls


@dataclass(frozen=True)
class StunAnswer:
    """What one STUN server said."""

    url: str
    mapped: str | None
    """Our address and port as that server saw them; None: no answer."""


@dataclass(frozen=True)
class TurnAnswer:
    """What one TURN server said to an allocation request."""

    url: str
    transport: str
    ok: bool
    relayed: str | None
    error: str | None


@dataclass
class Report:
    """Everything ``p2pcp doctor`` found."""

    server: dict[str, Any]
    local: str | None = None
    """The UDP socket the STUN questions came from."""
    stun: list[StunAnswer] = field(default_factory=list)
    nat: str = "unknown"
    """``none``, ``cone``, ``symmetric``, ``udp-blocked`` (the relay answers over TCP, not
    UDP), ``no-answer`` (no STUN server answered, and nothing says UDP is blocked) or
    ``unknown``."""
    direct: str = "unknown"
    """``yes``, ``limited`` (only with peers on the same LAN or without NAT), ``no``."""
    turn: list[TurnAnswer] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    stack: list[webrtc.Change] = field(default_factory=list)
    """Our changes to aiortc and aioice, and whether each is in force."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _address(pair: tuple[str, int] | None) -> str | None:
    return f"{pair[0]}:{pair[1]}" if pair else None


def classify(
    local_port: int, host_addresses: Sequence[str], answers: Sequence[tuple[str, tuple[str, int]]]
) -> str:
    """The NAT type from ``(server IP, mapped address)`` answers to one local socket."""
    if not answers:
        return "udp-blocked"
    if all(ip in host_addresses and port == local_port for _, (ip, port) in answers):
        return "none"
    by_server = {server: mapped for server, mapped in answers}
    if len(by_server) < 2:
        return "unknown"  # a NAT, but one server cannot tell which kind
    return "cone" if len(set(by_server.values())) == 1 else "symmetric"


VERDICT = {"none": "yes", "cone": "yes", "symmetric": "limited", "udp-blocked": "no"}


def _advice(report: Report) -> list[str]:
    relays = {t.transport for t in report.turn if t.ok}
    lines = {
        "none": "This host has a public address: peers can reach it directly.",
        "cone": "This host is behind a NAT that keeps one port per socket (cone): direct "
        "connections work with most peers, by hole punching.",
        "symmetric": "This host is behind a symmetric NAT (a new port for every destination): "
        "direct connections work only with peers on the same LAN or with a public address; "
        "others need the TURN relay.",
        "udp-blocked": "No STUN server answered over UDP: UDP seems blocked here. WebRTC needs "
        "UDP for a direct path; only TURN over TCP can carry the transfer.",
        "unknown": "Only one STUN server answered, so the kind of NAT is unknown.",
        "no-answer": "No STUN server answered: they may be down, or UDP may be blocked here "
        "(nothing tells which). Transfers on this LAN need neither: p2pcp doctor without "
        "--server checks them.",
    }
    advice = [lines[report.nat]]
    if report.nat == "no-answer" and "udp" in relays:
        advice = ["No STUN server answered, though UDP works here (the TURN relay answered over "
                  "UDP): the STUN servers seem down; ask the server's operator."]  # fmt: skip
    if not report.stun:
        advice = ["The server hands out no STUN server, so this host's public address and NAT "
                  "are unknown; ask its operator to add one (p2pcp-signal --stun)."]  # fmt: skip
    if relays:
        advice.append(f"The TURN relay works here over {' and '.join(sorted(relays))}.")
    elif report.turn:
        advice.append("No TURN server handed out works from here: see the errors above.")
    else:
        advice.append(
            "The server hands out no TURN relay: peers that cannot connect directly (symmetric "
            "NAT, UDP blocked) will fail; ask its operator to add one (p2pcp-signal --turn)."
        )
    if report.nat == "udp-blocked" and "tcp" not in relays:
        advice.append(
            "Without UDP and without TURN over TCP, no transfer to another network can work "
            "from here (on this LAN, p2pcp doctor without --server checks LAN mode)."
        )
    missing = [c.name for c in report.stack if not c.in_force]
    if missing:
        advice.append(
            f"Not in force: {', '.join(missing)}. Transfers work, but slower; reinstall p2pcp "
            f"so that pip installs the versions it pins ({pinned()})."
        )
    return advice


def pinned() -> str:
    """The pinned versions, as ``aiortc==1.16.0, ...``."""
    return ", ".join(f"{name}=={version}" for name, version in webrtc.pins.PINNED.items())


async def diagnose(server: str, tls: Tls, ice_servers: Sequence[IceServer]) -> Report:
    """Run every check against ``server``; ConnectError if the server cannot be reached."""
    started = time.monotonic()
    signaling = await Signaling.connect(server, tls)
    try:
        report = Report(
            {"url": server, "ok": True, "seconds": round(time.monotonic() - started, 3)}
        )
        # TURN credentials come with a room (the server mints them for clients that hold one):
        # open one, read the list, and leave it at once.
        await signaling.allocate()
        servers = [*ice_servers, *(IceServer.from_json(s) for s in signaling.ice_servers)]
    finally:
        await signaling.close()
    urls = [(s, u) for s in servers if (u := parse_url(s.urls)) is not None]
    stun_urls = [u for _, u in urls if u.scheme == "stun"]
    turn_checks = [try_turn(s, u, timeout=3.0) for s, u in urls if u.is_turn]
    (local, answers), allocations = await asyncio.gather(
        reflexive_addresses(stun_urls), asyncio.gather(*turn_checks)
    )
    report.local = _address(local)
    report.stun = [StunAnswer(str(u), _address(mapped)) for u, mapped in answers]
    report.turn = [_turn_answer(a) for a in allocations]
    if stun_urls and local is not None:
        seen = [(u.host, mapped) for u, mapped in answers if mapped is not None]
        report.nat = classify(local[1], get_host_addresses(True, False), seen)
        if report.nat == "udp-blocked" and not _udp_blocked(report.turn):
            report.nat = "no-answer"  # the STUN servers may just be down
        report.direct = VERDICT.get(report.nat, "unknown")
    webrtc.install()
    report.stack = webrtc.changes(deep=True)
    report.advice = _advice(report)
    return report


def _udp_blocked(turn: Sequence[TurnAnswer]) -> bool:
    """No STUN answer means UDP is blocked only when the relay answered over TCP and not over
    UDP (the servers are up, UDP is not); with no such evidence they may just be down."""
    ok = {t.transport for t in turn if t.ok}
    return "tcp" in ok and "udp" not in ok


def _turn_answer(allocation: Allocation) -> TurnAnswer:
    return TurnAnswer(
        str(allocation.url),
        allocation.url.transport if allocation.url.scheme == "turn" else "tls",
        allocation.relayed is not None,
        _address(allocation.relayed),
        allocation.error,
    )
