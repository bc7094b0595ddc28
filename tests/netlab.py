"""A network lab in namespaces: a public segment and sites behind home routers, with bad links.

``lab(site, site, ...)`` builds, inside network namespaces it creates and always deletes:

- a **public segment** (``203.0.113.0/24``, a bridge in a switch namespace) with a **server**
  host holding two addresses (``.1`` and ``.2``, so a client can ask two STUN servers);
- for each site, one **host**. With ``nat="none"`` the host sits on the public segment itself
  (``203.0.113.10+k``). Otherwise it sits on a LAN (``10.<k+1>.0.2/24``) behind a **router**
  namespace whose WAN address is ``203.0.113.10+k``:

  - ``cone``: MASQUERADE, which keeps the source port per local socket whatever the destination
    (endpoint-independent mapping), and drops unsolicited inbound packets as home routers do.
  - ``symmetric``: MASQUERADE ``--random-fully``: a new random port for every destination.
  - ``block_udp``: the router forwards no UDP at all (TCP only, as on some corporate networks).

- for each site, its **uplink** to the public segment. ``Link(rate_mbit=...)`` puts a ``tbf``
  rate limit on both directions. Delay, jitter and loss need ``netem``, which this kernel lacks,
  so ``Link(delay_ms=..., jitter_ms=..., loss=...)`` puts ``linkemu.py`` (a userspace Ethernet
  forwarder) in a namespace of its own in the middle of the uplink.

Processes started with :meth:`Lab.start` are killed on the way out, as is anything else still
running in a lab namespace, also when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from helpers import require

PUBLIC = "203.0.113"
SERVER_ADDRESSES = (f"{PUBLIC}.1", f"{PUBLIC}.2")
LINKEMU = Path(__file__).with_name("linkemu.py")
OFFLOADS = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ip(*args: str) -> str:
    return run("ip", *args)


@dataclass(frozen=True)
class Link:
    """The impairments of one uplink, the same in each direction."""

    delay_ms: float = 0.0
    """One-way delay: the link adds twice this to a round trip."""
    jitter_ms: float = 0.0
    loss: float = 0.0
    """Fraction of frames dropped, each direction."""
    rate_mbit: float | None = None
    drop_fragments: bool = False
    """Drop every IPv4 fragment (a path that carries no datagram over its MTU of 1500)."""

    @property
    def emulated(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss or self.drop_fragments)


@dataclass(frozen=True)
class Site:
    nat: str = "none"
    """``none``, ``cone`` or ``symmetric``."""
    block_udp: bool = False
    link: Link = Link()


@dataclass(frozen=True)
class Node:
    """One namespace with an address."""

    netns: str
    address: str

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str) -> str:
        return run(*self.command(*args))


@dataclass
class Lab:
    tag: str
    switch: str
    server: Node
    hosts: list[Node] = field(default_factory=list)
    routers: list[Node | None] = field(default_factory=list)
    uplinks: list[tuple[str, str]] = field(default_factory=list)
    """Per site: (namespace, interface) that cuts the site off when set down."""
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start(
        self,
        node: Node,
        *args: str,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        env: dict[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[str]:
        """Start ``args`` inside ``node``; it is killed when the lab is torn down."""
        process = subprocess.Popen(
            node.command(*args),
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            text=True,
            env=env,
        )
        self.processes.append(process)
        return process

    def set_uplink(self, site: int, up: bool) -> None:
        """Cut (or restore) a site's cable to the public segment."""
        netns, interface = self.uplinks[site]
        ip("-n", netns, "link", "set", "dev", interface, "up" if up else "down")

    def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            try:
                process.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        for netns in reversed(self.namespaces):
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


def _netns(lab: Lab, role: str) -> str:
    name = f"p2pcp-{role}-{lab.tag}"
    ip("netns", "add", name)
    lab.namespaces.append(name)
    ip("-n", name, "link", "set", "lo", "up")
    return name


def _veth(a: str, a_name: str, b: str, b_name: str) -> None:
    """A cable between two namespaces, with offloads off so that every frame is a real packet
    (the link emulator forwards frames as read; a 64 KiB TSO frame would not fit the wire)."""
    ip("link", "add", a_name, "netns", a, "type", "veth", "peer", "name", b_name, "netns", b)
    for netns, name in ((a, a_name), (b, b_name)):
        run("ip", "netns", "exec", netns, "ethtool", "-K", name, *OFFLOADS)
        ip("-n", netns, "link", "set", "dev", name, "up")


def _rate(netns: str, interface: str, mbit: float) -> None:
    ip(
        "netns", "exec", netns, "tc", "qdisc", "add", "dev", interface, "root", "tbf",
        "rate", f"{mbit}mbit", "burst", "64kb", "latency", "50ms",
    )  # fmt: skip


def _uplink(lab: Lab, k: int, netns: str, link: Link) -> None:
    """Connect ``netns``'s ``wan`` interface to the public switch, through the link emulator if
    the link needs delay, jitter or loss."""
    port = f"port{k}"
    if link.emulated:
        middle = _netns(lab, f"l{k}")
        _veth(netns, "wan", middle, "inner")
        _veth(middle, "outer", lab.switch, port)
        emulator = lab.start(
            Node(middle, ""),
            sys.executable,
            str(LINKEMU),
            "inner",
            "outer",
            f"--delay={link.delay_ms}",
            f"--jitter={link.jitter_ms}",
            f"--loss={link.loss}",
            *(["--drop-fragments"] if link.drop_fragments else []),
            stderr=None,
        )
        assert emulator.stdout is not None
        if emulator.stdout.readline().strip() != "ready":
            raise RuntimeError("the link emulator did not start")
    else:
        _veth(netns, "wan", lab.switch, port)
    ip("-n", lab.switch, "link", "set", port, "master", "br0")
    if link.rate_mbit:
        _rate(netns, "wan", link.rate_mbit)
        _rate(lab.switch, port, link.rate_mbit)
    lab.uplinks.append((lab.switch, port))


def _router(lab: Lab, k: int, site: Site, router: str) -> None:
    def iptables(*args: str) -> None:
        run("ip", "netns", "exec", router, "iptables", *args)

    run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    if site.nat == "cone":
        iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
    elif site.nat == "symmetric":
        masquerade = ("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
        iptables(*masquerade, "--random-fully")
    else:
        raise ValueError(f"unknown NAT type {site.nat!r}")
    # A home router: nothing gets in that the inside did not ask for.
    for chain in ("INPUT", "FORWARD"):
        iptables("-A", chain, "-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
    if site.block_udp:
        iptables("-A", "FORWARD", "-p", "udp", "-j", "DROP")


@contextmanager
def lab(*sites: Site, server_default_route: bool = True) -> Iterator[Lab]:
    """Build the topology for ``sites`` (see the module docstring) and tear it all down after.
    ``server_default_route=False`` leaves the server without a route to private networks, so
    that relaying to a peer's private address fails with ENETUNREACH on the server."""
    require("ip", "iptables", "ethtool", "tc", root=True)
    tag = uuid.uuid4().hex[:6]
    the_lab = Lab(tag, f"p2pcp-sw-{tag}", Node(f"p2pcp-srv-{tag}", SERVER_ADDRESSES[0]))
    try:
        _netns(the_lab, "sw")
        ip("-n", the_lab.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", the_lab.switch, "link", "set", "br0", "up")
        server = _netns(the_lab, "srv")
        _veth(server, "eth0", the_lab.switch, "portS")
        ip("-n", the_lab.switch, "link", "set", "portS", "master", "br0")
        for address in SERVER_ADDRESSES:
            ip("-n", server, "addr", "add", f"{address}/24", "dev", "eth0")
        # A server on the internet has a default route: packets for addresses it cannot reach
        # (a peer's private host candidate) leave and are lost, not refused with ENETUNREACH.
        if server_default_route:
            ip("-n", server, "route", "add", "default", "dev", "eth0")
        for k, site in enumerate(sites):
            wan_address = f"{PUBLIC}.{10 + k}"
            if site.nat == "none":
                host = _netns(the_lab, f"h{k}")
                _uplink(the_lab, k, host, site.link)
                ip("-n", host, "addr", "add", f"{wan_address}/24", "dev", "wan")
                the_lab.hosts.append(Node(host, wan_address))
                the_lab.routers.append(None)
                if site.block_udp:
                    run("ip", "netns", "exec", host, "iptables", "-A", "OUTPUT", "-p", "udp",
                        "!", "-o", "lo", "-j", "DROP")  # fmt: skip
                continue
            router = _netns(the_lab, f"r{k}")
            _uplink(the_lab, k, router, site.link)
            ip("-n", router, "addr", "add", f"{wan_address}/24", "dev", "wan")
            host = _netns(the_lab, f"h{k}")
            _veth(router, "lan", host, "eth0")
            ip("-n", router, "addr", "add", f"10.{k + 1}.0.1/24", "dev", "lan")
            ip("-n", host, "addr", "add", f"10.{k + 1}.0.2/24", "dev", "eth0")
            ip("-n", host, "route", "add", "default", "via", f"10.{k + 1}.0.1")
            _router(the_lab, k, site, router)
            the_lab.hosts.append(Node(host, f"10.{k + 1}.0.2"))
            the_lab.routers.append(Node(router, wan_address))
        yield the_lab
    finally:
        the_lab.teardown()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def env_without_config() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    env["P2PCP_CONFIG"] = os.devnull
    return env


def reachable(lab: Lab, sources: Sequence[Node]) -> bool:
    """Whether every source can open a TCP connection to the server (a smoke check)."""
    for node in sources:
        done = subprocess.run(
            node.command(
                sys.executable,
                "-c",
                "import socket,sys; socket.create_connection((sys.argv[1], 9), 2)",
                lab.server.address,
            ),
            capture_output=True,
        )
        if b"ConnectionRefused" not in done.stderr:
            return False
    return True


TURN_SECRET = "lab secret"
TURN_PORT = 3478
SIGNAL_PORT = 8000


@dataclass(frozen=True)
class Services:
    """The rendezvous server (and coturn) running on the lab's server host."""

    url: str
    signal_log: Path
    turn_log: Path | None


def start_services(
    the_lab: Lab,
    logs: Path,
    *,
    stun: bool = True,
    turn: bool = True,
    turn_tcp: bool = True,
    turn_flags: Sequence[str] = (),
) -> Services:
    """Start coturn (STUN on both server addresses, TURN with REST-API secrets) and
    ``p2pcp-signal`` handing them out, on the lab's server host; wait until both listen."""
    server = the_lab.server
    turn_log: Path | None = None
    flags: list[str] = []
    if stun or turn:
        turn_log = logs / "turnserver.log"
        the_lab.start(
            server,
            "turnserver", "-n",
            *(f"--listening-ip={a}" for a in SERVER_ADDRESSES),
            f"--listening-port={TURN_PORT}", f"--relay-ip={server.address}",
            "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=p2pcp.test",
            "--no-tls", "--no-dtls", "--no-cli", "--log-file=stdout", "--simple-log",
            "--min-port=50000", "--max-port=50999", f"--pidfile={logs / 'turnserver.pid'}",
            *turn_flags,
            stdout=turn_log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: "Total General servers" in turn_log.read_text(), 10, "coturn")
    if stun:
        flags += [f"--stun=stun:{a}:{TURN_PORT}" for a in SERVER_ADDRESSES]
    if turn:
        flags += [f"--turn=turn:{server.address}:{TURN_PORT}?transport=udp"]
        if turn_tcp:
            flags += [f"--turn=turn:{server.address}:{TURN_PORT}?transport=tcp"]
        flags += [f"--turn-secret={TURN_SECRET}"]
    signal_log = logs / "signal.log"
    the_lab.start(
        server,
        sys.executable, "-m", "signal_server", "--host", server.address,
        "--port", str(SIGNAL_PORT), *flags,
        stdout=subprocess.DEVNULL, stderr=signal_log.open("w"),
    )  # fmt: skip
    wait_for(lambda: "listening on" in signal_log.read_text(), 20, "the signal server")
    return Services(f"ws://{server.address}:{SIGNAL_PORT}", signal_log, turn_log)
