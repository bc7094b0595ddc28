"""A rendezvous server that tampers with signaling: both peers must stop and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import finish, receive, start_send, start_signal_server

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
