"""A rendezvous server that tampers with signaling: both peers must stop and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import finish, p2pcp, receive, start_send, start_signal_server

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    ("mode", "codes", "words"),
    [
        ("tamper-offer", {5}, "tampered"),
        ("tamper-answer", {5}, "tampered"),
        ("replay", {5}, "tampered"),
        ("mitm-pake", {3}, "wrong code"),
    ],
)
def test_tampering_server_makes_both_peers_abort(
    tmp_path: Path, mode: str, codes: set[int], words: str
) -> None:
    server = start_signal_server(
        tmp_path / "server.log", "--mode", mode, module=[str(HERE / "hostile_server.py")]
    )
    try:
        (tmp_path / "secret.txt").write_text("for the real receiver only")
        out = tmp_path / "out"
        out.mkdir()
        sender, code = start_send(server, str(tmp_path / "secret.txt"))
        got = receive(server, code, "--yes", "-o", str(out), timeout=90)
        sent = finish(sender, timeout=90)
    finally:
        server.stop()
    assert got.code in {3, 5} and sent.code in {3, 5}, (got.stdout, sent.stdout)
    # The side that detects the attack says so; the other learns its peer gave up.
    messages = [r.events[-1]["message"] for r in (got, sent)]
    assert any(words in m for m in messages), messages
    assert {got.code, sent.code} & codes
    assert list(out.iterdir()) == []
    assert not any(e["event"] == "connected" for e in got.events + sent.events)
    if mode != "mitm-pake":
        assert "tampered" in server.log_text() or "replayed" in server.log_text()


def test_a_server_cannot_write_escape_sequences_to_the_terminal_or_json(tmp_path: Path) -> None:
    """The server's refusal reaches the user escaped: no ESC, BEL or bidi override on stderr, in
    human or --json output, from send or receive (escape.show, applied by both sinks)."""
    server = start_signal_server(
        tmp_path / "server.log", "--mode", "escape", module=[str(HERE / "hostile_server.py")]
    )
    (tmp_path / "a.txt").write_text("a")
    try:
        runs = {
            "receive": finish(p2pcp("receive", "--server", server.url, "--yes", "7-acorn-acorn")),
            "send": finish(p2pcp("send", "--server", server.url, str(tmp_path / "a.txt"))),
            "receive --json": receive(server, "7-acorn-acorn", "--yes"),
            "send --debug": finish(
                p2pcp("send", "--server", server.url, "--debug", str(tmp_path / "a.txt"))
            ),
        }
    finally:
        server.stop()
    for name, run in runs.items():
        assert run.code == 4, (name, run.stderr)
        raw = run.stdout + run.stderr
        for bad in ("\x1b", "\x07", "\u202e", "\x9b"):
            assert bad not in raw, (name, bad, raw)
    human = runs["receive"].stderr
    assert "the rendezvous server refused: \\x1b[2J\\x1b[H\\x1b[31mFAKE" in human, human
    assert "\\u202egnp.exe\\x07" in runs["send"].stderr
    message = runs["receive --json"].events[-1]["message"]
    assert message.startswith("the rendezvous server refused: \\x1b[2J"), message
    assert "\x1b" not in message


def test_a_server_sending_deeply_nested_json_is_a_connect_error(tmp_path: Path) -> None:
    """Nesting deeper than Python's parser follows is a malformed message (exit 4), not an
    internal error (exit 1) with a traceback."""
    server = start_signal_server(
        tmp_path / "server.log", "--mode", "deep", module=[str(HERE / "hostile_server.py")]
    )
    (tmp_path / "a.txt").write_text("a")
    try:
        got = receive(server, "7-acorn-acorn", "--yes")
        sent = finish(p2pcp("send", "--server", server.url, "--json", str(tmp_path / "a.txt")))
    finally:
        server.stop()
    for run in (got, sent):
        assert run.code == 4, run.stderr
        assert run.events[-1]["message"] == "the rendezvous server sent a malformed message"
        assert "Traceback" not in run.stderr
