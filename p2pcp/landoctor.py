"""``p2pcp doctor`` without a server: the LAN mode, checked step by step, then the main job run
once. The interfaces a sender would announce on; an mDNS announcement that this host's own
browser finds (multicast works); the embedded rendezvous server reached on the LAN address, not
loopback (no firewall in the way); then a real transfer of a few MB between two p2pcp processes
on this host, through the embedded server and mDNS, verified, with its speed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from .lan import LanHost, browse, local_addresses

TRANSFER_BYTES = 4 * 1024 * 1024


@dataclass
class Step:
    """One check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass
class LanReport:
    """What ``doctor`` found of the LAN mode."""

    steps: list[Step] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    mb_per_s: float | None = None
    """The test transfer's speed, MB/s, when it ran."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


async def diagnose_lan() -> LanReport:
    """Run the LAN checks in order; a failed one ends the run (what follows needs it)."""
    report = LanReport()
    addresses = local_addresses()
    report.steps.append(
        Step("interfaces", bool(addresses), ", ".join(addresses) or "no address but loopback")
    )
    if not addresses:
        report.advice.append("No network interface to announce on: connect to a network.")
        return report
    host = LanHost()
    try:
        await host.start()
        found = await browse(3.0, host.nameplate)
        seen = host.nameplate in found
        report.steps.append(
            Step("mDNS", seen, "this host's announcement came back" if seen else "not seen in 3 s")
        )
        if not seen:
            report.advice.append(
                "This host's own mDNS announcement never came back: multicast (UDP 5353) is "
                "blocked here, so LAN mode cannot work; use a rendezvous server (--server)."
            )
            return report
        url = found[host.nameplate]
        reached = await _reach(url)
        report.steps.append(Step("firewall", reached is None, reached or f"{url} answered"))
        if reached is not None:
            report.advice.append(
                "The embedded rendezvous server is announced but cannot be reached on the LAN "
                "address: a firewall blocks incoming TCP to p2pcp; allow it, or use --server."
            )
            return report
    finally:
        await host.close()
    step, speed = await _transfer()
    report.steps.append(step)
    report.mb_per_s = speed
    report.advice.append(
        "LAN mode works here: `p2pcp send` without a server reaches receivers on this network."
        if step.ok
        else "A transfer through LAN mode failed on this host: see the error above."
    )
    return report


async def _reach(url: str) -> str | None:
    """None if the rendezvous at ``url`` answers with its welcome; else why not."""
    try:
        async with asyncio.timeout(3.0), connect(url, open_timeout=3.0) as ws:
            if json.loads(await ws.recv()).get("type") == "welcome":
                return None
            return f"{url} answered, but not as a p2pcp server"
    except (OSError, TimeoutError, ValueError) as exc:
        return f"{url}: {exc or type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - websockets' handshake errors: one line
        return f"{url}: {exc}"


async def _transfer() -> tuple[Step, float | None]:
    """Send TRANSFER_BYTES between two processes in LAN mode; the receiver's MB/s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    env["P2PCP_CONFIG"] = os.devnull  # LAN mode, whatever the user's config says
    with tempfile.TemporaryDirectory(prefix="p2pcp-doctor-") as tmp:
        source = Path(tmp) / "doctor.bin"
        data = os.urandom(TRANSFER_BYTES)
        source.write_bytes(data)
        out = Path(tmp) / "out"
        out.mkdir()
        sender = await _start(env, "send", "--json", str(source))
        try:
            assert sender.stdout is not None
            async with asyncio.timeout(20):
                first = json.loads(await sender.stdout.readline() or b"{}")
            code = first.get("code")
            if not code:
                return Step("transfer", False, "the sender printed no code"), None
            receiver = await _start(env, "receive", "--json", "--yes", "-o", str(out), code)
            async with asyncio.timeout(60):
                got, _ = await receiver.communicate()
                await sender.wait()
        except TimeoutError:
            return Step("transfer", False, "the test transfer did not finish in 60 s"), None
        finally:
            for process in (sender,):
                if process.returncode is None:
                    process.kill()
        events = [json.loads(line) for line in got.decode().splitlines() if line.strip()]
        last = events[-1] if events else {}
        arrived = out / "doctor.bin"
        if receiver.returncode != 0 or not arrived.exists():
            return Step("transfer", False, str(last.get("message", "the receiver failed"))), None
        if hashlib.sha256(arrived.read_bytes()).digest() != hashlib.sha256(data).digest():
            return Step("transfer", False, "the file arrived damaged"), None
        speed = TRANSFER_BYTES / max(float(last.get("seconds", 0.0)), 1e-3) / 1e6
        detail = f"{TRANSFER_BYTES // (1024 * 1024)} MiB between two processes, verified"
        return Step("transfer", True, f"{detail}, {speed:.1f} MB/s"), round(speed, 1)


async def _start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pcp",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
