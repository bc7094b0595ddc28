"""Security with real processes: one guess per code, crowded rooms, the code kept out of sight,
and a prober that joins and leaves without guessing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from helpers import (
    SignalServer,
    finish,
    join_and_leave,
    p2pcp,
    read_line,
    receive,
    start_send,
)


def test_wrong_code_stops_both_sides_and_kills_the_room(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("top secret")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(tmp_path / "secret.txt"))
    nameplate, first, second = code.split("-")
    wrong_word = "zebra" if second != "zebra" else "acorn"
    got = receive(signal_server, f"{nameplate}-{first}-{wrong_word}", "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 3 and sent.code == 3, (got.stderr, sent.stderr)
    for result in (got, sent):
        assert "wrong code" in result.events[-1]["message"]
        assert "guess" in result.events[-1]["message"]
    # The room is dead: the right code no longer works.
    again = receive(signal_server, code, "--yes", "-o", str(out))
    assert again.code == 3
    assert list(out.iterdir()) == []


def test_third_party_is_refused_and_the_real_peers_carry_on(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    (tmp_path / "doc.txt").write_text("for the real receiver")
    out = tmp_path / "out"
    out.mkdir()
    intruder_out = tmp_path / "intruder"
    intruder_out.mkdir()
    sender, code = start_send(signal_server, str(tmp_path / "doc.txt"))
    master, slave = os.openpty()
    try:
        real = p2pcp("receive", "--server", signal_server.url, "-o", str(out), code, stdin=slave)
        # The peers are connected (and the real receiver waits at its prompt) once the sender
        # reports the connection; both still hold the room.
        while '"connected"' not in read_line(sender):
            pass
        intruder = receive(signal_server, code, "--yes", "-o", str(intruder_out))
        assert intruder.code == 3
        assert "already in use" in intruder.events[-1]["message"]
        os.write(master, b"y\n")
        got = finish(real)
    finally:
        os.close(master)
        os.close(slave)
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert (out / "doc.txt").read_text() == "for the real receiver"
    assert list(intruder_out.iterdir()) == []


def test_code_from_the_environment_stays_out_of_argv_and_logs(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(50_000_000))
    out = tmp_path / "out"
    out.mkdir()
    code = "4242-guitar-ocean"
    env = {"P2PCP_CODE": code, "P2PCP_SERVER": signal_server.url}
    sender = p2pcp("send", "--debug", "--json", str(tmp_path / "f.bin"), env=env)
    first = read_line(sender)
    assert '"code": "4242-guitar-ocean"' in first
    receiver = p2pcp("receive", "--debug", "--yes", "-o", str(out), env=env)
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for pid in (sender.pid, receiver.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert "p2pcp" in cmdline and "guitar" not in cmdline
    assert "guitar" not in listing
    got, sent = finish(receiver), finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert "DEBUG" in got.stderr  # debug logging was on
    for text in (got.stderr, sent.stderr):
        assert "guitar" not in text and "ocean" not in text
    signal_server.stop()
    server_log = signal_server.log_text()
    assert "4242" in server_log and "guitar" not in server_log


def test_chosen_code_already_in_use(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    env = {"P2PCP_CODE": "77-guitar-ocean", "P2PCP_SERVER": signal_server.url}
    first = p2pcp("send", "--json", str(tmp_path / "f"), env=env)
    assert "77-guitar-ocean" in read_line(first)
    second = finish(p2pcp("send", "--json", str(tmp_path / "f"), env=env))
    first.terminate()
    finish(first)
    assert second.code == 3
    assert "in use" in second.events[-1]["message"]


def test_a_prober_that_joins_and_leaves_without_guessing_does_not_end_the_sender(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """A join that closes without a SPAKE2 message made no guess: the sender keeps waiting,
    says that someone connected and left, and the real receiver then gets the file with the
    same code. (Before, the first such join ended the sender with "the peer left".)"""
    (tmp_path / "doc.txt").write_text("still for the real receiver")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(tmp_path / "doc.txt"))
    asyncio.run(join_and_leave(signal_server.url, code.split("-")[0], 3))
    notices = [json.loads(read_line(sender)) for _ in range(3)]
    assert [n["event"] for n in notices] == ["warning"] * 3, notices
    assert "left without trying the code" in notices[0]["message"]
    got = receive(signal_server, code, "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert (out / "doc.txt").read_text() == "still for the real receiver"


def _dotfile_offer(src: Path) -> list[str]:
    """Ten photos first, then a startup file and an executable `ls` in dot directories: what a
    hostile sender hides below the first rows of the offer table."""
    src.mkdir()
    names = []
    for n in range(10):
        (src / f"photo{n}.jpg").write_bytes(os.urandom(100))
        names.append(f"photo{n}.jpg")
    (src / ".config/autostart").mkdir(parents=True)
    (src / ".config/autostart/update.desktop").write_text("[Desktop Entry]\nExec=sh -c evil\n")
    (src / ".local/bin").mkdir(parents=True)
    (src / ".local/bin/ls").write_text("#!/bin/sh\nevil\n")
    (src / ".local/bin/ls").chmod(0o755)
    return [*names, ".config", ".local"]


def test_the_prompt_names_hidden_and_executable_entries_and_home_dot_entries_need_consent(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """Whatever the 10-row table cuts, the hidden entries and executables are named; an offer
    that creates dot entries directly in the home directory is refused under --yes alone and
    accepted with --allow-hidden. Elsewhere --yes accepts it, still naming them."""
    src = tmp_path / "src"
    names = _dotfile_offer(src)
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runs = {}
    for name, out, extra in (
        ("home --yes", home, []),
        ("elsewhere --yes", elsewhere, []),
        ("home --yes --allow-hidden", home, ["--allow-hidden"]),
    ):
        sender, code = start_send(signal_server, *names, cwd=src)
        receiver = p2pcp(
            "receive",
            "--server",
            signal_server.url,
            "--yes",
            *extra,
            "-o",
            str(out),
            code,
            env={"HOME": str(home)},
        )
        runs[name] = (finish(receiver), finish(sender))
        if name == "home --yes":
            assert list(home.iterdir()) == []  # refused: nothing written
    refused, sent = runs["home --yes"]
    assert refused.code == 6 and sent.code == 6, (refused.stderr, sent.stderr)
    assert "would create .config, .local directly in your home directory" in refused.stderr
    assert "--allow-hidden" in refused.stderr
    for name, (got, _) in runs.items():
        assert "... and 6 more" in got.stderr, name  # the table cut the dot entries
        assert "Hidden (2): .config/ (and 2 inside), .local/ (and 2 inside)" in got.stderr, name
        assert "Executable (1): .local/bin/ls" in got.stderr, name
    for out in (elsewhere, home):
        got, sent = runs["elsewhere --yes" if out == elsewhere else "home --yes --allow-hidden"]
        assert got.code == 0 and sent.code == 0, got.stderr
        assert os.access(out / ".local/bin/ls", os.X_OK)
        assert (out / ".config/autostart/update.desktop").exists()


def test_look_alike_separators_are_marked_and_written_as_one_name(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """`photos∕..∕..∕.bashrc` (U+2215 DIVISION SLASH) is one literal name: written as such,
    and marked in the offer for people and in --json for scripts."""
    name = "photos\u2215..\u2215..\u2215.bashrc"
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text("alias ls=evil\n")
    (src / "plain.txt").write_text("plain\n")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, name, "plain.txt", cwd=src)
    human = finish(p2pcp("receive", "--server", signal_server.url, "--yes", "-o", str(out), code))
    assert human.code == 0 and finish(sender).code == 0, human.stderr
    assert (
        f"Look-alike separators or blank characters (1; written as one literal name each): {name}"
        in human.stderr
    )
    assert "look-alike characters" in human.stderr  # the table's note column
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "plain.txt"])
    again = tmp_path / "again"
    again.mkdir()
    sender, code = start_send(signal_server, name, "plain.txt", cwd=src)
    got = receive(signal_server, code, "--yes", "-o", str(again))
    assert got.code == 0 and finish(sender).code == 0
    offer = next(e for e in got.events if e["event"] == "offer")
    assert [(e["path"], e["lookalike"]) for e in offer["entries"]] == [
        (name, True),
        ("plain.txt", False),
    ]
