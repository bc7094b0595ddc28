"""Pipelines with real processes: stdin streaming, stdout output, text, bounded memory."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import PYTHON, SignalServer, finish, p2pcp, read_line, receive, start_send, tree

from p2pcp.code import make_code

STREAM_BYTES = 512 * 1024 * 1024
RSS_LIMIT_MIB = 150


def _env(server: SignalServer, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    base["P2PCP_CONFIG"] = os.devnull  # never the developer's own config file
    return {**base, "P2PCP_SERVER": server.url, **extra}


def _wait_for_code(process: subprocess.Popen[bytes] | subprocess.Popen[str], code: str) -> None:
    """Block until a ``--quiet`` sender has printed its code (its room is open)."""
    assert process.stderr is not None
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(process.stderr.fileno(), 1)
        assert byte, "the sender exited before printing its code"
        line += byte
    assert line.decode().strip() == code


class PeakRss:
    """The peak RSS of a child, from its own VmHWM, sampled from /proc from its start until it
    exits (the harness measures, not the tool).

    wait4's ru_maxrss would not do: Linux carries the high-water mark of the forked copy of this
    test process over the exec, so every child would report at least pytest's own size (520 MiB
    once the browser tests had run before)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.kib = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while True:
            try:
                match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
            except OSError:
                return
            if not match:  # a zombie: it has exited
                return
            self.kib = max(self.kib, int(match.group(1)))
            time.sleep(0.05)

    def wait(self) -> tuple[int, float]:
        """Exit status and peak RSS in MiB."""
        code = self.process.wait()
        self._thread.join()
        return code, self.kib / 1024


def test_512_mib_stream_through_stdin_and_stdout_in_bounded_memory(
    signal_server: SignalServer,
) -> None:
    code = str(make_code("900"))
    sender = subprocess.Popen(
        [PYTHON, "-m", "p2pcp", "send", "--quiet", "--name", "stream.bin", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(signal_server, P2PCP_CODE=code),
    )
    sender_rss = PeakRss(sender)
    _wait_for_code(sender, code)
    receiver = subprocess.Popen(
        [PYTHON, "-m", "p2pcp", "receive", "--yes", "-o", "-"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(signal_server, P2PCP_CODE=code),
    )
    receiver_rss = PeakRss(receiver)
    sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
    got_bytes = [0]

    def feed() -> None:
        assert sender.stdin is not None
        seed = os.urandom(1 << 20)
        for i in range(STREAM_BYTES >> 20):
            block = hashlib.sha256(seed + i.to_bytes(4, "big")).digest() * 32768
            sent_hash.update(block)
            sender.stdin.write(block)
        sender.stdin.close()

    def drain() -> None:
        assert receiver.stdout is not None
        for block in iter(lambda: receiver.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
            got_hash.update(block)
            got_bytes[0] += len(block)

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    recv_status, recv_rss = receiver_rss.wait()
    send_status, send_rss = sender_rss.wait()
    for t in threads:
        t.join(60)
    assert recv_status == 0 and send_status == 0, (sender.stderr, receiver.stderr)
    assert got_bytes[0] == STREAM_BYTES
    assert got_hash.hexdigest() == sent_hash.hexdigest()
    print(f"peak RSS: sender {send_rss:.0f} MiB, receiver {recv_rss:.0f} MiB", file=sys.stderr)
    assert send_rss < RSS_LIMIT_MIB and recv_rss < RSS_LIMIT_MIB, (send_rss, recv_rss)


def test_tar_pipeline(signal_server: SignalServer, tmp_path: Path) -> None:
    src = tmp_path / "src" / "project"
    (src / "docs" / "empty").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha")
    (src / "data.bin").write_bytes(os.urandom(2_000_000))
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    dst = tmp_path / "dst"
    dst.mkdir()
    code = str(make_code("901"))
    sender = subprocess.Popen(
        [
            "bash",
            "-c",
            f"tar c -C {tmp_path / 'src'} project | {PYTHON} -m p2pcp send --quiet "
            "--name project.tar -",
        ],
        env=_env(signal_server, P2PCP_CODE=code),
        stderr=subprocess.PIPE,
    )
    _wait_for_code(sender, code)
    receiver = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{PYTHON} -m p2pcp receive --yes -o - | tar x -C {dst}"],
        env=_env(signal_server, P2PCP_CODE=code),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert receiver.returncode == 0, receiver.stderr
    assert sender.wait(60) == 0
    assert tree(dst / "project") == tree(src)


def test_stdout_gets_only_the_file(signal_server: SignalServer, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(data)
    sender, code = start_send(signal_server, str(tmp_path / "f.bin"))
    got = subprocess.run(
        [PYTHON, "-m", "p2pcp", "receive", "--yes", "-o", "-", code],
        env=_env(signal_server),
        capture_output=True,
        timeout=120,
    )
    assert finish(sender).code == 0
    assert got.returncode == 0, got.stderr
    assert got.stdout == data  # byte-exact, and nothing else on stdout


def test_several_files_to_stdout_are_refused(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    sender, code = start_send(signal_server, str(tmp_path / "a"), str(tmp_path / "b"))
    got = subprocess.run(
        [PYTHON, "-m", "p2pcp", "receive", "--yes", "-o", "-", code],
        env=_env(signal_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    sent = finish(sender)
    assert got.returncode == 6 and got.stdout == ""
    assert "writes one file to stdout" in got.stderr and "tar" in got.stderr
    assert sent.code == 6


def test_text_message(signal_server: SignalServer, tmp_path: Path) -> None:
    message = "line one\nline\ttwo \x1b[31mred\u202e\n"
    sender, code = start_send(signal_server, "--text", message)
    got = subprocess.run(
        [PYTHON, "-m", "p2pcp", "receive", "--yes", code],
        env=_env(signal_server),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert finish(sender).code == 0
    assert got.returncode == 0, got.stderr
    assert got.stdout == "line one\nline\ttwo \\x1b[31mred\\u202e\n"
    assert list(tmp_path.iterdir()) == []  # no file written


def test_text_from_stdin_with_json(signal_server: SignalServer, tmp_path: Path) -> None:
    code = str(make_code("902"))
    sender = p2pcp(
        "send",
        "--text",
        "-",
        "--json",
        env={"P2PCP_SERVER": signal_server.url, "P2PCP_CODE": code},
        stdin=subprocess.PIPE,
    )
    assert sender.stdin is not None
    sender.stdin.write("über\x00")
    sender.stdin.close()
    sender.stdin = None  # communicate() must not flush it again
    assert '"code"' in read_line(sender)  # the room is open
    got = receive(signal_server, code, "--yes", cwd=tmp_path)
    assert finish(sender).code == 0
    assert got.code == 0
    assert [e["text"] for e in got.events if e["event"] == "text"] == ["über\x00"]
    assert "\\u00fcber" in got.stdout  # ASCII-only JSON


def test_text_and_files_together_is_a_usage_error(tmp_path: Path) -> None:
    result = finish(p2pcp("send", "--server", "ws://127.0.0.1:1", "--text", "x", "file"))
    assert result.code == 2 and "either files to send or --text" in result.stderr


def test_quiet_prints_only_the_code(signal_server: SignalServer, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    code = str(make_code("903"))
    env = {"P2PCP_SERVER": signal_server.url, "P2PCP_CODE": code}
    sender = p2pcp("send", "--quiet", str(tmp_path / "f"), env=env)
    _wait_for_code(sender, code)  # its only line on stderr
    got = finish(p2pcp("receive", "--quiet", "--yes", "-o", str(out), env=env))
    sent = finish(sender)
    assert got.code == 0 and sent.code == 0
    assert got.stdout == "" and got.stderr == ""
    assert sent.stdout == "" and sent.stderr == ""


def test_version_and_help() -> None:
    version = finish(p2pcp("--version"))
    assert version.code == 0 and version.stdout.startswith("p2pcp ")
    for command in ("send", "receive"):
        help_text = finish(p2pcp(command, "--help"))
        assert help_text.code == 0 and "Example" in help_text.stdout
    assert "--install-completion" in finish(p2pcp("--help")).stdout


def test_receiver_started_first_waits_for_the_sender(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """Scripts start both sides at once with a chosen code: with --wait, a receiver that is
    first keeps asking until the sender opens the room."""
    data = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    code = str(make_code("904"))
    env = {"P2PCP_SERVER": signal_server.url, "P2PCP_CODE": code}
    receiver = p2pcp("receive", "--json", "--yes", "--wait", "30", "-o", str(out), env=env)
    first = read_line(receiver)  # no room yet: it says it waits
    assert '"event": "waiting"' in first and '"nameplate": "904"' in first
    sender = p2pcp("send", "--json", str(tmp_path / "f.bin"), env=env)
    got, sent = finish(receiver), finish(sender)
    assert got.code == 0 and sent.code == 0, (got.stderr, sent.stderr)
    assert (out / "f.bin").read_bytes() == data


def test_wait_gives_up_with_the_code_error(signal_server: SignalServer, tmp_path: Path) -> None:
    env = {"P2PCP_SERVER": signal_server.url, "P2PCP_CODE": str(make_code("905"))}
    got = finish(p2pcp("receive", "--json", "--yes", "--wait", "0.3", "-o", str(tmp_path), env=env))
    assert got.code == 3
    events = got.events
    assert events[0] == {"event": "waiting", "nameplate": "905", "seconds": 0.3}
    assert events[-1]["event"] == "error" and "no sender is waiting" in events[-1]["message"]
    signal_server.stop()
    # it asked more than once before giving up (10 ms, then 20 ms, ...)
    assert signal_server.log_text().count("reason=no_such_nameplate") >= 2
