"""Helpers the tests share: a real ``p2pcp-signal`` process, real ``p2pcp`` processes, and the
rule for system programs a test needs (skipped locally when missing, a failure under CI)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PYTHON = sys.executable
TIMEOUT = 120


@dataclass
class SignalServer:
    """A running rendezvous server process, logging to ``log``."""

    process: subprocess.Popen[str]
    url: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_signal_server(log: Path, *args: str, module: list[str] | None = None) -> SignalServer:
    """Start ``p2pcp-signal`` (or ``module``) on a free loopback port; wait until it listens."""
    command = module or ["-m", "signal_server"]
    with log.open("w") as sink:
        process = subprocess.Popen(
            [PYTHON, *command, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"listening on (wss?://127\.0\.0\.1:(\d+))", log.read_text())
        if match:
            return SignalServer(process, match.group(1), int(match.group(2)), log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"signal server did not start:\n{log.read_text()}")


def p2pcp(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Start ``python -m p2pcp ARGS`` with stdout and stderr captured."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    full_env["P2PCP_CONFIG"] = os.devnull  # never the developer's own config file
    full_env.update(env or {})
    return subprocess.Popen(
        [PYTHON, "-m", "p2pcp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=stdin,
        text=True,
        env=full_env,
        cwd=cwd,
    )


@dataclass
class Result:
    """A finished p2pcp process."""

    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The NDJSON events of a --json run (every stdout line must parse)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def finish(process: subprocess.Popen[str], timeout: float = TIMEOUT) -> Result:
    """Wait for a process and collect its output."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"p2pcp did not finish in {timeout}s; stderr:\n{err}") from None
    return Result(process.returncode, out, err)


def read_line(process: subprocess.Popen[str]) -> str:
    """One line of stdout, read without buffering so ``communicate`` later sees the rest."""
    assert process.stdout is not None
    data = bytearray()
    while not data.endswith(b"\n"):
        byte = os.read(process.stdout.fileno(), 1)
        if not byte:
            break
        data += byte
    return data.decode()


def start_send(
    server: SignalServer,
    *args: str,
    cwd: Path | None = None,
    json_mode: bool = True,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start a sender with --json and return it with the code it printed first."""
    extra = ["--json"] if json_mode else []
    process = p2pcp("send", "--server", server.url, *extra, *args, cwd=cwd, env=env)
    line = read_line(process)
    if not line:
        result = finish(process)
        raise AssertionError(f"sender exited {result.code} before a code: {result.stderr}")
    event = json.loads(line)
    assert event["event"] == "code", event
    return process, event["code"]


def receive(
    server: SignalServer, code: str, *args: str, cwd: Path | None = None, timeout: float = TIMEOUT
) -> Result:
    """Run a receiver with --json to completion."""
    return finish(p2pcp("receive", "--server", server.url, "--json", *args, code, cwd=cwd), timeout)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sender_and_receiver_dirs(
    tmp_path: Path, files: Sequence[tuple[str, str, str | None]]
) -> tuple[Path, Path]:
    """``src`` and ``out`` under ``tmp_path``: for each (name, the sender's text, the
    receiver's text or None), the sender's file in ``src`` and the receiver's, if any, in
    ``out`` (for offers that meet files already there)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name, theirs, ours in files:
        (src / name).write_text(theirs)
        if ours is not None:
            (out / name).write_text(ours)
    return src, out


def tree(root: Path) -> dict[str, Any]:
    """Every path below ``root`` mapped to its content hash and executable bit (or 'dir')."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (sha256_file(path), bool(path.stat().st_mode & 0o100))
    return out


def require(*programs: str, root: bool = False) -> None:
    """Skip the calling test (or module) when a system program it needs is missing or it needs
    root and does not have it; under CI=true (``.ci/run``, ``scripts/test``) fail instead, so a
    missing install step cannot pass as a skip."""
    missing = [p for p in programs if shutil.which(p) is None and not os.path.exists(p)]
    if root and os.geteuid() != 0:
        missing.append("root")
    if not missing:
        return
    reason = f"needs {', '.join(missing)} (scripts/test installs the programs; run it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on loopback ``port``, once it answers PING."""
    require("redis-server")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def join_and_leave(url: str, nameplate: str, times: int) -> None:
    """What a prober counting through nameplates does: join a room, say nothing, leave."""
    from websockets.asyncio.client import connect

    for _ in range(times):
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "nameplate": nameplate}))
            assert json.loads(await ws.recv())["type"] == "joined"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(root: Path, ips: Sequence[str] = ("127.0.0.1",)) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for ``ips`` and localhost: (CA, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("p2pcp test CA"))
        .issuer_name(_name("p2pcp test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]
                + [x509.IPAddress(ipaddress.ip_address(address)) for address in ips]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = root / "ca.pem", root / "server.pem", root / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file
