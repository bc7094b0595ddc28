"""A userspace link emulator: Ethernet frames between two interfaces, delayed, jittered, dropped.

The kernel on our test machines has no ``netem`` qdisc, so the network lab puts this forwarder in a
namespace of its own between two veth ends (``a`` and ``b``, with no addresses). It reads every
frame arriving on one interface through an AF_PACKET socket and writes it to the other after
``delay`` ms, plus a uniform random ``jitter`` (frames are never reordered: a frame is never
released before the one ahead of it in the same direction), dropping a ``loss`` fraction at random.
Each direction gets the same settings, so the link adds ``2 * delay`` ms to a round trip.

Standard library only: run it as ``python3 linkemu.py A B --delay 50 --loss 0.01``. It prints
``ready`` once both sockets are bound and forwards until it is terminated.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65536


def _open(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    return sock


def _fragment(frame: bytes) -> bool:
    """Whether an Ethernet frame carries an IPv4 fragment (more fragments, or an offset)."""
    return (
        len(frame) >= 22
        and frame[12:14] == b"\x08\x00"
        and bool(int.from_bytes(frame[20:22], "big") & 0x3FFF)
    )


def forward(
    a: str,
    b: str,
    delay: float,
    jitter: float,
    loss: float,
    seed: int | None,
    drop_fragments: bool = False,
) -> None:
    rng = random.Random(seed)
    ends = {name: _open(name) for name in (a, b)}
    out = {ends[a].fileno(): ends[b], ends[b].fileno(): ends[a]}
    inbound = {sock.fileno(): sock for sock in ends.values()}
    last_release = {fd: 0.0 for fd in inbound}
    queue: list[tuple[float, int, int, bytes]] = []
    sequence = 0
    poller = select.epoll()
    for fd in inbound:
        poller.register(fd, select.EPOLLIN)
    print("ready", flush=True)
    while True:
        timeout = -1.0
        if queue:
            timeout = max(0.0, queue[0][0] - time.monotonic())
        for fd, _ in poller.poll(timeout):
            sock = inbound[fd]
            while True:
                try:
                    frame, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING or (loss and rng.random() < loss):
                    continue
                if drop_fragments and _fragment(frame):
                    continue  # as some firewalls and middleboxes do
                release = time.monotonic() + (delay + rng.uniform(-jitter, jitter)) / 1000
                release = max(release, last_release[fd])
                last_release[fd] = release
                sequence += 1
                heapq.heappush(queue, (release, sequence, fd, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, frame = heapq.heappop(queue)
            try:
                out[fd].send(frame)
            except OSError:
                pass  # the far interface is down: the frame is lost, as on a cut cable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay, ms")
    parser.add_argument("--jitter", type=float, default=0.0, help="+- uniform jitter, ms")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of frames dropped")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--drop-fragments", action="store_true", help="drop every IPv4 fragment")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        forward(args.a, args.b, args.delay, args.jitter, args.loss, args.seed, args.drop_fragments)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
