"""Resuming interrupted transfers, with real processes killed by SIGKILL mid-transfer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Result,
    SignalServer,
    finish,
    p2pcp,
    read_line,
    sender_and_receiver_dirs,
    sha256_file,
    start_send,
    tree,
)

MIB = 1024 * 1024
STANDARD_PACKETS = {"P2PCP_LARGE_PACKETS": "0", "P2PCP_TEST_CONSENT": "1,3"}
"""For a broken run: standard packets (so the transfer outlasts the kill) and a lost peer noticed
after about 3 s instead of 30 (the test-only consent setting, p2pcp/webrtc/ice.py)."""
"""For the runs a test breaks: standard-size packets (about 35 MB/s on one host instead of
300) leave the test time to break them before they end."""


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))


def _start(
    server: SignalServer,
    sources: list[str],
    out: Path,
    *receive_args: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """A sender of ``sources`` and a receiver (with ``receive_args``) into ``out``, both with
    --json and ``env``."""
    sender, code = start_send(server, *sources, env=env)
    receiver = p2pcp(
        "receive",
        "--server",
        server.url,
        "--json",
        "--yes",
        *receive_args,
        "-o",
        str(out),
        code,
        env=env,
    )
    return sender, receiver


def _broken_run(
    server: SignalServer,
    sources: list[str],
    out: Path,
    victim: str,
    stop_when: Callable[[dict[str, Any]], bool],
) -> None:
    """Start a transfer and SIGKILL ``victim`` once a receiver progress event satisfies
    ``stop_when``; wait for the survivor to give up."""
    sender, receiver = _start(server, sources, out, env=STANDARD_PACKETS)
    while True:
        line = read_line(receiver)
        assert line, "the receiver ended before the break"
        event = json.loads(line)
        assert event["event"] != "done", "the transfer finished before the break"
        if event["event"] == "progress" and stop_when(event):
            break
    killed, survivor = (sender, receiver) if victim == "send" else (receiver, sender)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    result = finish(survivor, timeout=90)
    assert result.code == 5, result.stderr  # the survivor notices the peer is gone


def _resume(server: SignalServer, sources: list[str], out: Path) -> dict[str, Any]:
    sender, receiver = _start(server, sources, out)
    got = finish(receiver, timeout=300)
    sent = finish(sender, timeout=60)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert sent.events[-1]["bytes_skipped"] == got.events[-1]["bytes_skipped"]
    assert any(e["event"] == "resuming" for e in got.events)
    assert not list(out.rglob("*.p2pcp-part"))  # a completed transfer leaves no partial state
    return dict(got.events[-1])


@pytest.mark.parametrize("victim", ["send", "receive"])
def test_kill_at_half_then_resume(signal_server: SignalServer, tmp_path: Path, victim: str) -> None:
    size = 200 * MIB
    src = tmp_path / "big.bin"
    _write_random(src, size)
    out = tmp_path / "out"
    out.mkdir()
    _broken_run(signal_server, [str(src)], out, victim, lambda e: e["bytes"] >= size // 2)
    assert not (out / "big.bin").exists()
    partial = out / ".big.bin.p2pcp-part"
    assert partial.stat().st_size >= size * 0.45

    done = _resume(signal_server, [str(src)], out)
    assert sha256_file(out / "big.bin") == sha256_file(src)
    assert done["bytes"] == size
    assert done["bytes_transferred"] <= size * 0.55, done
    assert done["bytes_transferred"] + done["bytes_skipped"] == size


def test_directory_broken_in_file_30(signal_server: SignalServer, tmp_path: Path) -> None:
    src = tmp_path / "album"
    src.mkdir()
    for i in range(50):
        _write_random(src / f"f{i:02d}.bin", 4 * MIB)
    out = tmp_path / "out"
    out.mkdir()

    # Kill the receiver once file 30 is half written: what is on disk is then exactly what a
    # resume starts from (killing the sender instead lets up to a credit window of data that is
    # already on its way arrive and finish more files).
    sender, receiver = _start(signal_server, [str(src)], out, env=STANDARD_PACKETS)
    partial = out / "album" / ".f29.bin.p2pcp-part"
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size >= 2 * MIB):
        assert time.monotonic() < deadline and receiver.poll() is None, "no break in file 30"
        time.sleep(0.001)
    receiver.send_signal(signal.SIGKILL)
    receiver.wait(10)
    assert finish(sender, timeout=90).code == 5
    assert (out / "album" / "f28.bin").exists() and not (out / "album" / "f29.bin").exists()
    assert (out / "album" / ".f29.bin.p2pcp-part").exists()

    done = _resume(signal_server, [str(src)], out)
    assert tree(out / "album") == tree(src)
    assert done["bytes_transferred"] <= 200 * MIB * 0.55, done
    assert done["bytes_skipped"] >= 29 * 4 * MIB  # files 1-29 were already complete


def test_a_source_modified_between_runs_is_sent_again_whole(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    size = 64 * MIB
    src = tmp_path / "data.bin"
    _write_random(src, size)
    out = tmp_path / "out"
    out.mkdir()
    _broken_run(signal_server, [str(src)], out, "send", lambda e: e["bytes"] >= size // 2)
    with src.open("r+b") as f:  # change a byte inside the part the receiver already holds
        f.seek(1000)
        f.write(bytes([f.read(1)[0] ^ 0xFF]))

    sender, receiver = _start(signal_server, [str(src)], out)
    got = finish(receiver)
    assert finish(sender).code == 0 and got.code == 0, got.stderr
    done = got.events[-1]
    assert done["bytes_transferred"] == size and done["bytes_skipped"] == 0
    assert sha256_file(out / "data.bin") == sha256_file(src)


def _conflicting(tmp_path: Path) -> tuple[list[str], Path]:
    """Four offered files against an output directory holding: the same ``same.txt``, a
    different ``other.txt`` of the same size, a different ``longer.txt`` of another size, and
    nothing of ``new.txt``."""
    src, out = sender_and_receiver_dirs(
        tmp_path,
        [
            ("same.txt", "same content", "same content"),
            ("other.txt", "new content!", "old content!"),
            ("longer.txt", "new and longer", "old"),
            ("new.txt", "brand new", None),
        ],
    )
    return [str(src / n) for n in ("same.txt", "other.txt", "longer.txt", "new.txt")], out


def _receive_again(server: SignalServer, code: str, out: Path, *args: str) -> Result:
    return finish(
        p2pcp("receive", "--server", server.url, "--json", "--yes", *args, "-o", str(out), code)
    )


def test_conflicts_are_marked_per_file_and_a_refusal_keeps_the_code(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    sources, out = _conflicting(tmp_path)
    before = {p.name: p.read_text() for p in out.iterdir()}
    sender, code = start_send(signal_server, *sources)
    got = _receive_again(signal_server, code, out)
    # Refused (no flag chose what to do with the two that differ); nothing written.
    assert got.code == 6, got.stderr
    offer = next(e for e in got.events if e["event"] == "offer")
    assert [(e["path"], e["status"]) for e in offer["entries"]] == [
        ("same.txt", "identical"),
        ("other.txt", "differs"),
        ("longer.txt", "differs"),
        ("new.txt", "new"),
    ]
    assert offer["entries"][0]["here"] == len("same content")
    message = got.events[-1]["message"]
    assert "2 files here differ" in message and "--skip-existing" in message
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    # The sender stays, with the same code: the receiver runs again with a choice.
    assert sender.poll() is None, finish(sender).stdout
    got = _receive_again(signal_server, code, out, "--rename")
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert any("still waiting" in e.get("message", "") for e in sent.events)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*before, "other (1).txt", "longer (1).txt", "new.txt"]
    )
    assert {n: (out / n).read_text() for n in before} == before  # nothing replaced
    assert (out / "other (1).txt").read_text() == "new content!"
    assert (out / "longer (1).txt").read_text() == "new and longer"
    assert got.events[-1]["bytes_skipped"] == len("same content")


@pytest.mark.parametrize("choice", ["--skip-existing", "--overwrite"])
def test_skip_existing_sends_nothing_of_them_and_overwrite_replaces_them(
    signal_server: SignalServer, tmp_path: Path, choice: str
) -> None:
    sources, out = _conflicting(tmp_path)
    sender, code = start_send(signal_server, *sources)
    got = _receive_again(signal_server, code, out, choice)
    assert got.code == 0 and finish(sender).code == 0, got.stderr
    done = got.events[-1]
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(s).name for s in sources)
    assert (out / "new.txt").read_text() == "brand new"
    if choice == "--skip-existing":
        assert (out / "other.txt").read_text() == "old content!"
        assert (out / "longer.txt").read_text() == "old"
        assert done["bytes_transferred"] == len("brand new")  # the others never moved
    else:
        assert (out / "other.txt").read_text() == "new content!"
        assert (out / "longer.txt").read_text() == "new and longer"
        assert done["bytes_transferred"] == len("new content!new and longerbrand new")


def test_no_resume_starts_over(signal_server: SignalServer, tmp_path: Path) -> None:
    size = 64 * MIB
    src = tmp_path / "data.bin"
    _write_random(src, size)
    out = tmp_path / "out"
    out.mkdir()
    _broken_run(signal_server, [str(src)], out, "send", lambda e: e["bytes"] >= size // 2)
    sender, receiver = _start(signal_server, [str(src)], out, "--no-resume")
    got = finish(receiver)
    assert finish(sender).code == 0 and got.code == 0
    assert got.events[-1]["bytes_transferred"] == size
    assert sha256_file(out / "data.bin") == sha256_file(src)


def test_stale_partials_are_listed(signal_server: SignalServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = out / ".old.iso.p2pcp-part"
    old.write_bytes(b"x")
    os.utime(old, (1, 1))
    (out / ".fresh.p2pcp-part").write_bytes(b"x")
    got = finish(
        p2pcp(
            "receive",
            "--server",
            signal_server.url,
            "--json",
            "--yes",
            "-o",
            str(out),
            "99-acorn-zebra",
        )
    )
    warnings = [e["message"] for e in got.events if e["event"] == "warning"]
    assert len(warnings) == 1 and ".old.iso.p2pcp-part" in warnings[0]


@pytest.mark.parametrize("held", ["prefix", "other"])
def test_a_hard_link_planted_at_a_partial_name_is_never_written_through(
    signal_server: SignalServer, tmp_path: Path, held: str
) -> None:
    """Another local user plants `.data.bin.p2pcp-part` as a hard link to a file outside the
    output directory: holding a prefix of the offered file (it would be resumed) or anything
    else (it would be truncated). The link is never opened for writing: the outside file stays
    as it was, and the received file is whole."""
    data = os.urandom(2 * MIB)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    victim = tmp_path / "victim"
    victim.write_bytes(data[:MIB] if held == "prefix" else b"precious\n" * 1000)
    before = victim.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / ".data.bin.p2pcp-part")
    sender, receiver = _start(signal_server, [str(src)], out)
    got = finish(receiver)
    assert finish(sender).code == 0 and got.code == 0, got.stderr
    assert victim.read_bytes() == before
    assert victim.stat().st_nlink == 1  # the planted name was replaced, not written through
    assert (out / "data.bin").read_bytes() == data
    assert got.events[-1]["bytes_skipped"] == 0


def test_an_interrupted_receiver_says_what_it_kept_and_partials_can_be_listed_and_cleaned(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """Ctrl-C mid-transfer ends with "N MiB kept: run the same command again to resume";
    --list-partials shows the hidden partial files (and old ones in subdirectories), and
    --clean-partials removes them."""
    src = tmp_path / "data.bin"
    _write_random(src, 64 * MIB)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / ".old.iso.p2pcp-part").write_bytes(b"x" * 1000)
    sender, receiver = _start(signal_server, [str(src)], out, env=STANDARD_PACKETS)
    while True:
        event = json.loads(read_line(receiver))
        if event["event"] == "progress" and event["bytes"] >= 8 * MIB:
            break
    receiver.send_signal(signal.SIGINT)
    got = finish(receiver)
    finish(sender)
    assert got.code == 130, got.stderr
    kept = [e["message"] for e in got.events if e["event"] == "warning"]
    assert kept and re.fullmatch(r"[\d.]+ MiB kept: run the same command again to resume", kept[-1])
    listed = finish(p2pcp("receive", "--list-partials", "-o", str(out)))
    assert listed.code == 0, listed.stderr
    assert ".data.bin.p2pcp-part" in listed.stderr and "sub/.old.iso.p2pcp-part" in listed.stderr
    assert "2 partial files" in listed.stderr
    listed_json = json.loads(
        finish(p2pcp("receive", "--list-partials", "--json", "-o", str(out))).stdout
    )
    assert len(listed_json["partials"]) == 2
    cleaned = finish(p2pcp("receive", "--clean-partials", "-o", str(out)))
    assert cleaned.code == 0 and "2 partial files" in cleaned.stderr
    assert not list(out.rglob("*.p2pcp-part")) and (out / "sub").is_dir()
