"""The pins of p2pcp/webrtc/: every change is in force with the pinned aiortc, aioice and
pyOpenSSL, a peer connection is built from our subclasses, and a change that is not in force
(another version, or an original whose source changed) is reported by ``p2pcp doctor`` and
``--debug`` and leaves aiortc as it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiortc import rtcicetransport, rtcpeerconnection, rtcsctptransport
from helpers import SignalServer

from p2pcp import transport, webrtc
from p2pcp.netcheck import IcePlan
from p2pcp.webrtc import pins
from p2pcp.webrtc.dtls import DtlsTransport
from p2pcp.webrtc.ice import IceConnection
from p2pcp.webrtc.sctp import SctpTransport

NAMES = ["loss recovery", "delayed SACK", "reassembly", "large packets", "ICE fixes"]


def test_every_change_is_in_force_with_the_pinned_versions() -> None:
    for name, version in pins.PINNED.items():
        assert pins.installed(name) == version, name
    webrtc.install()
    changes = webrtc.changes(deep=True)
    assert [c.name for c in changes] == NAMES
    assert [c.why_not for c in changes if not c.in_force] == []


def test_the_pins_in_pyproject_are_the_ones_the_changes_were_written_for() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    for name, version in pins.PINNED.items():
        assert f'"{name}=={version}"' in text, name


def test_a_peer_connection_is_built_from_our_subclasses() -> None:
    async def scenario() -> tuple[object, object, object, object, object]:
        a, b = transport.Transport(IcePlan([])), transport.Transport(IcePlan([]))
        try:
            await a.accept_answer(await b.accept_offer(await a.create_offer()))
            await asyncio.gather(a.wait_open(), b.wait_open())
            await a.send(b"hello")
            assert await b.recv() == b"hello"
            sctp = a._pc.sctp
            assert sctp is not None
            return sctp, sctp.transport, a._ice_connection(), b._pc.sctp, b._ice_connection()
        finally:
            await asyncio.gather(a.close(), b.close())

    sctp, dtls, ice, other_sctp, other_ice = asyncio.run(scenario())
    assert isinstance(sctp, SctpTransport) and isinstance(other_sctp, SctpTransport)
    assert isinstance(dtls, DtlsTransport)
    assert isinstance(ice, IceConnection) and isinstance(other_ice, IceConnection)


def test_another_version_substitutes_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    original = rtcsctptransport.RTCSctpTransport
    monkeypatch.setitem(pins.PINNED, "aiortc", "1.16.1")
    monkeypatch.setattr(rtcpeerconnection, "RTCSctpTransport", original)
    changes = {c.name: c for c in webrtc.install()}
    assert vars(rtcpeerconnection)["RTCSctpTransport"] is original  # aiortc's own stays
    for name in ("loss recovery", "delayed SACK", "reassembly", "large packets"):
        assert not changes[name].in_force
        assert "aiortc 1.16.0 installed, written for 1.16.1" in changes[name].why_not
    assert changes["ICE fixes"].in_force  # aioice is the pinned one
    assert vars(rtcicetransport)["Connection"] is IceConnection


def test_an_original_whose_source_changed_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    function, _ = webrtc.ORIGINALS["RTCSctpTransport._transmit"]
    monkeypatch.setitem(webrtc.ORIGINALS, "RTCSctpTransport._transmit", (function, "0" * 16))
    changes = webrtc.changes(deep=True)
    assert not any(c.in_force for c in changes)
    assert all("RTCSctpTransport._transmit changed upstream" in c.why_not for c in changes)
    assert all(c.in_force for c in webrtc.changes())  # the quick check reads no source


SHIM = (
    "import sys; from p2pcp.webrtc import pins; pins.PINNED['aiortc'] = '1.16.1'; "
    "from p2pcp.cli import main; sys.argv[0] = 'p2pcp'; main()"
)


def _doctor(server: SignalServer, *python: str) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, *python, "doctor", "--json", "--debug", "--server", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report, done.stderr


def test_doctor_and_debug_say_whether_each_change_is_in_force(
    signal_server: SignalServer,
) -> None:
    report, log = _doctor(signal_server, "-m", "p2pcp")
    assert report["stack"] == [{"name": n, "in_force": True, "why_not": ""} for n in NAMES]
    assert "loss recovery: in force" in log
    report, log = _doctor(signal_server, "-c", SHIM)
    stack = {c["name"]: c for c in report["stack"]}  # type: ignore[attr-defined]
    assert stack["loss recovery"]["in_force"] is False
    assert "written for 1.16.1" in stack["large packets"]["why_not"]
    assert stack["ICE fixes"]["in_force"] is True
    assert "loss recovery: not in force (aiortc 1.16.0 installed, written for 1.16.1)" in log
    assert any("Not in force: loss recovery" in line for line in report["advice"])  # type: ignore[attr-defined]


def test_the_upstream_patches_apply_to_the_pinned_releases(tmp_path: Path) -> None:
    """docs/upstream/*.patch apply cleanly to the installed (pinned) aiortc and aioice."""
    import aioice
    import aiortc

    sources = {"aiortc": Path(aiortc.__file__).parent, "aioice": Path(aioice.__file__).parent}
    patches = sorted((Path(__file__).parent.parent / "docs" / "upstream").glob("*.patch"))
    assert len(patches) == 4
    for patch in patches:
        tree = tmp_path / patch.stem
        for line in patch.read_text().splitlines():
            if line.startswith("--- a/src/"):
                relative = line.removeprefix("--- a/src/")
                package, _, name = relative.partition("/")
                (tree / "src" / package).mkdir(parents=True, exist_ok=True)
                (tree / "src" / relative).write_bytes((sources[package] / name).read_bytes())
        done = subprocess.run(
            ["git", "apply", "--check", str(patch)], cwd=tree, capture_output=True, text=True
        )
        assert done.returncode == 0, (patch.name, done.stderr)
