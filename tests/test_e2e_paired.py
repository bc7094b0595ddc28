"""Paired devices end to end, with real p2pcp and p2pcp-signal processes: pairing with a code,
then sends without one (``send --to`` / ``receive --from``), the always-on ``listen``, removal,
and rooms a hostile server or a stranger joins with a made-up identity or replayed messages."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from helpers import (
    Result,
    SignalServer,
    finish,
    p2pcp,
    read_line,
    sha256_file,
    start_signal_server,
)
from websockets.sync.client import connect

Device = dict[str, str]
HERE = Path(__file__).parent


def _device(root: Path, name: str) -> Device:
    """A simulated device: a config directory of its own."""
    directory = root / name
    directory.mkdir()
    return {"P2PCP_CONFIG_DIR": str(directory)}


def _pair(server: SignalServer, shower: Device, typer: Device, *flags: str) -> list[Result]:
    """Pair two devices through ``server``; both with --yes and --json."""
    showing = p2pcp("pair", "--yes", "--json", "--server", server.url, *flags, env=shower)
    event = json.loads(read_line(showing))
    assert event["event"] == "code" and event["command"] == "pair", event
    typing = p2pcp("pair", "--yes", "--json", "--server", server.url, event["code"], env=typer)
    return [finish(typing), finish(showing)]


def _devices(device: Device) -> list[dict[str, Any]]:
    listed = finish(p2pcp("devices", "--json", env=device))
    assert listed.code == 0, listed.stderr
    return list(json.loads(listed.stdout)["devices"])


def _rename(device: Device, old: str, new: str) -> None:
    assert finish(p2pcp("devices", "rename", old, new, env=device)).code == 0


def _pair_home_with_phone(server: SignalServer, home: Device, phone: Device, *flags: str) -> None:
    """Pair them, each calling the other ``home`` and ``phone``."""
    results = _pair(server, home, phone, "--name", "phone", *flags)
    assert all(r.code == 0 for r in results), [r.stderr for r in results]
    _rename(phone, results[0].events[-1]["device"], "home")


def test_pair_then_send_and_receive_without_a_code(tmp_path: Path) -> None:
    server = start_signal_server(tmp_path / "server.log")
    laptop, desktop = _device(tmp_path, "laptop"), _device(tmp_path, "desktop")
    try:
        typed, shown = _pair(server, laptop, desktop, "--name", "desk")
        assert typed.code == 0 and shown.code == 0, (typed.stderr, shown.stderr)
        paired = [r.events[-1] for r in (typed, shown)]
        assert all(e["event"] == "paired" for e in paired)
        assert paired[0]["fingerprint"] == paired[1]["fingerprint"]  # the same on both screens
        assert paired[1]["device"] == "desk"  # --name on the showing side
        _rename(desktop, paired[0]["device"], "lap")
        # Each lists the other, by the other's key fingerprint.
        assert _devices(laptop)[0]["fingerprint"] == paired[1]["key"]
        assert [d["name"] for d in _devices(desktop)] == ["lap"]
        for directory in (laptop, desktop):
            where = Path(directory["P2PCP_CONFIG_DIR"])
            assert (where / "identity.pem").stat().st_mode & 0o777 == 0o600
            assert (where / "devices.json").stat().st_mode & 0o777 == 0o600

        # The receiver first, then the sender; then the sender first (it waits for the room).
        data = tmp_path / "notes.bin"
        data.write_bytes(os.urandom(1_500_000))
        for order in ("receiver first", "sender first"):
            out = tmp_path / order.replace(" ", "-")
            out.mkdir()
            receive_args = ["receive", "--from", "desk", "--yes", "--json", "-o", str(out)]
            send_args = ["send", "--to", "lap", "--json", str(data)]
            if order == "receiver first":
                receiver = p2pcp(*receive_args, "--server", server.url, env=laptop)
                assert json.loads(read_line(receiver))["event"] == "listening"
                sender = p2pcp(*send_args, "--server", server.url, env=desktop)
            else:
                sender = p2pcp(*send_args, "--server", server.url, env=desktop)
                assert json.loads(read_line(sender))["event"] == "waiting_device"
                receiver = p2pcp(*receive_args, "--server", server.url, env=laptop)
            got, sent = finish(receiver), finish(sender)
            assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
            assert sha256_file(out / "notes.bin") == sha256_file(data)
            assert "code" not in {e["event"] for e in got.events + sent.events}
            ends = [e for e in got.events + sent.events if e["event"] == "verification"]
            assert ends[0]["verification"] == ends[1]["verification"]
        assert _devices(laptop)[0]["last_seen"] is not None

        # An unknown device name, and a code with --to, are clear errors.
        unknown = finish(p2pcp("send", "--to", "nas", str(data), env=desktop))
        assert unknown.code == 3 and "no paired device is called 'nas'" in unknown.stderr
        both = finish(p2pcp("send", "--to", "lap", "--code", "7-a-b", str(data), env=desktop))
        assert both.code == 2
        _assert_private(server.log_text(), [laptop, desktop], ["desk", "lap"])
    finally:
        server.stop()


def _assert_private(log: str, devices: list[Device], names: list[str]) -> None:
    """The server's log holds no device name, host name, key or fingerprint."""
    import socket

    secrets_here = [*names, socket.gethostname()]
    for device in devices:
        where = Path(device["P2PCP_CONFIG_DIR"])
        for entry in json.loads((where / "devices.json").read_text())["devices"]:
            raw = base64.b64decode(entry["key"])
            secrets_here += [entry["key"], raw.hex(), entry["secret"]]
        for listed in _devices(device):
            secrets_here.append(listed["fingerprint"])
    nameplates = set(re.findall(r"nameplate=(\d+)", log))
    assert nameplates, log  # the rooms were there, under numbers only
    for secret in secrets_here:
        assert secret not in log, secret


def _listen(device: Device, server: SignalServer, out: Path, *flags: str) -> subprocess.Popen[str]:
    listener = p2pcp("listen", "--json", "-o", str(out), "--server", server.url, *flags, env=device)
    assert json.loads(read_line(listener))["event"] == "listening"
    return listener


def _stop(listener: subprocess.Popen[str]) -> Result:
    listener.send_signal(signal.SIGTERM)
    return finish(listener)


def test_listen_serves_two_devices_and_refuses_a_removed_one(tmp_path: Path) -> None:
    server = start_signal_server(tmp_path / "server.log")
    home = _device(tmp_path, "home")
    phone, laptop = _device(tmp_path, "phone"), _device(tmp_path, "laptop")
    out = tmp_path / "inbox"
    out.mkdir()
    try:
        for other, name in ((phone, "phone"), (laptop, "laptop")):
            results = _pair(server, home, other, "--name", name, "--policy", "accept")
            assert all(r.code == 0 for r in results), [r.stderr for r in results]
            _rename(other, results[0].events[-1]["device"], "home")
        listener = _listen(home, server, out)
        files = []
        for n, sender in enumerate((phone, laptop, phone)):
            path = tmp_path / f"photo-{n}.jpg"
            path.write_bytes(os.urandom(400_000 + n))
            files.append(path)
            sent = finish(
                p2pcp("send", "--to", "home", "--server", server.url, str(path), env=sender)
            )
            assert sent.code == 0, sent.stderr
        # A file of a name that exists already, from the other device: kept, saved beside.
        again = tmp_path / "again" / "photo-0.jpg"
        again.parent.mkdir()
        again.write_bytes(b"another photo")
        sent = finish(p2pcp("send", "--to", "home", "--server", server.url, str(again), env=laptop))
        assert sent.code == 0, sent.stderr
        assert (out / "photo-0 (1).jpg").read_bytes() == b"another photo"

        # Two devices at once, one transfer each.
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(8_000_000))
        both = [
            p2pcp("send", "--to", "home", "--server", server.url, str(big), env=device)
            for device in (phone, laptop)
        ]
        results = [finish(process) for process in both]
        if [r.code for r in results] != [0, 0]:
            raise AssertionError([r.stderr for r in results], _stop(listener).stdout)

        # Removed on home: the phone's next send is refused on both sides, as removed.
        assert finish(p2pcp("devices", "remove", "phone", env=home)).code == 0
        refused = finish(
            p2pcp("send", "--to", "home", "--server", server.url, str(files[0]), env=phone)
        )
        assert refused.code == 3 and "home has removed this device" in refused.stderr
        stopped = _stop(listener)
        assert stopped.code == 0, stopped.stderr  # SIGTERM: a clean exit
    finally:
        server.stop()
    for path in files:
        assert sha256_file(out / path.name) == sha256_file(path)
    assert sha256_file(out / "big.bin") == sha256_file(big)
    events = stopped.events
    done = [e["device"] for e in events if e["event"] == "done"]
    assert sorted(done) == ["laptop", "laptop", "laptop", "phone", "phone", "phone"], events
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["device"] == "phone", errors
    assert errors[0]["exit_code"] == 3 and "removed" in errors[0]["message"]
    assert not list(out.glob(".*p2pcp-part"))


def test_listen_asks_and_refuses_by_policy(tmp_path: Path) -> None:
    """Policy ``ask`` with no terminal attached, and ``refuse``: refused before any offer,
    with the reason on the sender's side (exit 6)."""
    server = start_signal_server(tmp_path / "server.log")
    home, phone = _device(tmp_path, "home"), _device(tmp_path, "phone")
    out = tmp_path / "inbox"
    out.mkdir()
    (tmp_path / "f").write_bytes(b"x")
    try:
        _pair_home_with_phone(server, home, phone)
        listener = _listen(home, server, out)
        send = ("send", "--to", "home", "--server", server.url, str(tmp_path / "f"))
        unattended = finish(p2pcp(*send, env=phone))
        assert unattended.code == 6 and "nobody is at it to answer" in unattended.stderr
        assert finish(p2pcp("devices", "policy", "phone", "refuse", env=home)).code == 0
        deadline = time.monotonic() + 30
        while True:  # the listener reads the store again within seconds
            refused = finish(p2pcp(*send, env=phone))
            if "policy for it is 'refuse'" in refused.stderr or time.monotonic() > deadline:
                break
        assert refused.code == 6 and "policy for it is 'refuse'" in refused.stderr
        _stop(listener)
    finally:
        server.stop()
    assert not (out / "f").exists()


def _nameplate_of_room(server: SignalServer, before: set[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = set(re.findall(r"allocate side=\S+ nameplate=(\d{8})", server.log_text()))
        if found - before:
            return str(sorted(found - before)[0])
        time.sleep(0.05)
    raise AssertionError(server.log_text())


def test_a_made_up_identity_or_a_replay_is_refused_and_the_device_still_gets_through(
    tmp_path: Path,
) -> None:
    """What a hostile server (which sees every nameplate and relayed message) can do in the
    paired device's room: join with a key agreement of its own, or replay what the real
    device sent last time. Either fails the key confirmation: the listener says so, writes
    nothing, keeps the room, and the real device then sends as usual."""
    server = start_signal_server(
        tmp_path / "server.log", "--mode", "record", module=[str(HERE / "hostile_server.py")]
    )
    home, phone = _device(tmp_path, "home"), _device(tmp_path, "phone")
    out = tmp_path / "inbox"
    out.mkdir()
    data = tmp_path / "doc.txt"
    data.write_bytes(b"the real one")
    send = ("send", "--to", "home", "--server", server.url, str(data))
    try:
        _pair_home_with_phone(server, home, phone, "--policy", "accept")
        listener = _listen(home, server, out)
        first = finish(p2pcp(*send, env=phone))
        assert first.code == 0, first.stderr
        recorded = _relayed(server.log_text())  # the phone's messages of that transfer
        (out / "doc.txt").unlink()

        for attack in ("made-up identity", "replay"):
            plate = _nameplate_of_room(server, set())
            with connect(server.url) as ws:
                json.loads(ws.recv())
                deadline = time.monotonic() + 20
                while True:  # the room opens again a moment after the last attempt
                    ws.send(json.dumps({"type": "join", "nameplate": plate}))
                    reply = json.loads(ws.recv())
                    if reply["type"] == "joined":
                        break
                    assert time.monotonic() < deadline, reply
                    time.sleep(0.1)
                if attack == "replay":
                    bodies = recorded[:2]  # its key agreement message and its confirmation
                else:
                    fake = base64.b64encode(os.urandom(32)).decode()
                    bodies = [{"kind": "paired", "msg": fake}, {"kind": "sealed", "box": fake}]
                for body in bodies:
                    ws.send(json.dumps({"type": "relay", "body": body}))
                assert json.loads(ws.recv())["body"]["kind"] == "paired"  # the listener's
            _wait_for(listener, "without this pairing's keys joined the room of phone")
            assert not (out / "doc.txt").exists()
        again = finish(p2pcp(*send, env=phone))
        assert again.code == 0, again.stderr
        stopped = _stop(listener)
    finally:
        server.stop()
    assert (out / "doc.txt").read_bytes() == b"the real one"
    assert [e["event"] for e in stopped.events].count("done") == 1


def _relayed(log: str) -> list[dict[str, Any]]:
    """The first two bodies the joining side (the sender) relayed: its key agreement message
    and its key confirmation."""
    bodies = [json.loads(m) for m in re.findall(r"relayed by=joiner body=(\{.*\})", log)]
    kinds = [b["kind"] for b in bodies]
    start = kinds.index("paired")  # after the pairing's own messages (pake, sealed...)
    assert kinds[start : start + 2] == ["paired", "sealed"], log
    return bodies[start : start + 2]


def _wait_for(process: subprocess.Popen[str], text: str) -> None:
    """Read the listener's events until one holds ``text``."""
    deadline = time.monotonic() + 30
    while True:
        line = read_line(process)
        assert line and time.monotonic() < deadline, f"no {text!r} from the listener"
        if text in line:
            return


def test_the_sender_refuses_a_room_holder_without_the_pairing(tmp_path: Path) -> None:
    """A hostile server answers the sender in the device's room with a made-up identity: the
    sender stops (exit 3) before sending anything."""
    server = start_signal_server(tmp_path / "server.log")
    home, phone = _device(tmp_path, "home"), _device(tmp_path, "phone")
    (tmp_path / "f").write_bytes(b"secret")
    try:
        _pair_home_with_phone(server, home, phone)
        # Learn the room's nameplate as the server does, then hold it in the device's place.
        receiver = p2pcp("receive", "--from", "phone", "--yes", "--server", server.url, env=home)
        plate = _nameplate_of_room(server, set())
        receiver.kill()
        receiver.wait()
        with connect(server.url) as ws:
            json.loads(ws.recv())
            deadline = time.monotonic() + 20
            while True:  # the killed receiver's room goes once the server sees it closed
                ws.send(json.dumps({"type": "allocate", "nameplate": plate}))
                if json.loads(ws.recv())["type"] == "allocated" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            sender = p2pcp(
                "send", "--to", "home", "--server", server.url, str(tmp_path / "f"), env=phone
            )
            assert json.loads(ws.recv())["type"] == "peer_joined"
            fake = base64.b64encode(os.urandom(32)).decode()
            ws.send(json.dumps({"type": "relay", "body": {"kind": "paired", "msg": fake}}))
            ws.send(json.dumps({"type": "relay", "body": {"kind": "sealed", "box": fake}}))
            refused = finish(sender)
            seen = []
            while True:
                message = json.loads(ws.recv())
                seen.append(message)
                if message["type"] != "relay":
                    break
    finally:
        server.stop()
    assert refused.code == 3, refused.stderr
    assert "could not prove it is home" in refused.stderr
    # Only the key agreement and the confirmation came from the sender: no offer, no file.
    assert [m["body"]["kind"] for m in seen if m["type"] == "relay"] == ["paired", "sealed"]


def test_listen_stopped_mid_transfer_keeps_the_partial_and_the_next_send_resumes(
    tmp_path: Path,
) -> None:
    server = start_signal_server(tmp_path / "server.log")
    home, phone = _device(tmp_path, "home"), _device(tmp_path, "phone")
    out = tmp_path / "inbox"
    out.mkdir()
    big = tmp_path / "film.mkv"
    big.write_bytes(os.urandom(160 * 1024 * 1024))
    send = ("send", "--to", "home", "--server", server.url, str(big))
    try:
        _pair_home_with_phone(server, home, phone, "--policy", "accept")
        listener = _listen(home, server, out)
        sender = p2pcp(*send, env=phone)
        _wait_for(listener, '"event": "progress"')
        stopped = _stop(listener)
        assert stopped.code == 0, stopped.stderr
        cut = finish(sender)
        assert cut.code != 0  # the sender learns the transfer stopped
        partial = out / ".film.mkv.p2pcp-part"
        assert partial.exists() and 0 < partial.stat().st_size < big.stat().st_size
        listener = _listen(home, server, out)
        again = finish(p2pcp(*send, "--json", env=phone))
        assert again.code == 0, again.stderr
        resumed = [e for e in again.events if e["event"] == "resuming"]
        assert resumed and resumed[0]["bytes_skipped"] > 0, again.events
        _stop(listener)
    finally:
        server.stop()
    assert sha256_file(out / "film.mkv") == sha256_file(big)
    assert not partial.exists()
