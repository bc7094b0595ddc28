"""Throughput of p2pcp over emulated links, next to TCP (iperf3) over the same namespaces.

For each link profile, a lab (tests/netlab.py) with a sender behind a cone NAT whose uplink has
the profile, and a receiver with a public address; p2pcp sends a random file from one to the
other (end to end, as the receiver's ``done`` event counts it: from acceptance to the last
byte verified), and iperf3 sends TCP the same way for the same namespaces and link.

    python bench/netlab.py [--size-mb 32] [--rounds 1] [--profile NAME ...] [--data random|text]

``--data text`` sends log-like text lines instead (``bench/transfer.py``'s, which zstd shrinks
about fourfold): the rate is then file bytes per second, compressed on the wire.

Needs root, iproute2, iptables, ethtool, coturn and iperf3 (.ci/run installs them).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netlab import Lab, Link, Site, env_without_config, lab, start_services  # noqa: E402
from transfer import make_file  # noqa: E402

PROFILES = {
    "lan": Link(),
    "20ms": Link(delay_ms=10),
    "100ms+1%loss": Link(delay_ms=50, loss=0.01),
    "20ms+3%loss": Link(delay_ms=10, loss=0.03),
    "100mbit": Link(rate_mbit=100),
}


def p2pcp_rate(the_lab: Lab, work: Path, size: int, data: str = "random") -> float:
    """MB/s of one p2pcp transfer from site 0 to site 1 (the receiver's own figure)."""
    services = start_services(the_lab, work)
    source = work / "payload.bin"
    make_file(source, size, data)
    out = work / "out"
    out.mkdir(exist_ok=True)
    env = env_without_config()
    python = sys.executable
    sender = the_lab.start(
        the_lab.hosts[0], python, "-m", "p2pcp", "send", "--json", "--server", services.url,
        str(source), env=env,
    )  # fmt: skip
    assert sender.stdout is not None
    code = json.loads(sender.stdout.readline())["code"]
    receiver = the_lab.start(
        the_lab.hosts[1], python, "-m", "p2pcp", "receive", "--json", "--yes", "--overwrite",
        "--no-resume", "--server", services.url, "-o", str(out), code, env=env,
    )  # fmt: skip
    stdout, stderr = receiver.communicate(timeout=900)
    sender.communicate(timeout=60)
    if receiver.returncode != 0:
        raise RuntimeError(f"p2pcp failed: {stderr[-500:]}")
    done = next(e for e in map(json.loads, stdout.splitlines()) if e["event"] == "done")
    (out / "payload.bin").unlink()
    return size / done["seconds"] / 1e6


def tcp_rate(the_lab: Lab, seconds: int = 10) -> float:
    """MB/s of one iperf3 TCP stream from site 0 to site 1."""
    server = the_lab.start(the_lab.hosts[1], "iperf3", "-s", "-1", stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    client = subprocess.run(
        the_lab.hosts[0].command(
            "iperf3", "-c", the_lab.hosts[1].address, "-t", str(seconds), "-J"
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    server.wait(10)
    result = json.loads(client.stdout)
    return float(result["end"]["sum_received"]["bits_per_second"]) / 8 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", action="append", choices=sorted(PROFILES))
    parser.add_argument("--data", choices=("random", "text"), default="random")
    args = parser.parse_args()
    rows = []
    for name in args.profile or list(PROFILES):
        link = PROFILES[name]
        p2p, tcp = [], []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as work, lab(Site("cone", link=link), Site()) as it:
                p2p.append(p2pcp_rate(it, Path(work), args.size_mb * 1_000_000, args.data))
                tcp.append(tcp_rate(it))
        rows.append((name, statistics.median(p2p), statistics.median(tcp)))
        print(f"{name}: p2pcp {rows[-1][1]:.1f} MB/s, TCP {rows[-1][2]:.1f} MB/s", flush=True)
    print()
    print("| link | p2pcp MB/s | TCP (iperf3) MB/s | ratio |")
    print("|---|---|---|---|")
    for name, p2p_rate, tcp_mbs in rows:
        print(f"| {name} | {p2p_rate:.1f} | {tcp_mbs:.1f} | {p2p_rate / tcp_mbs:.2f} |")


if __name__ == "__main__":
    # SIGTERM (kill, timeout) unwinds like Ctrl-C, so every lab is torn down: its processes
    # killed and its namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
