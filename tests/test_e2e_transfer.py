"""End-to-end: real p2pcp-signal, p2pcp send and p2pcp receive processes over real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    SignalServer,
    finish,
    p2pcp,
    read_line,
    receive,
    require,
    sha256_file,
    start_send,
    tree,
)

from p2pcp.start import GC_THRESHOLDS


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            left -= len(block)


def _no_part_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".p2pcp-part")]
    assert leftovers == []


def test_one_file_and_json_events(signal_server: SignalServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    out = tmp_path / "out"
    src.mkdir()
    out.mkdir()
    _write_random(src / "report.bin", 3_000_000)
    sender, code = start_send(signal_server, str(src / "report.bin"))
    got = receive(signal_server, code, "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 0, got.stderr
    assert sent.code == 0, sent.stderr
    assert sha256_file(out / "report.bin") == sha256_file(src / "report.bin")
    _no_part_files(out)

    events = got.events
    names = [e["event"] for e in events]
    assert names[:3] == ["verification", "connected", "offer"]
    assert re.fullmatch(r"[0-9a-f]{2}(-[0-9a-f]{2}){4}", events[0]["verification"])
    assert events[1]["route"] == "direct"
    assert events[2]["files"] == 1 and events[2]["bytes"] == 3_000_000
    assert events[2]["entries"] == [
        {
            "path": "report.bin",
            "kind": "file",
            "size": 3_000_000,
            "executable": False,
            "hidden": False,
            "lookalike": False,
            "status": "new",
            "here": 0,
        }
    ]
    assert events[2]["home_hidden"] == []
    assert "accepted" in names and "progress" in names
    done = events[-1]
    assert done["event"] == "done" and done["files"] == 1 and done["bytes"] == 3_000_000
    assert isinstance(done["seconds"], float | int)
    (file_done,) = [e for e in events if e["event"] == "file_done"]
    assert file_done["sha256"] == sha256_file(src / "report.bin")

    sender_events = [e["event"] for e in sent.events]
    assert sender_events[:2] == ["verification", "connected"] and sender_events[-1] == "done"
    assert sent.events[0]["verification"] == events[0]["verification"]
    assert sender_events.index("sent") < sender_events.index("done")
    assert sent.events[-1]["bytes"] == 3_000_000


def test_directory_tree_with_empty_dir_and_executable(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    src = tmp_path / "project"
    (src / "bin").mkdir(parents=True)
    (src / "docs" / "empty").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n")
    (src / "zero").write_bytes(b"")
    tool = src / "bin" / "tool.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    os.symlink("docs/a.txt", src / "link")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(src))
    got = receive(signal_server, code, "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    expected = tree(src)
    del expected["link"]  # symlinks are not followed, and the sender says so
    assert tree(out / "project") == expected
    assert (out / "project" / "docs" / "empty").is_dir()
    assert os.stat(out / "project" / "bin" / "tool.sh").st_mode & stat.S_IXUSR
    assert not os.stat(out / "project" / "docs" / "a.txt").st_mode & stat.S_IXUSR
    warnings = [e["message"] for e in sent.events if e["event"] == "warning"]
    assert any("symlink" in w and "link" in w for w in warnings), sent.events


def test_several_paths_at_once(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("one")
    (tmp_path / "two.bin").write_bytes(os.urandom(70_000))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "three.txt").write_text("three")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, "one.txt", "two.bin", "dir", cwd=tmp_path)
    got = receive(signal_server, code, "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert (out / "one.txt").read_text() == "one"
    assert sha256_file(out / "two.bin") == sha256_file(tmp_path / "two.bin")
    assert (out / "dir" / "three.txt").read_text() == "three"
    assert got.events[-1]["files"] == 3


def test_zero_byte_file(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "empty.dat").write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(tmp_path / "empty.dat"))
    got = receive(signal_server, code, "--yes", "-o", str(out))
    assert finish(sender).code == 0
    assert got.code == 0, got.stderr
    assert (out / "empty.dat").exists() and (out / "empty.dat").stat().st_size == 0


def test_200_mib_random_file(signal_server: SignalServer, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    _write_random(src, 200 * 1024 * 1024)
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(src))
    got = receive(signal_server, code, "--yes", "-o", str(out), timeout=600)
    sent = finish(sender, timeout=60)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert sha256_file(out / "big.bin") == sha256_file(src)
    assert got.events[-1]["bytes"] == 200 * 1024 * 1024


@pytest.mark.parametrize("flag", [None, "--no-compress"])
def test_no_compression_when_the_peer_is_on_this_host(
    signal_server: SignalServer, tmp_path: Path, flag: str | None
) -> None:
    # Text that zstd shrinks a hundredfold still goes raw: between two processes of one host
    # there is no network to save bytes on, and compressing only costs the sender CPU
    # (tests/test_netlab.py checks that it is compressed across a network).
    text = b"".join(b"line %d: the quick brown fox\n" % i for i in range(200_000))
    src = tmp_path / "text.log"
    src.write_bytes(text)
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, "--debug", *([flag] if flag else []), str(src))
    got = receive(signal_server, code, "--yes", "-o", str(out))
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert (out / "text.log").read_bytes() == text
    assert "bytes sent compressed" not in sent.stderr
    said_why = "zstd: off, the peer is on this host" in sent.stderr
    assert said_why == (flag is None), sent.stderr[-2000:]


def test_refuses_to_overwrite(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("new content")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    sender, code = start_send(signal_server, str(tmp_path / "notes.txt"))
    got = receive(signal_server, code, "--yes", "-o", str(out))
    assert got.code == 6, got.stderr
    assert (out / "notes.txt").read_text() == "precious"
    assert "--overwrite" in got.events[-1]["message"]
    assert got.events[-1]["event"] == "error" and got.events[-1]["exit_code"] == 6
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # The sender keeps the code for the receiver's next try (tests/test_e2e_resume.py), and
    # says so; interrupted, it ends as an interrupted send does.
    while "still waiting" not in (line := read_line(sender)):
        assert line, finish(sender).stderr  # the sender must not end
    sender.send_signal(signal.SIGINT)
    sent = finish(sender)
    assert sent.code == 130, sent.stderr


def test_overwrite_replaces(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("new content")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    sender, code = start_send(signal_server, str(tmp_path / "notes.txt"))
    got = receive(signal_server, code, "--yes", "--overwrite", "-o", str(out))
    assert finish(sender).code == 0
    assert got.code == 0, got.stderr
    assert (out / "notes.txt").read_text() == "new content"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_declining_exits_6_on_both_sides(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "offer.txt").write_text("no thanks")
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(tmp_path / "offer.txt"))
    master, slave = os.openpty()
    try:
        os.write(master, b"n\n")
        process = p2pcp("receive", "--server", signal_server.url, "-o", str(out), code, stdin=slave)
        got = finish(process)
    finally:
        os.close(master)
        os.close(slave)
    sent = finish(sender)
    assert got.code == 6, got.stderr
    assert "declined" in got.stderr
    assert sent.code == 6, sent.stderr
    assert "declined" in sent.events[-1]["message"]
    assert list(out.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_not_running(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    url = f"ws://127.0.0.1:{_closed_port()}"
    sent = finish(p2pcp("send", "--server", url, str(tmp_path / "f")))
    assert sent.code == 4
    assert "cannot reach the rendezvous server" in sent.stderr
    assert "Traceback" not in sent.stderr
    assert len(sent.stderr.strip().splitlines()) == 1
    got = finish(p2pcp("receive", "--server", url, "--yes", "-o", str(tmp_path), "7-acorn-zebra"))
    assert got.code == 4 and "cannot reach the rendezvous server" in got.stderr


def test_unknown_nameplate_is_a_bad_code(signal_server: SignalServer, tmp_path: Path) -> None:
    got = receive(signal_server, "99-acorn-zebra", "--yes", "-o", str(tmp_path))
    assert got.code == 3
    assert got.events[-1]["event"] == "error" and got.events[-1]["exit_code"] == 3


def test_missing_source_is_a_usage_error(signal_server: SignalServer, tmp_path: Path) -> None:
    sent = finish(p2pcp("send", "--server", signal_server.url, str(tmp_path / "nope")))
    assert sent.code == 2
    assert "no such file" in sent.stderr


def test_receive_without_tty_or_yes_fails_at_once(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    got = finish(
        p2pcp(
            "receive",
            "--server",
            signal_server.url,
            "-o",
            str(tmp_path),
            "7-acorn-zebra",
            stdin=subprocess.DEVNULL,
        ),
        timeout=20,
    )
    assert got.code == 2
    assert "--yes" in got.stderr


@pytest.fixture
def interruptible() -> Iterator[None]:
    """p2pcp processes started meanwhile take SIGINT, as from a terminal, even when the suite
    itself runs as a background job: such a job starts with SIGINT ignored, the children
    inherit that, and p2pcp keeps an inherited ignore (as nohup expects)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # reset by exec
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("victim", ["send", "receive"])
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.usefixtures("interruptible")
def test_signal_mid_transfer_ends_both_sides_cleanly(
    signal_server: SignalServer, tmp_path: Path, victim: str, sig: signal.Signals, status: int
) -> None:
    src = tmp_path / "big.bin"
    _write_random(src, 400 * 1024 * 1024)
    out = tmp_path / "out"
    out.mkdir()
    sender, code = start_send(signal_server, str(src))
    receiver = p2pcp(
        "receive", "--server", signal_server.url, "--json", "--yes", "-o", str(out), code
    )
    assert receiver.stdout is not None
    while '"progress"' not in read_line(receiver):  # data is moving
        pass
    (sender if victim == "send" else receiver).send_signal(sig)
    sent, got = finish(sender, timeout=30), finish(receiver, timeout=30)
    killed, other = (sent, got) if victim == "send" else (got, sent)
    assert killed.code == status, killed.stderr
    assert killed.events[-1]["exit_code"] == status
    assert other.code == 5, other.stderr
    assert other.events[-1]["message"] == "the peer cancelled the transfer"
    # Nothing under the final name; the partial is kept beside it for a later resume.
    assert {p.name for p in out.iterdir()} <= {".big.bin.p2pcp-part"}
    assert not (out / "big.bin").exists()


def test_an_output_directory_that_cannot_be_written_is_refused_before_asking(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """An immutable output directory (chattr +i: even root cannot write) is found before the
    offer is shown or accepted, and the error names the directory. Before, the user accepted
    and then read 'cannot write pic.bin: Operation not permitted'."""
    require("chattr")
    (tmp_path / "pic.bin").write_bytes(b"x" * 1000)
    out = tmp_path / "locked"
    out.mkdir()
    subprocess.run(["chattr", "+i", str(out)], check=True)
    try:
        sender, code = start_send(signal_server, str(tmp_path / "pic.bin"))
        got = receive(signal_server, code, "--yes", "-o", str(out))
        sent = finish(sender)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert got.code == 5, got.stderr
    assert got.events[-1]["message"] == (
        f"cannot write in the output directory {out}: Operation not permitted"
    )
    assert not any(e["event"] == "offer" for e in got.events)  # never shown, never accepted
    assert sent.code == 5 and "cannot store the offer there" in sent.events[-1]["message"]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["receive", "--wait", "abc", "1-acorn-acorn"],
            "error: Invalid value for '--wait': 'abc' is not a number of seconds "
            "(see p2pcp receive --help)",
        ),
        (["receive", "--bogus"], "error: No such option: --bogus (see p2pcp receive --help)"),
        (
            ["send", "--server", "http://example.org", "x"],
            "error: the server must be a ws:// or wss:// URL, not 'http://example.org'",
        ),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(args: list[str], message: str) -> None:
    result = finish(p2pcp(*args))
    assert result.code == 2 and result.stderr == message + "\n", result.stderr


def test_config_set_and_init_and_a_bad_server_in_the_file(tmp_path: Path) -> None:
    """`config set` is the one command that points p2pcp at a server; an http:// server in the
    file is a usage error (exit 2) when the file is read, not a connect error when sending."""
    path = tmp_path / "p2pcp" / "config.toml"
    env = {"P2PCP_CONFIG": str(path)}
    assert finish(p2pcp("config", "init", env=env)).code == 0
    assert "# server = " in path.read_text()
    assert finish(p2pcp("config", "init", env=env)).code == 2  # never overwritten
    done = finish(p2pcp("config", "set", "server", "wss://r.example.org", env=env))
    assert done.code == 0 and path.stat().st_mode & 0o777 == 0o600
    shown = json.loads(finish(p2pcp("config", "show", "--json", env=env)).stdout)
    assert shown["settings"]["server"] == {"value": "wss://r.example.org", "source": f"file {path}"}
    assert finish(p2pcp("config", "set", "overwrite", "maybe", env=env)).code == 2
    path.write_text('server = "http://r.example.org"\n')
    for args in (["config", "show"], ["send", "--text", "hi"]):
        result = finish(p2pcp(*args, env=env))
        assert result.code == 2, result.stderr
        assert "the server must be a ws:// or wss:// URL" in result.stderr


def test_the_command_line_is_imported_with_the_collector_off() -> None:
    """``p2pcp``'s start-up imports the command line with the cyclic garbage collector off (it
    ran about a hundred times during the imports), freezes what they made, and turns the
    collector back on, collecting its youngest objects less often."""
    code = (
        "import gc\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(phase) if phase == 'start' else 0)\n"
        "from p2pcp.start import load\n"
        "runs.clear()\n"
        "load()\n"
        "print(len(runs), gc.get_freeze_count() > 0, gc.isenabled(), *gc.get_threshold())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "True", "True", *map(str, GC_THRESHOLDS)], done.stdout


def test_the_command_line_loads_no_lan_or_qr_code_it_does_not_use() -> None:
    """Start-up is paid by every command: zeroconf and the LAN code load only for LAN mode and
    doctor, segno only for --qr (an import of landoctor at run time once cost 40 ms each run)."""
    heavy = ("zeroconf", "segno", "p2pcp.lan", "p2pcp.landoctor")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, p2pcp.cli; print([m for m in {heavy!r} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout
