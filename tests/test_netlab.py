"""Real networks in namespaces: NAT traversal, TURN fallback, bad links and a cut cable.

Every case builds its own lab (see ``netlab.py``): a public segment with ``p2pcp-signal`` and
coturn, and two sites. Each transfer checks the hash of what arrived and the route that both
sides report (``direct`` or ``relay``, from the selected ICE candidate pair).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, sha256_file
from netlab import Lab, Link, Services, Site, env_without_config, lab, start_services

ENV = env_without_config()
SIZE = 4_000_000


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _send(
    the_lab: Lab, services: Services, path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    sender = the_lab.start(
        the_lab.hosts[0],
        PYTHON, "-m", "p2pcp", "send", "--json", "--server", services.url, *extra, str(path),
        env={**ENV, **(env or {})},
    )  # fmt: skip
    assert sender.stdout is not None
    line = sender.stdout.readline()
    assert line, sender.communicate()[1]
    first = json.loads(line)
    assert first["event"] == "code", first
    return sender, str(first["code"])


def _start_receive(
    the_lab: Lab,
    services: Services,
    code: str,
    out: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    return the_lab.start(
        the_lab.hosts[1],
        PYTHON, "-m", "p2pcp", "receive", "--json", "--yes", "--server", services.url,
        "-o", str(out), *extra, code,
        env={**ENV, **(env or {})},
    )  # fmt: skip


def _receive(
    the_lab: Lab, services: Services, code: str, out: Path, timeout: float = 180
) -> tuple[int, str, str]:
    receiver = _start_receive(the_lab, services, code, out)
    stdout, stderr = receiver.communicate(timeout=timeout)
    return receiver.returncode, stdout, stderr


def transfer(
    the_lab: Lab, services: Services, tmp_path: Path, size: int = SIZE
) -> tuple[str, str, float]:
    """Send ``size`` random bytes from site 0 to site 1; assert both succeed and the hash
    matches. Returns the route each side reported and the receiver's MB/s."""
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    out.mkdir()
    sender, code = _send(the_lab, services, source)
    code_received, stdout, stderr = _receive(the_lab, services, code, out)
    sent_out, sent_err = sender.communicate(timeout=60)
    assert code_received == 0, (stdout, stderr[-2000:])
    assert sender.returncode == 0, sent_err[-2000:]
    assert sha256_file(out / "payload.bin") == sha256_file(source)
    received = _events(stdout)
    done = next(e for e in received if e["event"] == "done")
    routes = [
        next(e for e in _events(text) if e["event"] == "connected")["route"]
        for text in (sent_out, stdout)
    ]
    return routes[0], routes[1], size / max(done["seconds"], 1e-3) / 1e6


@pytest.mark.parametrize(
    ("sites", "route"),
    [
        pytest.param((Site(), Site()), "direct", id="same-lan-no-nat"),
        pytest.param((Site("cone"), Site("cone")), "direct", id="cone-cone-hole-punched"),
        pytest.param((Site("none"), Site("symmetric")), "direct", id="public-symmetric"),
        pytest.param((Site("cone"), Site("symmetric")), "relay", id="cone-symmetric"),
        pytest.param((Site("symmetric"), Site("symmetric")), "relay", id="symmetric-symmetric"),
        pytest.param(
            (Site("cone"), Site("cone", block_udp=True)), "relay", id="udp-blocked-turn-tcp"
        ),
    ],
)
def test_connectivity_matrix(sites: tuple[Site, Site], route: str, tmp_path: Path) -> None:
    with lab(*sites) as the_lab:
        services = start_services(the_lab, tmp_path)
        sent_route, received_route = transfer(the_lab, services, tmp_path)[:2]
    assert (sent_route, received_route) == (route, route)


def _text(size: int) -> bytes:
    return b"".join(
        b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(size // 40)
    )[:size]


@pytest.mark.parametrize(
    ("route", "flags", "env"),
    [
        ("direct", (), {}),
        ("relay", (), {}),
        ("direct", ("--no-compress",), {}),
        ("direct", (), {"P2PCP_COMPRESS": "0"}),
        ("direct", ("--compress",), {"P2PCP_COMPRESS": "0"}),  # the flag beats the environment
    ],
    ids=["direct", "relay", "flag-off", "env-off", "flag-beats-env"],
)
def test_across_a_network_text_goes_compressed_and_noise_raw(
    route: str, flags: tuple[str, ...], env: dict[str, str], tmp_path: Path
) -> None:
    # Text, then noise, then text: the noise goes raw, and compression takes up again after it
    # (within the 4 MB the sender may skip while backing off after incompressible frames).
    text = _text(4_000_000)
    source = tmp_path / "mixed.log"
    source.write_bytes(text + os.urandom(4_000_000) + text + text)
    out = tmp_path / "out"
    out.mkdir()
    sites = (Site(), Site()) if route == "direct" else (Site("cone"), Site("symmetric"))
    with lab(*sites) as the_lab:
        services = start_services(the_lab, tmp_path, turn=route == "relay")
        sender, code = _send(the_lab, services, source, "--debug", *flags, env=env)
        code_received, stdout, stderr = _receive(the_lab, services, code, out)
        sent_out, sent_err = sender.communicate(timeout=60)
    assert code_received == 0 and sender.returncode == 0, (stderr[-2000:], sent_err[-2000:])
    assert (out / "mixed.log").read_bytes() == source.read_bytes()
    connected = next(e for e in _events(sent_out) if e["event"] == "connected")
    assert connected["route"] == route
    counts = re.findall(r"zstd: (\d+) of (\d+) bytes sent compressed", sent_err)
    if "--no-compress" in flags or (env and not flags):
        assert counts == []
        return
    ((packed, raw),) = [(int(a), int(b)) for a, b in counts]
    assert 8_000_000 <= raw <= 12_000_000, raw
    assert packed < raw // 4, (packed, raw)


def test_relay_survives_a_turn_server_without_a_route_to_private_addresses(
    tmp_path: Path,
) -> None:
    """coturn 4.6 drops an allocation when relaying to an unreachable network fails with
    ENETUNREACH; we never ask a public relay to send to a private address."""
    with lab(Site("cone"), Site("symmetric"), server_default_route=False) as the_lab:
        services = start_services(the_lab, tmp_path)
        routes = transfer(the_lab, services, tmp_path)[:2]
    assert routes == ("relay", "relay")


def test_without_turn_and_without_a_direct_path_exit_4_saying_turn_is_needed(
    tmp_path: Path,
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    with lab(Site("cone"), Site("symmetric")) as the_lab:
        services = start_services(the_lab, tmp_path, turn=False)
        sender, code = _send(the_lab, services, tmp_path / "f.bin")
        started = time.monotonic()
        code_received, stdout, _ = _receive(the_lab, services, code, tmp_path, timeout=60)
        elapsed = time.monotonic() - started
        sent_out, _ = sender.communicate(timeout=30)
    assert code_received == 4 and sender.returncode == 4
    for text in (stdout, sent_out):
        message = str(_events(text)[-1]["message"])
        assert "no TURN relay is configured" in message, message
    assert elapsed < 30, elapsed


def test_a_path_that_carries_ice_but_not_dtls_is_named_in_the_error(tmp_path: Path) -> None:
    """ICE checks pass but the router drops every DTLS handshake record (UDP payload starting
    with content type 22): both sides exit 4, and the message says a path was found and the
    encryption handshake did not complete, rather than blaming NAT."""
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    with lab(Site("cone"), Site("cone")) as the_lab:
        router = the_lab.routers[0]
        assert router is not None
        dtls_handshake = "0>>22&0x3C@8>>24=22"  # first byte of the UDP payload
        drop = ["-p", "udp", "-m", "u32", "--u32", dtls_handshake, "-j", "DROP"]
        router.run("iptables", "-I", "FORWARD", *drop)
        services = start_services(the_lab, tmp_path, turn=False)
        sender, code = _send(the_lab, services, tmp_path / "f.bin")
        code_received, stdout, _ = _receive(the_lab, services, code, tmp_path, timeout=60)
        sent_out, _ = sender.communicate(timeout=30)
    assert code_received == 4 and sender.returncode == 4
    for text in (stdout, sent_out):
        message = str(_events(text)[-1]["message"])
        assert "found a network path to the peer (direct)" in message, message
        assert "DTLS" in message, message


def _debug_transfer(
    the_lab: Lab, services: Services, tmp_path: Path, size: int, env: dict[str, str] | None = None
) -> tuple[str, str, str, str]:
    """Send ``size`` random bytes from site 0 to site 1 with --debug on both sides (and ``env``);
    both must succeed with a matching hash. The sender's and the receiver's stdout and stderr."""
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(size))
    out = tmp_path / "out"
    out.mkdir()
    sender, code = _send(the_lab, services, source, "--debug", env=env)
    receiver = _start_receive(the_lab, services, code, out, "--debug", env=env)
    got_out, got_err = receiver.communicate(timeout=120)
    sent_out, sent_err = sender.communicate(timeout=60)
    assert receiver.returncode == 0 and sender.returncode == 0, (got_err[-3000:], sent_err[-3000:])
    assert sha256_file(out / "payload.bin") == sha256_file(source)
    return sent_out, sent_err, got_out, got_err


def test_large_packets_cross_an_mtu_1500_path_that_drops_fragments_as_pieces(
    tmp_path: Path,
) -> None:
    """Two p2pcp peers behind cone NATs, MTU 1500 everywhere, and the sender's uplink drops every
    IP fragment: the 64000-byte probe goes out as datagrams that fit the MTU (pieces), comes
    back, and the transfer runs on large packets with a matching hash."""
    with lab(Site("cone", link=Link(drop_fragments=True)), Site("cone")) as the_lab:
        services = start_services(the_lab, tmp_path, turn=False)
        sent_out, sent_err, got_out, got_err = _debug_transfer(
            the_lab, services, tmp_path, 50_000_000
        )
    assert "the route's MTU is 1500 (44 datagrams)" in sent_err, sent_err[-3000:]
    assert "the probe came back, DATA chunks of 64000 bytes" in sent_err, sent_err[-3000:]


def test_a_path_whose_loss_makes_large_packets_worse_ends_at_the_standard_size(
    tmp_path: Path,
) -> None:
    """8% of the frames each way on the sender's uplink are lost: a 16000-byte packet of 12
    pieces and its parity piece is then lost more than a quarter of the time (parity rebuilds
    one piece, not several; at 3% it still pays, and 16000 beats the standard size), so the
    sender either never gets a probe through (or is still probing when the file is through) or
    steps down to the standard size once it sees the loss (p2pcp/webrtc/large.py); the transfer
    completes with a matching hash either way."""
    with lab(Site("cone", link=Link(delay_ms=1, loss=0.08)), Site("cone")) as the_lab:
        services = start_services(the_lab, tmp_path, turn=False)
        # 30 MB: long enough after a late switch for the loss to show (8 MB once ended 76 ms
        # after the 16000-byte probe came back).
        sent_out, sent_err, got_out, got_err = _debug_transfer(
            the_lab, services, tmp_path, 30_000_000
        )
    switched = "the probe came back" in sent_err
    assert not switched or re.search(r"down from \d+ to 1160", sent_err), sent_err[-3000:]


@pytest.mark.parametrize(
    ("sites", "expected", "size"),
    [
        pytest.param(
            (Site("symmetric"), Site("symmetric")),
            "the probe came back, DATA chunks of 64000 bytes",
            30_000_000,
            id="turn-udp",
        ),
        # coturn drops what of a burst it cannot put on the TCP connection at once: the side
        # behind it leaves the probes unanswered, so the sender keeps the standard size (the
        # second probe, at 16000 bytes, gives up about 4 s in: the transfer must outlast it)
        pytest.param(
            (Site("cone"), Site("cone", block_udp=True)),
            "no echo of the probe, standard size kept (16000)",
            80_000_000,
            id="turn-tcp",
        ),
    ],
)
def test_large_packets_cross_the_turn_relay_as_pieces(
    sites: tuple[Site, Site], expected: str, size: int, tmp_path: Path
) -> None:
    """Both peers behind symmetric NATs: the transfer goes through coturn, and its packets are
    64000 bytes cut into pieces that fit the relay's framing. With the receiver without UDP
    (TURN over TCP) its side answers no probe and the standard size stays. Either way the hash
    matches."""
    with lab(*sites) as the_lab:
        services = start_services(the_lab, tmp_path)
        sent_out, sent_err, got_out, got_err = _debug_transfer(the_lab, services, tmp_path, size)
    for text in (got_out, sent_out):
        assert next(e for e in _events(text) if e["event"] == "connected")["route"] == "relay"
    assert expected in sent_err, sent_err[-3000:]
    # Not asserted: that each side sends through its own allocation (ice.py, fix 6). That
    # engages only where our relay's check succeeded before aioice dropped it at nomination,
    # a race that a loaded machine loses about one run in five (bench/lab.py's relayed row
    # measures what it gains).


@pytest.mark.parametrize(
    "jumbo_lan", [False, True], ids=["mtu-1500", "jumbo-lan-fragments-dropped"]
)
def test_an_earlier_peer_keeps_large_packets_off_where_the_path_does_not_carry_them(
    jumbo_lan: bool, tmp_path: Path
) -> None:
    """Two p2pcp peers that take large packets but not pieces (P2PCP_PIECES=0, as p2pcp before
    pieces), behind cone NATs.

    - MTU 1500 everywhere: a large packet would be fragmented, so none is even probed.
    - The sender on a jumbo-frame LAN (MTU 20000) whose uplink drops every IP fragment: the
      route looks fine from the sender, so it probes; the probe dies on the way, its echo never
      comes, and the standard size stays.

    Either way the transfer completes with a matching hash."""
    earlier = {"P2PCP_PIECES": "0"}
    with lab(Site("cone", link=Link(drop_fragments=True)), Site("cone")) as the_lab:
        if jumbo_lan:
            router = the_lab.routers[0]
            assert router is not None
            the_lab.hosts[0].run("ip", "link", "set", "dev", "eth0", "mtu", "20000")
            router.run("ip", "link", "set", "dev", "lan", "mtu", "20000")
        services = start_services(the_lab, tmp_path, turn=False)
        sent_out, sent_err, got_out, got_err = _debug_transfer(
            the_lab, services, tmp_path, 100_000_000, env=earlier
        )  # outlasts the probes at the standard size
    assert "the route's MTU is 1500, standard size kept" in got_err, got_err[-3000:]
    if jumbo_lan:
        assert "no echo of the probe, standard size kept" in sent_err, sent_err[-3000:]
    else:
        assert "the route's MTU is 1500, standard size kept" in sent_err, sent_err[-3000:]
    assert "the probe came back" not in sent_err + got_err


def _udp_echo_rtt(the_lab: Lab, count: int = 50) -> tuple[float, float]:
    """Median round trip (ms) and loss fraction of UDP echoes from site 0 to the server."""
    median, loss, _, _ = _udp_echoes(the_lab, count)
    return median, loss


def _udp_echoes(the_lab: Lab, count: int) -> tuple[float, float, float, float]:
    """Median, loss fraction, shortest and 95th-percentile round trip (ms) of ``count`` echoes.

    Not the longest: a stall of the whole VM once stretched a single echo to 90 ms under a 50 ms
    bound, and a busy machine (other tests beside) two. A stall lengthens a few echoes; a wrong
    bound lengthens many.
    """
    server = the_lab.start(
        the_lab.server, PYTHON, "-c", ECHO_SERVER, the_lab.server.address, stderr=None
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    probe = subprocess.run(
        the_lab.hosts[0].command(PYTHON, "-c", ECHO_CLIENT, the_lab.server.address, str(count)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    median, loss, low, high = map(float, probe.stdout.split())
    return median, loss, low, high


ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"""

ECHO_CLIENT = """
import socket, statistics, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
rtts, lost = [], 0
s.sendto(b"warm-up", (sys.argv[1], 7007))  # the first packet also waits for ARP: not counted
try:
    s.recv(2048)
except TimeoutError:
    pass
for i in range(1, int(sys.argv[2]) + 1):
    sent = time.monotonic()
    s.sendto(i.to_bytes(4, "big") * 100, (sys.argv[1], 7007))
    try:
        while int.from_bytes(s.recv(2048)[:4], "big") != i:
            pass
        rtts.append((time.monotonic() - sent) * 1000)
    except TimeoutError:
        lost += 1
print(statistics.median(rtts), lost / int(sys.argv[2]), min(rtts),
      sorted(rtts)[int(len(rtts) * 0.95) - 1])
"""


@pytest.mark.parametrize("delay", [10.0, 50.0])
def test_link_emulator_delay_is_within_10_percent(delay: float) -> None:
    with lab(Site("cone", link=Link(delay_ms=delay))) as the_lab:
        rtt, loss = _udp_echo_rtt(the_lab)
    assert loss == 0
    assert abs(rtt - 2 * delay) <= 0.1 * 2 * delay, rtt


def test_link_emulator_jitter_spreads_round_trips_within_its_bounds() -> None:
    # 20 ms +- 5 ms each way: round trips spread over 30..50 ms around a 40 ms median.
    with lab(Site("cone", link=Link(delay_ms=20, jitter_ms=5))) as the_lab:
        median, loss, low, high = _udp_echoes(the_lab, 100)
    assert loss == 0
    assert abs(median - 40) <= 4, median
    assert high - low >= 8, (low, high)  # jitter is there
    assert low >= 29.5 and high <= 55, (low, high)  # and bounded (+5 ms for a busy CPU)


def test_link_emulator_drops_the_set_fraction() -> None:
    # 10% each way: an echo survives with probability 0.81; 400 echoes put the measured loss
    # within 0.12..0.26 with overwhelming probability (6 standard deviations).
    with lab(Site("none", link=Link(delay_ms=1, loss=0.1))) as the_lab:
        _, loss = _udp_echo_rtt(the_lab, count=400)
    assert 0.12 <= loss <= 0.26, loss


@pytest.mark.parametrize(
    "link",
    [
        pytest.param(Link(delay_ms=50, loss=0.01), id="100ms-rtt-1pct-loss"),
        pytest.param(Link(delay_ms=10, loss=0.03), id="20ms-rtt-3pct-loss"),
    ],
)
def test_bad_links_complete_with_a_matching_hash(link: Link, tmp_path: Path) -> None:
    # No TURN server: under loss ICE may otherwise settle on a relay pair whose checks happened
    # to answer first, and the route is part of what is asserted.
    with lab(Site("cone", link=link), Site("cone")) as the_lab:
        services = start_services(the_lab, tmp_path, turn=False)
        routes = transfer(the_lab, services, tmp_path, size=8_000_000)[:2]
    assert routes == ("direct", "direct")


def test_a_cable_cut_mid_transfer_ends_both_sides_with_exit_5(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        f.write(os.urandom(1 << 20) * 300)  # 300 MiB: still moving when the cable is cut
    out = tmp_path / "out"
    out.mkdir()
    with lab(Site("cone"), Site("cone")) as the_lab:
        services = start_services(the_lab, tmp_path)
        sender, code = _send(the_lab, services, source)
        receiver = _start_receive(the_lab, services, code, out)
        _wait_for_progress(receiver)
        the_lab.set_uplink(0, up=False)
        cut = time.monotonic()
        sent_out, _ = sender.communicate(timeout=90)
        got_out, _ = receiver.communicate(timeout=90)
        elapsed = time.monotonic() - cut
        the_lab.set_uplink(0, up=True)
    assert (sender.returncode, receiver.returncode) == (5, 5), (sent_out, got_out)
    for text in (sent_out, got_out):
        # Keep-alives notice the silence after 10 s, before ICE's consent checks (about 30 s).
        assert "stopped answering (nothing for 10 s)" in str(_events(text)[-1]["message"])
    assert elapsed < 25, elapsed  # detected while the cable is still cut (documented: 10 s)
    assert not (out / "big.bin").exists()
    assert any(p.name.endswith(".p2pcp-part") for p in out.iterdir())


def _wait_for_progress(process: subprocess.Popen[str]) -> None:
    """Read ``process``'s events until data has started to arrive."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, "the receiver ended before any data arrived"
        if json.loads(line)["event"] == "progress":
            return
    raise AssertionError("no progress within 60 s")
