"""Benchmark: p2pcp next to raw TCP, a plain aiortc data channel and magic-wormhole.

Usage: python bench/compare.py [--size-mib 256] [--rounds 3] [--chart docs/compare.png]

One random file, the same for every method; the methods run interleaved, round after round, so
the machine's state affects them alike. Every received file's SHA-256 is checked. For each method
it prints the median end-to-end rate (from starting the first process to both exiting), the
ratio to raw TCP, and the peak RSS and CPU seconds of each side (from wait4), and draws the table
as a bar chart (matplotlib, a bench-only dependency: pip install -e '.[bench]').

- raw TCP: a Python sender (sendfile) and receiver over the machine's own address;
- plain aiortc: bench/plain_aiortc.py, one data channel, 64 KiB messages, standard asyncio;
- magic-wormhole: `wormhole send` / `wormhole receive` from PyPI, with a local mailbox server and
  transit relay (magic-wormhole-mailbox-server, magic-wormhole-transit-relay), installed on first
  use into their own virtual environment (--wormhole-venv);
- p2pcp: the real `p2pcp send` / `p2pcp receive` with a local p2pcp-signal.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import (  # noqa: E402
    PY,
    WORMHOLE_PACKAGES,
    Run,
    compile_p2pcp,
    drain,
    first_byte_line,
    free_port,
    make_file,
    measure,
    own_address,
    run_p2pcp,
    run_tcp,
    sha256,
    start_server,
)

HERE = Path(__file__).resolve().parent


def run_plain_aiortc(src: Path, out: Path) -> Run:
    start = time.monotonic()
    script = str(HERE / "plain_aiortc.py")
    sender = subprocess.Popen(
        [PY, script, "send", str(src)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    receiver = subprocess.Popen(
        [PY, script, "receive", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert sender.stdin and sender.stdout and receiver.stdin and receiver.stdout
    receiver.stdin.write(sender.stdout.readline())
    receiver.stdin.flush()
    sender.stdin.write(receiver.stdout.readline())
    sender.stdin.flush()
    rc_s, rc_r, run = measure(sender, receiver, start)
    if rc_s or rc_r:
        raise SystemExit(f"plain aiortc failed: send {rc_s} receive {rc_r}")
    return run


class Wormhole:
    """A local mailbox server and transit relay, and the clients, from their own venv."""

    def __init__(self, venv: Path, root: Path) -> None:
        if not (venv / "bin" / "wormhole").exists():
            print(f"installing magic-wormhole into {venv} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", *WORMHOLE_PACKAGES], check=True
            )
        self.bin = venv / "bin"
        mailbox, relay = free_port(), free_port()
        self.servers = [
            subprocess.Popen(
                [str(self.bin / "twist"), "--log-file", str(root / f"{name}.log"), name, option],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=root,
            )
            for name, option in (
                ("wormhole-mailbox", f"--port=tcp:{mailbox}:interface=127.0.0.1"),
                ("transitrelay", f"--port=tcp:{relay}:interface=127.0.0.1"),
            )
        ]
        self.options = [
            "--relay-url",
            f"ws://127.0.0.1:{mailbox}/v1",
            "--transit-helper",
            f"tcp:127.0.0.1:{relay}",
        ]
        for port in (mailbox, relay):
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the magic-wormhole servers did not start") from None
                    time.sleep(0.2)
        self.round = 0

    def run(self, src: Path, out: Path) -> Run:
        self.round += 1
        code = f"{self.round}-bench-compare"
        wormhole = str(self.bin / "wormhole")
        start = time.monotonic()
        sender = subprocess.Popen(
            [wormhole, *self.options, "send", "--code", code, str(src)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        receiver = subprocess.Popen(
            [wormhole, *self.options, "receive", "--accept-file", "-o", str(out), code],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        errors: list[bytes] = []
        drain(sender.stderr, errors)
        drain(receiver.stderr, errors)
        rc_s, rc_r, run = measure(sender, receiver, start)
        if rc_s or rc_r:
            raise SystemExit(f"magic-wormhole failed: {b''.join(errors[-5:]).decode()}")
        return run

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait()


def chart(rows: list[tuple[str, float, float, float, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows]
    rates = [r[1] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = left.bar(names, rates, color=["#777", "#bbb", "#5b8cc0", "#d9822b"][: len(rows)])
    left.bar_label(bars, fmt="%.1f")
    left.set_ylabel("MB/s, end to end (median)")
    left.set_title("throughput")
    left.set_yscale("log")
    width = 0.38
    xs = range(len(rows))
    rss = right.bar([x - width / 2 for x in xs], [r[2] for r in rows], width, label="sender")
    rss2 = right.bar([x + width / 2 for x in xs], [r[3] for r in rows], width, label="receiver")
    right.bar_label(rss, fmt="%.0f")
    right.bar_label(rss2, fmt="%.0f")
    right.set_xticks(list(xs), names)
    right.set_ylabel("peak RSS, MiB")
    right.set_title("memory")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=15)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chart", type=Path, default=Path("docs/compare.png"))
    parser.add_argument(
        "--wormhole-venv",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "p2pcp-bench-wormhole",
    )
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out a method (e.g. 'magic-wormhole')"
    )
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    address = own_address()
    compile_p2pcp()
    server, url = start_server()
    methods = [
        m for m in ("raw TCP", "plain aiortc", "magic-wormhole", "p2pcp") if m not in args.skip
    ]
    results: dict[str, list[Run]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="p2pcp-compare-") as tmp:
        root = Path(tmp)
        wormhole = Wormhole(args.wormhole_venv, root) if "magic-wormhole" in methods else None
        try:
            src = root / "payload.bin"
            make_file(src, size)
            want = sha256(src)
            for round_no in range(1, args.rounds + 1):
                for method in methods:
                    out_dir = root / f"{method.replace(' ', '-')}-{round_no}"
                    out_dir.mkdir()
                    target = out_dir / src.name
                    if method == "raw TCP":
                        run = run_tcp(src, target, address)
                    elif method == "plain aiortc":
                        run = run_plain_aiortc(src, target)
                    elif method == "magic-wormhole":
                        assert wormhole is not None
                        run = wormhole.run(src, target)
                    else:
                        run = run_p2pcp(src, out_dir, url)
                    if sha256(target) != want:
                        raise SystemExit(f"{method}: the received file differs")
                    target.unlink()
                    results[method].append(run)
                    print(
                        f"round {round_no} {method}: {size / run.seconds / 1e6:.1f} MB/s",
                        file=sys.stderr,
                    )
        finally:
            if wormhole is not None:
                wormhole.close()
            server.terminate()
    tcp_rate = statistics.median(size / r.seconds / 1e6 for r in results["raw TCP"])
    title = (
        f"{args.size_mib} MiB random file, one machine, median of {args.rounds} rounds, end to end"
    )
    print(f"\n{title}")
    print(
        "| method | MB/s | vs raw TCP | peak RSS send | peak RSS recv | CPU send | CPU recv |\n"
        "|---|---|---|---|---|---|---|"
    )
    rows = []
    for name, runs in results.items():
        rate = statistics.median(size / r.seconds / 1e6 for r in runs)
        rss_s, rss_r = max(r.rss_send_mib for r in runs), max(r.rss_recv_mib for r in runs)
        cpu_s = statistics.median(r.cpu_send for r in runs)
        cpu_r = statistics.median(r.cpu_recv for r in runs)
        rows.append((name, rate, rss_s, rss_r, rate / tcp_rate))
        print(
            f"| {name} | {rate:.1f} | {rate / tcp_rate:.3f} | {rss_s:.0f} MiB | {rss_r:.0f} MiB "
            f"| {cpu_s:.1f} s | {cpu_r:.1f} s |"
        )
    if "p2pcp" in results:
        print(first_byte_line(results["p2pcp"]))
    print(json.dumps({name: [r.seconds for r in runs] for name, runs in results.items()}))
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the table above is the result; the chart is extra
        print("chart: skipped (matplotlib missing: pip install -e '.[bench]')")
        return
    chart(rows, title, args.chart)
    print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
