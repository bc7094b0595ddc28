"""No server on a LAN: mDNS discovery and the embedded rendezvous, inside test namespaces only
(no multicast ever reaches this machine's real network)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PYTHON, finish, read_line, sha256_file
from netns import Host, lan

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")},
    "P2PCP_CONFIG": os.devnull,
}


def _send(host: Host, path: Path) -> tuple[subprocess.Popen[str], str]:
    sender = subprocess.Popen(
        host.command(PYTHON, "-m", "p2pcp", "send", "--json", str(path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert sender.stdout is not None
    first = json.loads(sender.stdout.readline())
    assert first["event"] == "code" and first["server"] is None, first
    return sender, first["code"]


def _receive(
    host: Host, code: str, out: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.command(PYTHON, "-m", "p2pcp", "receive", "--json", "--yes", "-o", str(out), code),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_two_processes_on_one_host_without_a_server(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(os.urandom(5_000_000))
    out = tmp_path / "out"
    out.mkdir()
    with lan(1) as (host,):
        sender, code = _send(host, tmp_path / "photo.jpg")
        got = _receive(host, code, out)
        sent_out, sent_err = sender.communicate(timeout=60)
    assert got.returncode == 0 and sender.returncode == 0, (got.stderr, sent_err)
    assert sha256_file(out / "photo.jpg") == sha256_file(tmp_path / "photo.jpg")
    events = _events(got.stdout)
    assert events[0] == {"event": "searching", "nameplate": code.split("-")[0]}


@pytest.mark.parametrize("ipv6_only", [False, True], ids=["ipv4", "ipv6-only"])
def test_two_hosts_on_one_lan_find_each_other(tmp_path: Path, ipv6_only: bool) -> None:
    """Also on a LAN with only IPv6 addresses (fd77::/64): announced and browsed over IPv6,
    the embedded server on every address. (Before, `send` exited 4 there: "no network
    interface to announce the transfer on".)"""
    (tmp_path / "report.pdf").write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()
    with lan(2, ipv6_only=ipv6_only) as (sending, receiving):
        sender, code = _send(sending, tmp_path / "report.pdf")
        got = _receive(receiving, code, out)
        _, sent_err = sender.communicate(timeout=60)
    assert got.returncode == 0 and sender.returncode == 0, got.stderr
    # Nothing from zeroconf's own log (its mDNS socket on ::1 has no route) on stderr.
    assert "zeroconf" not in got.stderr + sent_err, (got.stderr, sent_err)
    assert sha256_file(out / "report.pdf") == sha256_file(tmp_path / "report.pdf")
    connected = next(e for e in _events(got.stdout) if e["event"] == "connected")
    assert connected["route"] == "direct"
    peer = str(connected["peer"])
    assert peer.startswith(f"[{sending.address}]:" if ipv6_only else f"{sending.address}:"), peer


def test_a_code_nobody_announces_exits_4_within_10_seconds(tmp_path: Path) -> None:
    with lan(2) as (_, receiving):
        started = time.monotonic()
        got = _receive(receiving, "999-acorn-zebra", tmp_path, timeout=30)
        elapsed = time.monotonic() - started
    assert got.returncode == 4
    message = _events(got.stdout)[-1]["message"]
    assert "no sender with code number 999" in str(message) and "--server" in str(message)
    assert elapsed < 10


def test_a_chosen_code_is_announced_under_its_own_number(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("chosen")
    out = tmp_path / "out"
    out.mkdir()
    code = "4321-guitar-ocean"
    with lan(2) as (sending, receiving):
        sender = subprocess.Popen(
            sending.command(PYTHON, "-m", "p2pcp", "send", "--json", str(tmp_path / "f.txt")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**ENV, "P2PCP_CODE": code},
        )
        assert sender.stdout is not None
        assert json.loads(sender.stdout.readline())["code"] == code
        got = _receive(receiving, code, out)
        sender.communicate(timeout=60)
    assert got.returncode == 0 and sender.returncode == 0, got.stdout
    assert (out / "f.txt").read_text() == "chosen"


def _doctor(host: Host) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        host.command(PYTHON, "-m", "p2pcp", "doctor", "--json"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    report: dict[str, object] = json.loads(done.stdout.splitlines()[0])["lan"]
    return done.returncode, report


def _steps(report: dict[str, object]) -> dict[str, bool]:
    return {str(s["name"]): bool(s["ok"]) for s in report["steps"]}  # type: ignore[attr-defined]


def test_doctor_without_a_server_checks_the_lan_mode_and_runs_a_transfer() -> None:
    """All well: each check passes and a real 4 MiB transfer through the embedded server and
    mDNS is verified, with its speed. A firewall dropping TCP to the LAN address, or mDNS
    blocked, is named, and doctor exits 4."""
    with lan(1) as (host,):
        code, report = _doctor(host)
        assert code == 0, report
        assert _steps(report) == {
            "interfaces": True,
            "mDNS": True,
            "firewall": True,
            "transfer": True,
        }
        assert isinstance(report["mb_per_s"], float) and report["mb_per_s"] > 0
        host.run(
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "-d",
            host.address,
            "--dport",
            "1024:65535",
            "-j",
            "DROP",
        )
        code, report = _doctor(host)
        assert code == 4 and _steps(report) == {"interfaces": True, "mDNS": True, "firewall": False}
        assert "firewall" in " ".join(map(str, report["advice"])), report  # type: ignore[call-overload]
        host.run("iptables", "-F", "INPUT")
        host.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "5353", "-j", "DROP")
        code, report = _doctor(host)
        assert code == 4 and _steps(report) == {"interfaces": True, "mDNS": False}, report


def test_paired_devices_pair_and_send_on_a_lan_without_a_server(tmp_path: Path) -> None:
    """``pair`` with no server (the showing side serves the LAN, as ``send`` does), then
    ``receive --from`` announces the pairing's room by mDNS and ``send --to`` finds it."""
    devices = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        devices.append({**ENV, "P2PCP_CONFIG_DIR": str(tmp_path / name)})
    data = tmp_path / "video.bin"
    data.write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()

    def start(host: Host, device: dict[str, str], *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            host.command(PYTHON, "-m", "p2pcp", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=device,
        )

    with lan(2) as (first, second):
        showing = start(first, devices[0], "pair", "--yes", "--json", "--name", "two")
        code = json.loads(read_line(showing))["code"]
        typing = start(second, devices[1], "pair", "--yes", "--json", "--name", "one", code)
        paired = [finish(typing), finish(showing)]
        assert [r.code for r in paired] == [0, 0], [r.stderr for r in paired]
        receiver = start(
            first, devices[0], "receive", "--from", "two", "--yes", "--json", "-o", str(out)
        )
        assert json.loads(read_line(receiver)) == {
            "event": "listening",
            "devices": ["two"],
            "server": None,
        }
        sent = finish(start(second, devices[1], "send", "--to", "one", "--json", str(data)))
        got = finish(receiver)
    assert sent.code == 0 and got.code == 0, (sent.stderr, got.stderr)
    assert sha256_file(out / "video.bin") == sha256_file(data)
