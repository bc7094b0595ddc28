"""Fixtures, and the tier of every test module (pytest markers: unit, session, e2e, netlab,
browser; ``scripts/test --fast`` runs the first two)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SignalServer, free_port, start_redis, start_signal_server

TIERS = {
    # pure logic: no sockets, no processes
    "test_code": "unit",
    "test_compress": "unit",
    "test_conflicts": "unit",
    "test_files": "unit",
    "test_pake": "unit",
    "test_devicekeys": "unit",
    "test_devices": "unit",
    "test_protocol": "unit",
    "test_rooms": "unit",
    "test_netcheck": "unit",
    "test_pieces": "unit",
    "test_reassembly": "unit",
    # real aiortc peers or sessions inside the test process, real rendezvous processes
    "test_session": "session",
    "test_sctp": "session",
    "test_ice": "session",
    "test_webrtc": "session",
    "test_config": "session",
    "test_meeting": "session",
    # real p2pcp and p2pcp-signal processes, with tmux, coturn, redis-server
    "test_e2e_paired": "e2e",
    "test_e2e_pipes": "e2e",
    "test_e2e_resume": "e2e",
    "test_e2e_security": "e2e",
    "test_e2e_transfer": "e2e",
    "test_hostile_server": "e2e",
    "test_e2e_interop": "e2e",
    "test_hostile_sender": "e2e",
    "test_readme": "e2e",
    "test_redis": "e2e",
    "test_store": "e2e",
    "test_signal_server": "e2e",
    "test_terminal": "e2e",
    "test_tls": "e2e",
    "test_turn": "e2e",
    # network namespaces, NAT routers, emulated links (root)
    "test_doctor": "netlab",
    "test_lan": "netlab",
    "test_netlab": "netlab",
    "test_proxy": "netlab",
    # Chromium and node
    "test_browser": "browser",
    "test_web": "browser",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        assert module in TIERS, f"{module}: give it a tier in tests/conftest.py"
        item.add_marker(getattr(pytest.mark, TIERS[module]))


@pytest.fixture
def signal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignalServer]:
    server = start_signal_server(tmp_path_factory.mktemp("server") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of its own on a free loopback port, its URL."""
    port = free_port()
    process = start_redis(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
