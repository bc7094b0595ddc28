"""p2pcp next to magic-wormhole across the network lab: two hosts, real links, same runs.

Each row builds its own lab in network namespaces, then runs p2pcp and magic-wormhole on the
same file over the same links, interleaved round by round. Both start their two sides at the
same moment with a chosen code; a run is timed from that moment until both sides exited (end to
end, set-up included), and each side's CPU seconds come from wait4.

- ``lan``: two hosts on one bridge, MTU 1500, each uplink capped at 1 Gbit/s (tbf), offloads
  off so every frame is a real frame. p2pcp with nothing configured (LAN mode: the sender's
  embedded rendezvous server, found by mDNS); magic-wormhole's mailbox server and transit relay
  on the sender's host.
- ``lossy-lan``: the same, dropping 0.5% of the frames arriving at each host at random (an
  iptables ``statistic`` rule; this kernel has no netem, and the Python link emulator would be
  slower than the link).
- ``lan-standard``: the LAN with p2pcp's large packets off (P2PCP_LARGE_PACKETS=0): what
  Chromium and other WebRTC peers get.
- ``relayed``: both hosts behind symmetric NATs (tests/netlab.py), so p2pcp goes through coturn
  and magic-wormhole through its transit relay, both relays on the public host.
- ``20ms``, ``100ms+1%``: the sender behind a cone NAT whose uplink goes through the project's
  link emulator (tests/linkemu.py) with that delay and loss each way; the receiver public;
  magic-wormhole's servers on the public host.

Every row where the receiver can take a TCP connection from the sender (all but ``relayed``)
also times plain TCP over the same links in the same rounds: a Python receiver that listens and
writes the file, a sender that connects and ``sendfile``s it, started at once (the
yardstick: what this host's kernel TCP moves there, with a Python start-up on each side).

    python bench/lab.py [--rounds 2] [--row NAME ...] [--size-mib N] [--logs DIR]

``--logs DIR`` runs p2pcp with ``--debug`` and keeps each side's log there
(``ROW-ROUND-send.log``, ``ROW-ROUND-receive.log``: where the time of a run went).

Needs root, iproute2, iptables, ethtool and coturn (scripts/test installs them); installs
magic-wormhole into its own virtual environment on first use (as bench/compare.py does).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]  # tests/netlab.py, not bench/netlab.py

from netlab import (  # noqa: E402
    OFFLOADS,
    Lab,
    Link,
    Node,
    Site,
    env_without_config,
    ip,
    lab,
    run,
    start_services,
)
from netns import lan  # noqa: E402
from transfer import WORMHOLE_PACKAGES, Run, installed_env, make_file, measure  # noqa: E402

PY = sys.executable
MAILBOX_PORT, RELAY_PORT, TCP_PORT = 4000, 4001, 4002
TCP_RECEIVE = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
connection, _ = server.accept()
with open(sys.argv[2], "wb") as out:
    while chunk := connection.recv(1 << 20):
        out.write(chunk)
"""
TCP_SEND = """
import socket, sys, time
for _ in range(400):
    try:
        connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except OSError:
        time.sleep(0.005)
with open(sys.argv[3], "rb") as source:
    connection.sendfile(source)
connection.close()
"""


@dataclass
class Place:
    """Where one row's transfers run: the two hosts, and what p2pcp and magic-wormhole use."""

    sender: Node
    receiver: Node
    servers: Node
    """The host of magic-wormhole's mailbox server and transit relay."""
    p2pcp_env: dict[str, str]
    start: Callable[..., subprocess.Popen[bytes]]
    tcp: bool = True
    """Whether the sender can open a TCP connection to the receiver (not between two NATs)."""


@dataclass(frozen=True)
class Row:
    name: str
    size_mib: int
    build: Callable[[Path], AbstractContextManager[Place]]


LOGS: Path | None = None
"""Where p2pcp's ``--debug`` logs go (``--logs``); None: no debug logging."""


def _popen(
    node: Node, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    # A debug log goes to a file: it would fill a pipe that nobody reads until the end.
    sink = log.open("wb") if log else None
    try:
        stderr = sink or subprocess.PIPE
        return subprocess.Popen(
            node.command(*args), stdout=subprocess.DEVNULL, stderr=stderr, env=env
        )
    finally:
        if sink:
            sink.close()


@contextmanager
def lan_place(work: Path, loss: float = 0.0, large: bool = True) -> Iterator[Place]:
    with lan(2) as (sender, receiver):
        switch = sender.netns.replace("-h0-", "-sw-")
        for index, host in enumerate((sender, receiver)):
            run("ip", "netns", "exec", host.netns, "ethtool", "-K", "eth0", *OFFLOADS)
            run("ip", "netns", "exec", switch, "ethtool", "-K", f"port{index}", *OFFLOADS)
            ip(
                "netns", "exec", host.netns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                "rate", "1000mbit", "burst", "256kb", "latency", "20ms",
            )  # fmt: skip
            if loss:
                run(
                    "ip", "netns", "exec", host.netns, "iptables", "-t", "raw", "-A",
                    "PREROUTING", "-m", "statistic", "--mode", "random", "--probability",
                    str(loss), "-j", "DROP",
                )  # fmt: skip
        env = {**env_without_config(), **({} if large else {"P2PCP_LARGE_PACKETS": "0"})}
        yield Place(sender, receiver, sender, env, _popen)


@contextmanager
def lab_place(work: Path, *sites: Site) -> Iterator[Place]:
    with lab(*sites) as the_lab:
        services = start_services(the_lab, work)
        env = {**env_without_config(), "P2PCP_SERVER": services.url}
        tcp = sites[1].nat == "none"
        yield Place(
            the_lab.hosts[0], the_lab.hosts[1], the_lab.server, env, _lab_popen(the_lab), tcp
        )


def _lab_popen(the_lab: Lab) -> Callable[..., subprocess.Popen[bytes]]:
    def start(
        node: Node, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        process = _popen(node, *args, env=env, log=log)
        the_lab.processes.append(process)  # type: ignore[arg-type]
        return process

    return start


ROWS = [
    Row("lan", 128, lambda work: lan_place(work)),
    Row("lossy-lan", 64, lambda work: lan_place(work, loss=0.005)),
    Row("lan-standard", 64, lambda work: lan_place(work, large=False)),
    Row("relayed", 64, lambda work: lab_place(work, Site("symmetric"), Site("symmetric"))),
    Row("20ms", 64, lambda work: lab_place(work, Site("cone", link=Link(delay_ms=10)), Site())),
    Row(
        "100ms+1%",
        16,
        lambda work: lab_place(work, Site("cone", link=Link(delay_ms=50, loss=0.01)), Site()),
    ),
]


def run_p2pcp(place: Place, src: Path, out: Path, code: str, name: str) -> Run:
    env = {**installed_env(), **place.p2pcp_env, "P2PCP_CODE": code}
    debug = ["--debug"] if LOGS else []
    logs = [LOGS / f"{name}-{side}.log" if LOGS else None for side in ("send", "receive")]
    start = time.monotonic()
    sender = place.start(
        place.sender, PY, "-m", "p2pcp", "send", *debug, str(src), env=env, log=logs[0]
    )
    receiver = place.start(
        place.receiver, PY, "-m", "p2pcp", "receive", *debug, "--yes", "--no-resume",
        "--overwrite", "--wait", "20", "-o", str(out), env=env, log=logs[1],
    )  # fmt: skip
    return _finish("p2pcp", sender, receiver, start)


def run_tcp(place: Place, src: Path, out: Path) -> Run:
    start = time.monotonic()
    receiver = place.start(
        place.receiver, PY, "-c", TCP_RECEIVE, str(TCP_PORT), str(out / src.name)
    )
    sender = place.start(
        place.sender, PY, "-c", TCP_SEND, place.receiver.address, str(TCP_PORT), str(src)
    )
    return _finish("TCP", sender, receiver, start)


class Wormhole:
    """magic-wormhole's mailbox server and transit relay on one lab host, and its clients."""

    def __init__(self, venv: Path, place: Place, work: Path) -> None:
        self.bin = venv / "bin"
        self.place = place
        host = place.servers
        self.servers = [
            place.start(
                host,
                str(self.bin / "twist"),
                "--log-file",
                str(work / f"{name}.log"),
                name,
                f"--port=tcp:{port}:interface={host.address}",
                *extra,
            )  # fmt: skip
            for name, port, extra in (
                # the mailbox's state database, by default relay.sqlite in the working directory
                ("wormhole-mailbox", MAILBOX_PORT, [f"--channel-db={work / 'relay.sqlite'}"]),
                ("transitrelay", RELAY_PORT, []),
            )
        ]
        self.options = [
            "--relay-url", f"ws://{host.address}:{MAILBOX_PORT}/v1",
            "--transit-helper", f"tcp:{host.address}:{RELAY_PORT}",
        ]  # fmt: skip
        time.sleep(2)  # twist takes a moment to listen

    def run(self, src: Path, out: Path, code: str) -> Run:
        wormhole = str(self.bin / "wormhole")
        start = time.monotonic()
        sender = self.place.start(
            self.place.sender, wormhole, *self.options, "send", "--code", code, str(src)
        )
        receiver = self.place.start(
            self.place.receiver, wormhole, *self.options, "receive", "--accept-file", "-o",
            str(out), code,
        )  # fmt: skip
        return _finish("magic-wormhole", sender, receiver, start)

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait()


def _finish(
    what: str, sender: subprocess.Popen[bytes], receiver: subprocess.Popen[bytes], start: float
) -> Run:
    rc_s, rc_r, result = measure(sender, receiver, start)
    if rc_s or rc_r:
        errors = b"".join(p.stderr.read() for p in (sender, receiver) if p.stderr)
        raise SystemExit(f"{what} failed (send {rc_s}, receive {rc_r}): {errors[-800:]!r}")
    return result


def ensure_wormhole(venv: Path) -> None:
    if not (venv / "bin" / "wormhole").exists():
        print(f"installing magic-wormhole into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *WORMHOLE_PACKAGES], check=True)


def measure_row(row: Row, rounds: int, size_mib: int | None, venv: Path) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {"p2pcp": [], "magic-wormhole": [], "TCP": []}
    size = (size_mib or row.size_mib) << 20
    with tempfile.TemporaryDirectory() as tmp, row.build(Path(tmp)) as place:
        work = Path(tmp)
        src = work / "payload.bin"
        make_file(src, size)
        wormhole = Wormhole(venv, place, work)
        try:
            for round_ in range(rounds):
                methods = ["p2pcp", "magic-wormhole", *(["TCP"] if place.tcp else [])]
                for method in methods if round_ % 2 == 0 else methods[::-1]:
                    out = work / f"out-{method}-{round_}"
                    out.mkdir()
                    code = f"{7 + round_}-guitar-ocean"
                    if method == "p2pcp":
                        result = run_p2pcp(place, src, out, code, f"{row.name}-{round_}")
                    elif method == "TCP":
                        result = run_tcp(place, src, out)
                    else:
                        result = wormhole.run(src, out, code)
                    got = out / "payload.bin"
                    if got.stat().st_size != size:
                        raise SystemExit(f"{method}: wrong size received")
                    got.unlink()
                    runs[method].append(result)
                    print(
                        f"  {row.name} {method}: {size / result.seconds / 1e6:.1f} MB/s, "
                        f"CPU {result.cpu_send:.2f}/{result.cpu_recv:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            wormhole.close()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--row", action="append", choices=[r.name for r in ROWS])
    parser.add_argument("--size-mib", type=int, help="the same size for every row")
    parser.add_argument(
        "--wormhole-venv",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "p2pcp-bench-wormhole",
    )
    parser.add_argument("--logs", type=Path, help="keep p2pcp's --debug logs in this folder")
    args = parser.parse_args()
    global LOGS
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        LOGS = args.logs
    ensure_wormhole(args.wormhole_venv)
    table = []
    for row in ROWS:
        if args.row and row.name not in args.row:
            continue
        runs = measure_row(row, args.rounds, args.size_mib, args.wormhole_venv)
        size = (args.size_mib or row.size_mib) << 20
        best = {m: max(runs[m], key=lambda r: size / r.seconds) for m in runs if runs[m]}
        rate = {m: size / best[m].seconds / 1e6 for m in best}
        table.append((row.name, size >> 20, rate, best))
    print("\n| case | MiB | p2pcp MB/s | magic-wormhole MB/s | ratio | TCP MB/s | p2pcp / TCP |"
          " p2pcp CPU send/recv s | magic-wormhole CPU send/recv s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mib, rate, best in table:
        p, w = best["p2pcp"], best["magic-wormhole"]
        tcp = rate.get("TCP")
        print(
            f"| {name} | {mib} | {rate['p2pcp']:.1f} | {rate['magic-wormhole']:.1f} | "
            f"{rate['p2pcp'] / rate['magic-wormhole']:.2f} | "
            + (f"{tcp:.1f} | {rate['p2pcp'] / tcp:.2f} | " if tcp else "- | - | ")
            + f"{p.cpu_send:.2f} / {p.cpu_recv:.2f} | {w.cpu_send:.2f} / {w.cpu_recv:.2f} |"
        )
    print("\n(best of the rounds, end to end: both sides started at once until both exited)")


if __name__ == "__main__":
    # SIGTERM (kill, timeout) unwinds like Ctrl-C, so every lab is torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
