"""Load on the rendezvous server: N concurrent pairs meet and exchange signaling messages.

Usage: python bench/signal_load.py [--pairs 1000] [--messages 4]

Runs twice: through one p2pcp-signal process (rooms in memory), then through two processes
sharing a redis-server (each pair's sides on different processes). Prints pairs per second
(all pairs set up and done), p50/p99 latency of a relayed message, each server's peak RSS, and
the CPU seconds of each process over the run (servers after their start-up). Everything runs on
loopback; the limits are raised so that the load is not refused. The load generator's clients
look up no proxy and offer no compression: both cost it CPU per connection (its CPU over a run
halved), which showed as relay latency on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import free_port  # noqa: E402

PY = sys.executable
OPEN_LIMITS = [
    "--max-connections-per-ip",
    "1000000",
    "--rooms-per-minute-per-ip",
    "1000000",
    "--messages-per-second",
    "100000",
    "--connections-per-minute-per-ip",
    "1000000",
    "--max-rooms",
    "1000000",
]


def start_server(log: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("w") as sink:
        process = subprocess.Popen(
            [PY, "-m", "signal_server", "--host", "127.0.0.1", "--port", "0", *OPEN_LIMITS, *flags],
            stderr=sink,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"listening on (ws://\S+)", log.read_text())
        if match:
            return process, match.group(1)
        time.sleep(0.05)
    raise SystemExit("p2pcp-signal did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, open_timeout=60, ping_interval=None, proxy=None, compression=None)
    json.loads(await ws.recv())
    return ws


async def one_pair(url_a: str, url_b: str, messages: int, latencies: list[float]) -> None:
    a, b = await _open(url_a), await _open(url_b)
    await a.send(json.dumps({"type": "allocate"}))
    nameplate = json.loads(await a.recv())["nameplate"]
    await b.send(json.dumps({"type": "join", "nameplate": nameplate}))
    json.loads(await b.recv())
    json.loads(await a.recv())  # peer_joined
    for i in range(messages):
        sender, receiver = (b, a) if i % 2 == 0 else (a, b)
        await sender.send(json.dumps({"type": "relay", "body": {"t": time.perf_counter()}}))
        reply = json.loads(await receiver.recv())
        latencies.append(time.perf_counter() - reply["body"]["t"])
    await a.close()
    await b.close()


async def run(urls: list[str], pairs: int, messages: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(one_pair(urls[0], urls[-1], messages, latencies) for _ in range(pairs)))
    return time.perf_counter() - started, latencies


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user and system) of process ``pid``, or of this one."""
    if pid is None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    name: str,
    pairs: int,
    seconds: float,
    latencies: list[float],
    servers: list[subprocess.Popen[bytes]],
    cpu: str,
) -> None:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rss = " + ".join(f"{peak_rss_mib(s.pid):.0f}" for s in servers)
    print(f"{name:<28} {pairs / seconds:>9.0f} {p50:>9.2f} {p99:>9.2f}   {rss:<9} MiB   {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=4)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2 sockets per side, both ends
    print(f"{args.pairs} concurrent pairs, {args.messages} relayed messages each, loopback")
    print(
        f"{'setup':<28} {'pairs/s':>9} {'p50 ms':>9} {'p99 ms':>9}   server peak RSS   "
        "CPU s: load generator, servers[, redis-server]"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, url = start_server(root / "one.log")
        try:
            mine, theirs = cpu_seconds(), cpu_seconds(server.pid)
            seconds, latencies = uvloop.run(run([url], args.pairs, args.messages))
            cpu = f"{cpu_seconds() - mine:.2f}, {cpu_seconds(server.pid) - theirs:.2f}"
            report("one server, memory", args.pairs, seconds, latencies, [server], cpu)
        finally:
            server.terminate()
            server.wait(20)
        if not shutil.which("redis-server"):
            print("two servers + Redis: skipped, redis-server is not installed")
            return
        port = free_port()
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{port}/0"
        one, url_one = start_server(root / "r1.log", "--redis", redis_url)
        two, url_two = start_server(root / "r2.log", "--redis", redis_url)
        try:
            processes = (one, two, redis)
            mine, theirs = cpu_seconds(), [cpu_seconds(p.pid) for p in processes]
            seconds, latencies = uvloop.run(run([url_one, url_two], args.pairs, args.messages))
            used = [cpu_seconds(p.pid) - t for p, t in zip(processes, theirs, strict=True)]
            cpu = f"{cpu_seconds() - mine:.2f}, {used[0]:.2f} + {used[1]:.2f}, {used[2]:.2f}"
            report("two servers + Redis", args.pairs, seconds, latencies, [one, two], cpu)
        finally:
            for process in (one, two, redis):
                process.terminate()
                process.wait(20)


if __name__ == "__main__":
    main()
