"""What a person sees: real p2pcp processes in real terminals (tmux), typed into and read back.

The finished screens of the main flow, normalised (code, addresses, rates), must equal
``docs/screens.md``; run with ``P2PCP_WRITE_SCREENS=1`` to rewrite that file after a change.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import segno
from helpers import (
    PYTHON,
    SignalServer,
    finish,
    p2pcp,
    require,
    sender_and_receiver_dirs,
    start_send,
)

from p2pcp.code import make_code, suggest_word
from p2pcp.wordlist import WORDS

SCREENS = Path(__file__).parent.parent / "docs" / "screens.md"
SPINNER = re.compile("[\u2800-\u28ff]")  # rich's braille spinner frames

require("tmux")


class Terminal:
    """One tmux window running one command, on a tmux server of its own."""

    def __init__(self, socket: str, name: str, command: str, width: int, height: int) -> None:
        self.socket, self.name = socket, name
        self._tmux(
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            str(width),
            "-y",
            str(height),
            f"{command}; echo EXIT=$?; sleep 600",
        )

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", f"{self.name}:", "--", *keys)

    def screen(self, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", f"{self.name}:")

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared on {self.name}:\n{self.screen()}")


@pytest.fixture
def tmux() -> Iterator[str]:
    socket = f"p2pcp-{uuid.uuid4().hex[:8]}"
    yield socket
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def _command(server: SignalServer, args: str, extra_env: str = "") -> str:
    # COLUMNS/LINES from the test runner would override the terminal's real size.
    env = f"env -u P2PCP_CODE -u COLUMNS -u LINES P2PCP_SERVER={server.url} {extra_env}"
    return f"{env} {shlex.quote(PYTHON)} -m p2pcp {args}"


def _unique_prefix(word: str) -> str:
    for n in range(1, len(word) + 1):
        if sum(w.startswith(word[:n]) for w in WORDS) == 1:
            return word[:n]
    return word


def _typo(word: str) -> str:
    """A transposition (one edit away) that the prompt corrects back to ``word``: some, such as
    'cnayon' for 'canyon', are closer to another word ('crayon') and would name that one."""
    swaps = (word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1))
    return next(t for t in swaps if t not in WORDS and suggest_word(t) == word)


def _fixtures(root: Path) -> Path:
    project = root / "holiday"
    (project / "raw").mkdir(parents=True)
    (project / "notes.txt").write_text("remember the sunscreen\n")
    (project / "raw" / "beach.jpg").write_bytes(os.urandom(3 * 1024 * 1024))
    (project / "video.mp4").write_bytes(os.urandom(12 * 1024 * 1024))
    return project


def _normalise(screen: str, code: str, server: str, out: str) -> str:
    nameplate, first, second = code.split("-")
    typo = _typo(second)
    text = "\n".join(line.rstrip() for line in screen.rstrip().splitlines())
    text = text.replace(f"{nameplate}-{first}-{typo}", "7-guitar-ocaen")
    text = text.replace(f"'{typo}'", "'ocaen'").replace(f"'{second}'", "'ocean'")
    text = text.replace(code, "7-guitar-ocean").replace(server, "ws://rendezvous.example:8765")
    page = server.replace("ws://", "http://", 1)
    text = text.replace(page, "http://rendezvous.example:8765")
    text = text.replace(out, "~/Downloads")
    text = re.sub(r"\d+\.\d+\.\d+\.\d+", "192.0.2.7", text)
    text = re.sub(r"[0-9a-f]{2}(-[0-9a-f]{2}){4}", "3f-a0-11-9c-42", text)
    text = re.sub(r"[\d.]+ (B|KiB|MiB|GiB)/s", "20.1 MiB/s", text)
    # A transfer faster than rich's first speed sample shows "?" for the rate.
    text = re.sub(r"(/[\d.]+ (?:B|KiB|MiB|GiB)) \? ", r"\1 20.1 MiB/s ", text)
    text = re.sub(r"in [\d.]+ s", "in 0.8 s", text)
    text = re.sub(r"[\d.]+ (KiB|MiB|GiB|TiB) free", "73.1 GiB free", text)
    text = re.sub(r"(?m)^EXIT=0$", "", text).rstrip()
    # Progress bars stretch with the width of the numbers beside them.
    text = "\n".join(
        re.sub(r" +", " ", re.sub(r"[━╸╺]+", "━" * 30, line)) if "━" in line else line
        for line in text.splitlines()
    )
    # The QR code drawn for the real command, redrawn for the normalised one.
    qr_lines = [line for line in text.splitlines() if set(line) <= set("█▀▄ ") and line]
    if qr_lines:
        drawn = _qr("http://rendezvous.example:8765/#7-guitar-ocean")
        text = text.replace("\n".join(qr_lines), drawn)
    return text


def _qr(command: str) -> str:
    import io

    buffer = io.StringIO()
    segno.make(command, error="l").terminal(out=buffer, compact=True)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines())


def test_send_and_receive_as_a_person_sees_them(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    project = _fixtures(tmp_path / "src")
    out = tmp_path / "Downloads"
    out.mkdir()
    sender = Terminal(tmux, "send", _command(signal_server, f"send --qr {project}"), 100, 50)
    screen = sender.wait_for(r"Waiting for the receiver to connect")
    code = re.search(r"Code: (\d+-[a-z]+-[a-z]+)", screen).group(1)  # type: ignore[union-attr]
    nameplate, first, second = code.split("-")
    # 1. The code in bold, the exact command with the server, a spinner, and the QR code.
    assert f"\x1b[1m{code}" in sender.screen(escapes=True)
    assert f"p2pcp receive --server {signal_server.url} {code}" in screen
    assert SPINNER.search(screen)
    # The server serves the page: the QR code opens it with the code filled in, for a phone.
    page = signal_server.url.replace("ws://", "http://", 1) + f"/#{code}"
    assert f"or open {page} in a browser" in screen
    assert _qr(page) in screen

    receiver = Terminal(tmux, "receive", _command(signal_server, f"receive -o {out}"), 100, 40)
    receiver.wait_for(r"Enter the code")
    # 4. A typo in a code word is caught before anything is sent, and the prompt asks again.
    receiver.keys(f"{nameplate}-{first}-{_typo(second)}", "Enter")
    receiver.wait_for(rf"is not a code word: did you mean '{second}'\?\n.*Enter the code")
    assert "join" not in signal_server.log_text()
    # Tab completes a word from a unique prefix, and after the first word adds the hyphen.
    receiver.keys(f"{nameplate}-{_unique_prefix(first)}", "Tab")
    receiver.wait_for(rf"(?m)Enter the code.*{nameplate}-{first}-$")
    receiver.keys(_unique_prefix(second), "Tab")
    receiver.wait_for(rf"(?m)Enter the code.*{nameplate}-{first}-{second}$")
    receiver.keys("Enter")

    # 3. The offer as a table, the total and the free space, then the prompt.
    screen = receiver.wait_for(r"Accept\? \[Y/n\]")
    for row in (
        r"holiday\s+dir",
        r"holiday/notes\.txt\s+23 B",
        r"holiday/raw/beach\.jpg\s+3\.0 MiB",
        r"holiday/video\.mp4\s+12\.0 MiB",
        r"3 files, 15\.0 MiB in all; .* free on this disk",
    ):
        assert re.search(row, screen), (row, screen)
    # 2. The route in words on both screens, and the same verification string.
    sender_screen = sender.wait_for(r"Connected directly to \d+\.\d+\.\d+\.\d+")
    verification = re.search(r"Verification: (\S+)", screen).group(1)  # type: ignore[union-attr]
    assert f"Verification: {verification}" in sender_screen
    assert "Connected directly to" in screen
    receiver.keys("y", "Enter")

    receiver_done = receiver.wait_for(r"EXIT=0")
    sender_done = sender.wait_for(r"EXIT=0")
    assert re.search(r"Done: received 3 files, 15\.0 MiB in [\d.]+ s .*all verified", receiver_done)
    assert "Sent; waiting for the receiver to verify" in sender_done
    assert re.search(
        r"Done: sent 3 files, 15\.0 MiB in .*the receiver verified every file",
        sender_done.replace("\n", " "),
    )
    # 6. No spinner is left on a finished screen.
    assert not SPINNER.search(sender_done) and not SPINNER.search(receiver_done)
    assert (out / "holiday" / "video.mp4").read_bytes() == (project / "video.mp4").read_bytes()

    screens = {
        "send": _normalise(sender_done, code, signal_server.url, str(out)),
        "receive": _normalise(receiver_done, code, signal_server.url, str(out)),
    }
    _check_screens_doc(screens)


def _check_screens_doc(screens: dict[str, str]) -> None:
    document = (
        "# What p2pcp shows\n\n"
        "Captured by `tests/test_terminal.py` from real `p2pcp` processes in a 100-column tmux\n"
        "terminal, then normalised (the code, addresses, rates and free space are replaced by\n"
        "fixed examples). The test fails when the code and this page disagree; regenerate it\n"
        "with `P2PCP_WRITE_SCREENS=1 .venv/bin/python -m pytest tests/test_terminal.py`.\n\n"
        "## Sending (`p2pcp send --qr holiday`), when done\n\n"
        f"```text\n{screens['send']}\n```\n\n"
        "## Receiving (`p2pcp receive -o ~/Downloads`, the code typed at the prompt, first with a\n"
        "typo), when done\n\n"
        f"```text\n{screens['receive']}\n```\n"
    )
    if os.environ.get("P2PCP_WRITE_SCREENS"):
        SCREENS.write_text(document)
    assert SCREENS.read_text() == document, "docs/screens.md is out of date (see its header)"


def test_verify_on_both_sides_at_60_columns_without_colour(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    (tmp_path / "contract-final-signed-version.pdf").write_bytes(os.urandom(2 * 1024 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    code = str(make_code("4711"))
    sender = Terminal(
        tmux,
        "send",
        _command(
            signal_server,
            f"send --verify {tmp_path / 'contract-final-signed-version.pdf'}",
            f"P2PCP_CODE={code} NO_COLOR=1",
        ),
        60,
        30,
    )
    sender.wait_for("Waiting for the receiver")
    receiver = Terminal(
        tmux,
        "receive",
        _command(signal_server, f"receive --verify --yes -o {out} {code}", "NO_COLOR=1"),
        60,
        30,
    )
    # 5. Both screens show the same string and ask before any data moves.
    screen = receiver.wait_for(r"Does the other screen show (\S+)\?")
    asked = re.search(r"show (\S+)\?", screen).group(1)  # type: ignore[union-attr]
    sender_screen = sender.wait_for(rf"Does the other screen show {re.escape(asked)}\?")
    assert f"Verification: {asked}" in sender_screen and f"Verification: {asked}" in screen
    assert not (out / "contract-final-signed-version.pdf").exists()
    # The first to answer is told it waits for the other (before, its screen just stopped).
    receiver.keys("y", "Enter")
    receiver.wait_for(r"Waiting for the other side to check the verification")
    sender.keys("y", "Enter")
    sender_done = sender.wait_for("EXIT=0")
    receiver_done = receiver.wait_for("EXIT=0")
    # 6. 60 columns: long lines wrap between words, never inside one; NO_COLOR means no colour.
    for done in (sender_done, receiver_done):
        assert all(len(line) <= 60 for line in done.splitlines())
        assert not SPINNER.search(done)
    assert "the receiver verified every file" in " ".join(sender_done.split())
    assert "all verified" in " ".join(receiver_done.split())
    for terminal in (sender, receiver):
        assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", terminal.screen(escapes=True))


def test_refusing_the_verification_stops_both(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    sender, receiver, out = _one_file_both_sides(signal_server, tmp_path, tmux, "4712", "--verify")
    sender.wait_for(r"Does the other screen show")
    sender.keys("n", "Enter")
    sender.wait_for(r"verification strings did not match[\s\S]*EXIT=6")
    receiver.wait_for(r"EXIT=5")
    assert list(out.iterdir()) == []


def test_a_mistyped_code_argument_sends_nothing(signal_server: SignalServer) -> None:
    result = finish(p2pcp("receive", "--server", signal_server.url, "--yes", "1-acorn-zebar"))
    assert result.code == 2
    assert "'zebar' is not a code word: did you mean 'zebra'?" in result.stderr
    assert "connect" not in signal_server.log_text()


@pytest.mark.parametrize(("answer", "exit_code"), [("Enter", 6), ("y", 0)])
def test_dot_entries_in_the_home_directory_are_confirmed_on_their_own(
    signal_server: SignalServer, tmp_path: Path, tmux: str, answer: str, exit_code: int
) -> None:
    """`y` to the offer is not enough for a `.config` written straight into $HOME: a second
    question, which defaults to no, names them."""
    src = tmp_path / "src"
    (src / ".config").mkdir(parents=True)
    (src / ".config" / "autostart.desktop").write_text("Exec=evil\n")
    (src / "photo.jpg").write_bytes(b"jpg")
    home = tmp_path / "home"
    home.mkdir()
    code = str(make_code("4713"))
    send = f"cd {shlex.quote(str(src))} && " + _command(
        signal_server, "send photo.jpg .config", f"P2PCP_CODE={code}"
    )
    sender = Terminal(tmux, "send", send, 100, 20)
    sender.wait_for("Waiting for the receiver")
    receiver = Terminal(
        tmux,
        "receive",
        _command(signal_server, f"receive -o {home} {code}", f"HOME={shlex.quote(str(home))}"),
        100,
        30,
    )
    receiver.wait_for(r"Accept\?")
    receiver.keys("y", "Enter")
    receiver.wait_for(r"This writes \.config directly in your home directory[\s\S]*Write\s+them\?")
    receiver.keys(*([answer] if answer == "Enter" else [answer, "Enter"]))
    receiver.wait_for(f"EXIT={exit_code}")
    assert (home / ".config" / "autostart.desktop").exists() == (exit_code == 0)


def test_a_mixed_offer_is_marked_per_file_and_a_cancelled_conflict_keeps_the_code(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """Each file of the offer is marked (new, identical, resumes, differs); the files that
    differ get their own question; cancelling it refuses without burning the code, and the
    same command again with `rename` keeps both. Before, one differing file refused the whole
    offer and told the sender to pass --overwrite."""
    src, out = sender_and_receiver_dirs(
        tmp_path,
        [
            ("same.txt", "same", "same"),
            ("other.txt", "new!", "old!"),
            ("fresh.txt", "fresh", None),
            ("big.bin", "b" * 4000, None),
        ],
    )
    (out / ".big.bin.p2pcp-part").write_text("b" * 1500)  # an earlier run's partial
    code = str(make_code("4718"))
    names = "same.txt other.txt fresh.txt big.bin"
    send = f"cd {shlex.quote(str(src))} && " + _command(
        signal_server, f"send {names}", f"P2PCP_CODE={code}"
    )
    sender = Terminal(tmux, "send", send, 100, 20)
    sender.wait_for("Waiting for the receiver")
    receive = _command(signal_server, f"receive -o {out} {code}")
    receiver = Terminal(tmux, "receive", receive, 100, 30)
    screen = receiver.wait_for(r"Accept\? \[Y/n\]")
    assert re.search(r"same\.txt +4 B +identical: skipped", screen), screen
    assert re.search(r"other\.txt +4 B +differs from yours", screen), screen
    assert re.search(r"fresh\.txt +5 B +new", screen), screen
    assert re.search(r"big\.bin +3\.9 KiB +resumes: 1\.5 KiB here", screen), screen
    assert "1 new, 1 identical (skipped), 1 resume, 1 differ from yours" in screen
    receiver.keys("y", "Enter")
    receiver.wait_for(r"1 file here differs from the sender's: overwrite \(replace yours\)")
    receiver.keys("c", "Enter")
    screen = " ".join(receiver.wait_for("EXIT=6").split())  # the message wraps at 100 columns
    assert "error: 1 file here differs from the sender's; nothing was written" in screen
    assert "run again with --overwrite, --skip-existing or --rename" in screen, screen
    assert "(the sender is still waiting)" in screen, screen
    screen = sender.wait_for(
        r"still\s+waiting\s+for\s+it\s+to\s+run\s+again[\s\S]*Waiting for the receiver to connect"
    )
    assert "Waiting for the receiver to accept" not in screen.split("still")[-1], screen
    assert sorted(p.name for p in out.iterdir()) == [".big.bin.p2pcp-part", "other.txt", "same.txt"]

    receiver = Terminal(tmux, "again", receive, 100, 30)
    receiver.wait_for(r"Accept\? \[Y/n\]")
    receiver.keys("Enter")
    receiver.wait_for(r"\[o/s/r/c\]")
    receiver.keys("r", "Enter")
    screen = receiver.wait_for("EXIT=0")
    assert "other.txt differs from the one here: saved as other (1).txt" in screen, screen
    sender.wait_for("EXIT=0")
    assert (out / "other.txt").read_text() == "old!"
    assert (out / "other (1).txt").read_text() == "new!"
    assert (out / "big.bin").read_text() == "b" * 4000
    assert sorted(p.name for p in out.iterdir()) == [
        "big.bin", "fresh.txt", "other (1).txt", "other.txt", "same.txt"
    ]  # fmt: skip


def _one_file_both_sides(
    signal_server: SignalServer, tmp_path: Path, tmux: str, nameplate: str, send_flags: str = ""
) -> tuple[Terminal, Terminal, Path]:
    """A sender of one small file (with ``send_flags``) waiting, and its receiver started, each
    in an 80-column terminal; the receiver's output directory."""
    (tmp_path / "f.txt").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    code = str(make_code(nameplate))
    sender = Terminal(
        tmux,
        "send",
        _command(signal_server, f"send {send_flags} {tmp_path / 'f.txt'}", f"P2PCP_CODE={code}"),
        80,
        20,
    )
    sender.wait_for("Waiting for the receiver")
    receiver = Terminal(
        tmux, "receive", _command(signal_server, f"receive -o {out} {code}"), 80, 20
    )
    return sender, receiver, out


def _at_the_accept_prompt(
    signal_server: SignalServer, tmp_path: Path, tmux: str, nameplate: str
) -> tuple[Terminal, Terminal, Path]:
    sender, receiver, out = _one_file_both_sides(signal_server, tmp_path, tmux, nameplate)
    receiver.wait_for(r"Accept\? \[Y/n\]")
    return sender, receiver, out


def test_ctrl_c_at_the_accept_prompt_ends_at_once(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """Ctrl-C at `Accept?` ends the receiver without waiting for Enter (exit 130), on a line
    of its own; the sender learns it was cancelled (exit 5). Before, the receiver stayed alive
    until Enter was pressed."""
    sender, receiver, out = _at_the_accept_prompt(signal_server, tmp_path, tmux, "4714")
    receiver.keys("C-c")
    screen = receiver.wait_for(r"EXIT=130", timeout=10)
    assert re.search(r"^error: interrupted$", screen, re.MULTILINE), screen
    sender.wait_for(r"the peer cancelled the transfer[\s\S]*EXIT=5", timeout=15)
    assert list(out.iterdir()) == []


def test_the_senders_cancel_reaches_a_receiver_still_deciding(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """The sender presses Ctrl-C while the receiver sits at `Accept?`: the receiver says so at
    once and exits 5, nobody pressing anything. Before, it learned only after answering."""
    sender, receiver, out = _at_the_accept_prompt(signal_server, tmp_path, tmux, "4715")
    sender.keys("C-c")
    sender.wait_for(r"EXIT=130", timeout=10)
    screen = receiver.wait_for(r"EXIT=5", timeout=10)
    assert re.search(r"^error: the peer cancelled the transfer$", screen, re.MULTILINE), screen
    assert list(out.iterdir()) == []


def test_ctrl_c_at_the_code_prompt_ends_the_line(signal_server: SignalServer, tmux: str) -> None:
    receiver = Terminal(tmux, "receive", _command(signal_server, "receive"), 80, 10)
    receiver.wait_for(r"Enter the code")
    receiver.keys("7-acorn", "C-c")
    screen = receiver.wait_for(r"EXIT=130", timeout=10)
    assert re.search(r"^error: interrupted$", screen, re.MULTILINE), screen


@pytest.mark.parametrize(("answer", "accepted"), [("yes", True), ("NO", False)])
def test_the_accept_prompt_takes_yes_and_no(
    signal_server: SignalServer, tmp_path: Path, tmux: str, answer: str, accepted: bool
) -> None:
    sender, receiver, out = _at_the_accept_prompt(
        signal_server, tmp_path, tmux, "4716" if accepted else "4717"
    )
    receiver.keys(answer, "Enter")
    receiver.wait_for(f"EXIT={0 if accepted else 6}", timeout=30)
    assert (out / "f.txt").exists() == accepted


def test_a_dead_sender_is_seen_stalled_then_gone_in_seconds(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """kill -9 of the sender mid-transfer: within about 3 s the receiver's bar says "stalled",
    and once the peer has been silent for 10 s (no keep-alive) the receiver exits 5 saying so.
    Before, the bar froze for 35 s and the receiver gave up after ICE's consent checks."""
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(400):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "out"
    out.mkdir()
    slow = {"P2PCP_LARGE_PACKETS": "0"}  # standard packets: the transfer outlasts the kill
    sender, code = start_send(signal_server, str(big), env=slow)
    receiver = Terminal(
        tmux,
        "receive",
        _command(signal_server, f"receive --yes -o {out} {code}", "P2PCP_LARGE_PACKETS=0"),
        100,
        12,
    )
    receiver.wait_for(r"big\.bin .* MiB/s")
    sender.kill()
    sender.wait(10)
    killed = time.monotonic()
    receiver.wait_for(r"stalled", timeout=8)
    screen = receiver.wait_for(r"EXIT=5", timeout=25)
    gone = time.monotonic() - killed
    assert "the peer stopped answering (nothing for 10 s)" in screen, screen
    assert gone < 20, gone  # 10 s of silence, not ICE's 30 s and more
    assert not (out / "big.bin").exists()


def _receive_in_tmux(
    signal_server: SignalServer, tmux: str, code: str, args: str, width: int = 60, env: str = ""
) -> str:
    """A receiver at a ``width``-column terminal, answered `y`; its last screen."""
    receiver = Terminal(
        tmux, f"r{uuid.uuid4().hex[:6]}", _command(signal_server, f"receive {args} {code}", env),
        width, 30,
    )  # fmt: skip
    screen = receiver.wait_for(r"Accept\? \[Y/n\]|EXIT=")
    if "EXIT=" not in screen:
        receiver.keys("y", "Enter")
    return receiver.wait_for(r"EXIT=\d+")


def test_quiet_honest_screens_at_60_columns(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """One line per bar at 60 columns with names cut in the middle; one bar for one file; a
    text shows only the text; a stream says "size unknown"; files already there say so
    instead of a rate of 0 B/s; --no-progress gives plain lines."""
    long = "a-very-long-file-name-that-goes-on-and-on-and-on-forever.bin"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / long).write_bytes(os.urandom(8 << 20))
    (folder / "0-small.txt").write_text("small\n")  # sent first: the long name is last
    out = tmp_path / "out"
    out.mkdir()

    def send(*args: str, stdin: Any = subprocess.DEVNULL) -> tuple[Any, str]:
        process = p2pcp("send", "--server", signal_server.url, "--json", *args, stdin=stdin)
        assert process.stdout is not None
        return process, json.loads(process.stdout.readline())["code"]

    # Two files: a total bar and a file bar, each on one line, the long name cut in the middle.
    sender, code = send(str(folder))
    screen = _receive_in_tmux(signal_server, tmux, code, f"-o {out}")
    finish(sender)
    bars = [line for line in screen.splitlines() if "━" in line]
    assert len(bars) == 2 and all(len(line) <= 60 for line in bars), screen
    name = bars[1].split()[0]
    assert bars[0].startswith("total") and "…" in name and name.endswith(".bin"), bars
    # The same again: everything is there already.
    sender, code = send(str(folder))
    screen = _receive_in_tmux(signal_server, tmux, code, f"-o {out}")
    finish(sender)
    assert "nothing needed to move" in screen and "0 B/s" not in screen, screen
    # One file: one bar, named after it.
    sender, code = send(str(folder / "0-small.txt"))
    screen = _receive_in_tmux(signal_server, tmux, code, f"-o {tmp_path}")
    finish(sender)
    assert len([line for line in screen.splitlines() if "━" in line]) <= 1, screen
    # A text: the text, and no bar.
    sender, code = send("--text", "meet at noon")
    screen = _receive_in_tmux(signal_server, tmux, code, "")
    finish(sender)
    assert "meet at noon" in screen and "━" not in screen and "total" not in screen, screen
    # A stream of unknown size.
    sender, code = send("--name", "stream.bin", "-", stdin=subprocess.PIPE)
    assert sender.stdin is not None
    sender.stdin.write("streamed\n" * 1000)
    sender.stdin.close()
    sender.stdin = None
    screen = _receive_in_tmux(signal_server, tmux, code, f"-o {out}")
    finish(sender)
    assert "1 file, size unknown" in screen and "0 B in all" not in screen, screen
    # --no-progress: plain lines, no bar, no spinner.
    sender, code = send(str(folder / "0-small.txt"))
    other = tmp_path / "other"
    other.mkdir()
    screen = _receive_in_tmux(signal_server, tmux, code, f"--no-progress -o {other}")
    finish(sender)
    assert "━" not in screen and not SPINNER.search(screen), screen
    assert "received 0-small.txt (6 B)" in screen, screen


def test_pairing_two_devices_at_their_terminals(
    signal_server: SignalServer, tmp_path: Path, tmux: str
) -> None:
    """One shows a code, the other types it; both show the same fingerprint and ask; a "no"
    on either stores nothing on both; two "yes" pair them."""
    homes = {name: tmp_path / name for name in ("laptop", "desktop")}
    for home in homes.values():
        home.mkdir()

    def start(name: str, args: str, run: int) -> Terminal:
        env = f"P2PCP_CONFIG_DIR={homes[name]}"
        return Terminal(tmux, f"{name}-{run}", _command(signal_server, args, env), 100, 30)

    for run, (answers, expected) in enumerate(((("y", "n"), "EXIT=6"), (("y", "y"), "EXIT=0"))):
        showing = start("laptop", "pair --name desk", run)
        screen = showing.wait_for(r"p2pcp pair --server \S+ (\d+-\w+-\w+)")
        code = re.search(r"p2pcp pair --server \S+ (\d+-\w+-\w+)", screen)
        assert code is not None
        typing = start("desktop", f"pair {code.group(1)}", run)
        prints = []
        for terminal, answer in zip((showing, typing), answers, strict=True):
            screen = terminal.wait_for(r"Pair with it\? \[y/N\]")
            found = re.search(r"Fingerprint: ((?:[0-9a-f]{4} ){4}[0-9a-f]{4})", screen)
            assert found is not None, screen
            prints.append(found.group(1))
            terminal.keys(answer, "Enter")
        assert prints[0] == prints[1]  # the same on both screens
        for terminal in (showing, typing):
            terminal.wait_for(expected)
        if expected == "EXIT=6":
            assert "declined" in showing.screen() + typing.screen()
            assert not (homes["laptop"] / "devices.json").exists()
            assert not (homes["desktop"] / "devices.json").exists()
    assert "Paired with desk" in showing.screen()
    listed = json.loads((homes["desktop"] / "devices.json").read_text())["devices"]
    assert len(listed) == 1
