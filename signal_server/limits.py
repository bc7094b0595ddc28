"""Abuse limits and metrics of the rendezvous server, with no I/O (times are passed in)."""

from __future__ import annotations

import ipaddress
from collections import defaultdict, deque
from dataclasses import dataclass, field


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` parsed (a zone after ``%`` dropped, IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(address: str) -> str:
    """The key per-address limits count under: an IPv4 address as it is (also when written as
    IPv4-mapped IPv6), an IPv6 address by its /64 (one subscriber's prefix), anything else
    (a Unix socket, no address) as it is."""
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(
    peer: str,
    forwarded: list[str],
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """The client's address for the per-address limits. From a trusted proxy (``peer`` in one
    of ``trusted``), the right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy
    (each proxy appends the address it saw, so hops left of it could be forged by the client);
    from anyone else, ``peer``, whatever the header says."""
    if not _within(_ip(peer), trusted):
        return peer
    hops = [hop.strip() for header in forwarded for hop in header.split(",")]
    for hop in reversed(hops):
        ip = _ip(hop) if "%" not in hop else None
        if ip is None:
            return peer  # a malformed chain: count the proxy itself
        if not _within(ip, trusted):
            return hop
    return peer


def _within(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> bool:
    return ip is not None and any(ip in network for network in networks)


@dataclass
class TokenBucket:
    """At most ``rate`` events per second on average, bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float = 0.0

    def allow(self, now: float) -> bool:
        """Take one token if there is one."""
        if self.tokens < 0:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class SlidingWindow:
    """At most ``limit`` events per key within any ``seconds``."""

    limit: int
    seconds: float
    _events: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def allow(self, key: str, now: float) -> bool:
        """Count one event for ``key`` unless that would pass the limit."""
        events = self._events[key]
        while events and now - events[0] >= self.seconds:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def forget_idle(self, now: float) -> int:
        """Drop the record of every key with no event in the window; returns how many."""
        idle = [
            k
            for k, events in self._events.items()
            if not events or now - events[-1] >= self.seconds
        ]
        for key in idle:
            del self._events[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class Metrics:
    """Counters and gauges, rendered in the Prometheus text format."""

    connections_total: int = 0
    connections_open: int = 0
    messages_total: int = 0
    relayed_total: int = 0
    rejections: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def reject(self, reason: str) -> None:
        """Count one refusal."""
        self.rejections[reason] += 1

    def render(self, rooms_open: int) -> str:
        """The ``/metrics`` body."""
        lines = [
            "# HELP p2pcp_signal_connections_total WebSocket connections accepted.",
            "# TYPE p2pcp_signal_connections_total counter",
            f"p2pcp_signal_connections_total {self.connections_total}",
            "# HELP p2pcp_signal_connections Open WebSocket connections.",
            "# TYPE p2pcp_signal_connections gauge",
            f"p2pcp_signal_connections {self.connections_open}",
            "# HELP p2pcp_signal_rooms Open rooms.",
            "# TYPE p2pcp_signal_rooms gauge",
            f"p2pcp_signal_rooms {rooms_open}",
            "# HELP p2pcp_signal_messages_total Messages received from clients.",
            "# TYPE p2pcp_signal_messages_total counter",
            f"p2pcp_signal_messages_total {self.messages_total}",
            "# HELP p2pcp_signal_relayed_total Messages relayed to a peer.",
            "# TYPE p2pcp_signal_relayed_total counter",
            f"p2pcp_signal_relayed_total {self.relayed_total}",
            "# HELP p2pcp_signal_rejections_total Requests refused, by reason.",
            "# TYPE p2pcp_signal_rejections_total counter",
        ]
        lines += [
            f'p2pcp_signal_rejections_total{{reason="{reason}"}} {count}'
            for reason, count in sorted(self.rejections.items())
        ]
        return "\n".join(lines) + "\n"
