"""``p2pcp doctor`` in the network lab: from a public host, behind each kind of NAT, without
UDP, and against a server that hands out no TURN relay."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON
from netlab import SERVER_ADDRESSES, Node, Services, Site, env_without_config, lab, start_services

ENV = env_without_config()


def _doctor(node: Node, services: Services) -> dict[str, Any]:
    done = subprocess.run(
        node.command(PYTHON, "-m", "p2pcp", "doctor", "--json", "--server", services.url),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize(
    ("site", "nat", "direct", "relay"),
    [
        pytest.param(Site("none"), "none", "yes", ["udp", "tcp"], id="public"),
        pytest.param(Site("cone"), "cone", "yes", ["udp", "tcp"], id="cone"),
        pytest.param(Site("symmetric"), "symmetric", "limited", ["udp", "tcp"], id="symmetric"),
        pytest.param(Site("cone", block_udp=True), "udp-blocked", "no", ["tcp"], id="no-udp"),
    ],
)
def test_doctor_tells_what_this_host_looks_like_from_outside(
    site: Site, nat: str, direct: str, relay: list[str], tmp_path: Path
) -> None:
    with lab(site) as the_lab:
        services = start_services(the_lab, tmp_path)
        report = _doctor(the_lab.hosts[0], services)
    assert report["server"]["ok"] is True
    assert report["nat"] == nat, report
    assert report["direct"] == direct, report
    assert sorted(a["transport"] for a in report["turn"] if a["ok"]) == sorted(relay), report
    if nat != "udp-blocked":
        wan = the_lab.routers[0] or the_lab.hosts[0]
        assert {s["mapped"].rsplit(":", 1)[0] for s in report["stun"]} == {wan.address}


def test_doctor_without_turn_says_relay_is_missing(tmp_path: Path) -> None:
    with lab(Site("symmetric")) as the_lab:
        services = start_services(the_lab, tmp_path, turn=False)
        report = _doctor(the_lab.hosts[0], services)
    assert report["turn"] == [] and report["nat"] == "symmetric"
    assert any("TURN" in line for line in report["advice"]), report


def test_a_dead_stun_server_is_not_taken_for_blocked_udp(tmp_path: Path) -> None:
    """The only STUN server is dead, but the relay answers over UDP: doctor says the STUN
    servers seem down, not that UDP is blocked or that no transfer can work from here."""
    with lab(Site("cone")) as the_lab:
        services = start_services(the_lab, tmp_path, stun=False)
        done = subprocess.run(
            the_lab.hosts[0].command(
                PYTHON, "-m", "p2pcp", "doctor", "--json", "--server", services.url,
                "--ice-server", f"stun:{SERVER_ADDRESSES[1]}:9",
            ),
            capture_output=True, text=True, env=ENV, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["nat"] == "no-answer" and report["direct"] == "unknown", report
    advice = " ".join(report["advice"])
    assert "the STUN servers seem down" in advice and "no transfer" not in advice, advice
