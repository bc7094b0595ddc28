"""The previous release against this one, both ways, through a real server: the p2pcp of the
end of session 7 (commit dade2d8, protocol version 1, before revision 2 and keep-alives) taken
from git history and run as it was. Revision 2 keeps its hello's ``version`` at 1 for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SignalServer, finish, p2pcp

PREVIOUS = "dade2d8"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's packages, unpacked from git (a clone without history cannot)."""
    where = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "p2pcp", "signal_server"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"git history without {PREVIOUS}: {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def _previous(where: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    env.update(P2PCP_CONFIG=os.devnull, PYTHONPATH=str(where))
    return subprocess.Popen(
        [sys.executable, "-m", "p2pcp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=where,
    )


@pytest.mark.parametrize("direction", ["previous sends", "previous receives"])
def test_the_previous_release_and_this_one_transfer_both_ways(
    signal_server: SignalServer, tmp_path: Path, previous: Path, direction: str
) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(3_000_000))
    out = tmp_path / "out"
    out.mkdir()
    common = ["--server", signal_server.url, "--json"]
    if direction == "previous sends":
        sender = _previous(previous, "send", *common, str(source))
        assert sender.stdout is not None
        code = json.loads(sender.stdout.readline())["code"]
        got = finish(p2pcp("receive", *common, "--yes", "-o", str(out), code))
        assert got.code == 0, got.stderr
        assert sender.wait(60) == 0
    else:
        sender = p2pcp("send", *common, str(source))
        assert sender.stdout is not None
        code = json.loads(sender.stdout.readline())["code"]
        receiver = _previous(previous, "receive", *common, "--yes", "-o", str(out), code)
        _, err = receiver.communicate(timeout=120)
        assert receiver.returncode == 0, err
        assert finish(sender).code == 0
    assert (out / "f.bin").read_bytes() == source.read_bytes()
