"""Benchmark: one file through the real `p2pcp send` / `p2pcp receive` commands, next to raw TCP.

Usage: python bench/transfer.py [--size-mib 256] [--rounds 3] [--data random|text]
                                [--no-compress-too]

Each round runs a raw TCP copy (a Python sender and receiver process over the machine's own
address) and a p2pcp transfer (real p2pcp-signal, send and receive processes) of the same file,
and checks the received file's SHA-256. The file is random bytes, or with ``--data text`` log-like
text lines (which zstd level 1 shrinks about fourfold); ``--no-compress-too`` adds a p2pcp run with
``send --no-compress`` to each round. It prints, per method, the median end-to-end rate
(from starting the sender to both processes exiting), the ratio to raw TCP, and the peak RSS and
CPU seconds of each side (from wait4).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import p2pcp
from p2pcp.code import make_code

PY = sys.executable

TCP_RECEIVER = """
import socket, sys
srv = socket.socket(); srv.bind((sys.argv[1], 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 20); view = memoryview(buf)
with open(sys.argv[2], "wb") as out:
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        out.write(view[:n])
"""

TCP_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with open(sys.argv[3], "rb") as f:
    s.sendfile(f)
s.close()
"""


WORMHOLE_PACKAGES = [
    "magic-wormhole==0.24.0",
    "magic-wormhole-mailbox-server==0.8.0",
    "magic-wormhole-transit-relay==0.5.0",
]
"""What bench/compare.py and bench/lab.py install into their magic-wormhole venv."""


@dataclass
class Run:
    """One measured transfer."""

    seconds: float
    rss_send_mib: float
    rss_recv_mib: float
    cpu_send: float
    cpu_recv: float
    first_byte: float | None = None
    """Seconds from the start to the receiver's first progress event (p2pcp only)."""


def own_address() -> str:
    """A non-loopback IPv4 address of this machine (what the WebRTC peers use too)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)", out)
    if not match:
        raise SystemExit("no non-loopback IPv4 address")
    return match.group(1)


def wait(process: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """Exit status, peak RSS (MiB) and CPU seconds of a child."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def measure(
    sender: subprocess.Popen[bytes], receiver: subprocess.Popen[bytes], start: float
) -> tuple[int, int, Run]:
    """Wait for both sides of a transfer started at ``start``: their exit statuses and the run."""
    rc_s, rss_s, cpu_s = wait(sender)
    rc_r, rss_r, cpu_r = wait(receiver)
    return rc_s, rc_r, Run(time.monotonic() - start, rss_s, rss_r, cpu_s, cpu_r)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drain(
    stream: object, sink: list[bytes], on_line: Callable[[bytes], None] | None = None
) -> threading.Thread:
    """Collect a child's output lines in a thread (calling ``on_line`` on each as it comes)."""

    def run() -> None:
        for line in stream:  # type: ignore[attr-defined]
            if on_line is not None:
                on_line(line)
            sink.append(line)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_tcp(src: Path, out: Path, address: str) -> Run:
    start = time.monotonic()
    receiver = subprocess.Popen([PY, "-c", TCP_RECEIVER, address, str(out)], stdout=subprocess.PIPE)
    assert receiver.stdout is not None
    port = receiver.stdout.readline().decode().strip()
    sender = subprocess.Popen([PY, "-c", TCP_SENDER, address, port, str(src)])
    rc_s, rc_r, run = measure(sender, receiver, start)
    assert rc_s == 0 and rc_r == 0
    return run


_NAMEPLATES = itertools.count(random.randrange(1000, 9000) * 100)


def run_p2pcp(src: Path, out_dir: Path, server: str, *send_args: str) -> Run:
    """Start sender and receiver at once with a chosen code (P2PCP_CODE, receive --wait), as
    scripts do and as the magic-wormhole run does with --code; the run's ``first_byte`` is when
    the receiver reported its first progress event."""
    code = str(make_code(str(next(_NAMEPLATES))))
    env = {**installed_env(), "P2PCP_SERVER": server, "P2PCP_CODE": code}
    start = time.monotonic()
    sender = subprocess.Popen(
        [PY, "-m", "p2pcp", "send", "--json", *send_args, str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    receiver = subprocess.Popen(
        [PY, "-m", "p2pcp", "receive", "--json", "--yes", "--wait", "10", "-o", str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    send_lines: list[bytes] = []
    drain(sender.stdout, send_lines)
    first: list[float] = []
    recv_lines: list[bytes] = []

    def first_progress(line: bytes) -> None:
        if not first and b'"progress"' in line:
            first.append(time.monotonic() - start)

    watcher = drain(receiver.stdout, recv_lines, first_progress)
    rc_s, rc_r, run = measure(sender, receiver, start)
    watcher.join()
    if rc_s or rc_r:
        raise SystemExit(f"p2pcp failed: send {rc_s} receive {rc_r}: {recv_lines[-1:]}")
    run.first_byte = first[0] if first else None
    return run


def installed_env() -> dict[str, str]:
    """The environment p2pcp runs in as pip installs it: with its modules' bytecode compiled
    (pip compiles at install). Without this, an editable checkout on a machine that sets
    PYTHONDONTWRITEBYTECODE (this one does) compiles p2pcp's modules again in every process,
    about 30 ms each, which no installed copy and no other tool in the comparison pays."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_p2pcp() -> None:
    """Compile p2pcp's bytecode (into its ``__pycache__``) before any measured run (see
    ``installed_env``)."""
    package = str(Path(p2pcp.__file__).parent)
    subprocess.run([PY, "-m", "compileall", "-q", package], env=installed_env(), check=True)


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [PY, "-m", "signal_server", "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:
        match = re.search(r"listening on (ws://\S+)", line)
        if match:
            drain(server.stderr, [])
            return server, match.group(1)
    raise SystemExit("p2pcp-signal did not start")


def make_file(path: Path, size: int, data: str = "random") -> None:
    """``size`` random bytes, or log-like text lines that zstd level 1 shrinks about fourfold."""
    rng = random.Random(7)
    words = [w.encode() for w in "get put delete user item order cache miss hit ok slow".split()]
    with path.open("wb") as f:
        left = size
        line_no = 0
        while left:
            if data == "random":
                block = os.urandom(min(left, 1 << 20))
            else:
                lines = []
                for _ in range(8192):
                    line_no += 1
                    lines.append(
                        b"2026-11-26T%06d %s /%s/%d status=%d ms=%d\n"
                        % (
                            line_no,
                            rng.choice(words),
                            rng.choice(words),
                            rng.randrange(100000),
                            rng.choice((200, 200, 200, 404, 500)),
                            rng.randrange(2000),
                        )
                    )
                block = b"".join(lines)[:left]
            f.write(block)
            left -= len(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", choices=("random", "text"), default="random")
    parser.add_argument("--no-compress-too", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    address = own_address()
    compile_p2pcp()
    server, url = start_server()
    results: dict[str, list[Run]] = {"raw TCP": [], "p2pcp": []}
    if args.no_compress_too:
        results["p2pcp --no-compress"] = []
    try:
        with tempfile.TemporaryDirectory(prefix="p2pcp-bench-") as tmp:
            root = Path(tmp)
            src = root / "payload.bin"
            make_file(src, size, args.data)
            want = sha256(src)
            for round_no in range(1, args.rounds + 1):
                tcp_out = root / "tcp.bin"
                results["raw TCP"].append(run_tcp(src, tcp_out, address))
                assert sha256(tcp_out) == want
                tcp_out.unlink()
                out_dir = root / f"out{round_no}"
                out_dir.mkdir()
                variants = [("p2pcp", ())]
                if args.no_compress_too:
                    variants.append(("p2pcp --no-compress", ("--no-compress",)))
                if round_no % 2 == 0:
                    variants.reverse()  # alternate which p2pcp variant goes first
                for name, send_args in variants:
                    results[name].append(run_p2pcp(src, out_dir, url, *send_args))
                    assert sha256(out_dir / src.name) == want, "hash mismatch"
                    (out_dir / src.name).unlink()
                rates = ", ".join(
                    f"{name} {size / runs[-1].seconds / 1e6:.1f} MB/s"
                    for name, runs in results.items()
                )
                print(f"round {round_no}: {rates}", file=sys.stderr)
    finally:
        server.terminate()
    tcp_rate = statistics.median(size / r.seconds / 1e6 for r in results["raw TCP"])
    print(
        f"\n{args.size_mib} MiB {args.data} file, {args.rounds} rounds, median; "
        f"end to end (sender start to both exited)"
    )
    print(
        f"{'method':<20} {'MB/s':>8} {'vs TCP':>8} {'RSS send':>9} {'RSS recv':>9} "
        f"{'CPU send':>9} {'CPU recv':>9}"
    )
    for name, runs in results.items():
        rate = statistics.median(size / r.seconds / 1e6 for r in runs)
        rss_s, rss_r = max(r.rss_send_mib for r in runs), max(r.rss_recv_mib for r in runs)
        print(
            f"{name:<20} {rate:>8.1f} {rate / tcp_rate:>8.3f} "
            f"{rss_s:>7.0f}Mi {rss_r:>7.0f}Mi "
            f"{statistics.median(r.cpu_send for r in runs):>8.1f}s "
            f"{statistics.median(r.cpu_recv for r in runs):>8.1f}s"
        )
    print(first_byte_line(results["p2pcp"]))


def first_byte_line(runs: list[Run]) -> str:
    """The median time from starting both p2pcp sides to the receiver's first data."""
    times = [r.first_byte for r in runs if r.first_byte is not None]
    if not times:
        return "p2pcp time to first byte: not seen"
    return (
        f"p2pcp time to first byte (both sides started at once, median): "
        f"{statistics.median(times):.2f} s (max {max(times):.2f} s)"
    )


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
