"""The operators' deployment: a real nginx (Debian's) terminating TLS in front of two p2pcp-signal
processes that share a real redis-server, inside the network lab. Clients on two hosts with
addresses of their own: a transfer whose peers land on different processes, per-address limits
that count each client (not nginx), and X-Forwarded-For forged by a client, which gains
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import make_pki, require
from netlab import PUBLIC, SERVER_ADDRESSES, Lab, Node, Site, env_without_config, lab, wait_for

PYTHON = sys.executable
BACKENDS = (8801, 8802)
NGINX = "/usr/sbin/nginx"
require(NGINX, "redis-server")

NGINX_CONF = """
worker_processes 1;
user root root;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/nginx-access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream rendezvous {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    server {{
        listen {address}:443 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://rendezvous;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""

# Opens N WebSocket connections, keeps them open, prints what each got first, one JSON line.
CLIENT = """
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, count, ca, forged):
    context = ssl.create_default_context(cafile=ca) if url.startswith("wss") else None
    headers = {"X-Forwarded-For": forged} if forged else {}
    kept, first = [], []
    for _ in range(count):
        ws = await connect(url, ssl=context, additional_headers=headers)
        kept.append(ws)
        first.append(json.loads(await ws.recv()).get("type") or "?")
    print(json.dumps([f if f != "error" else "refused" for f in first]), flush=True)
    await asyncio.sleep(30)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


def _start_deployment(the_lab: Lab, root: Path) -> str:
    server = the_lab.server
    ca, cert, key = make_pki(root, [server.address])
    the_lab.start(
        server, "redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(root), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: _answers(server, "redis-cli", "ping") == "PONG", 10, "redis")
    for port in BACKENDS:
        log = root / f"signal-{port}.log"
        the_lab.start(
            server, PYTHON, "-m", "signal_server", "--host", "0.0.0.0", "--port", str(port),
            "--redis", "redis://127.0.0.1:6379/0", "--trusted-proxy", "127.0.0.1/32",
            "--max-connections-per-ip", "2", "--no-page",
            stdout=subprocess.DEVNULL, stderr=log.open("w"),
        )  # fmt: skip
        wait_for(lambda log=log: "listening on" in log.read_text(), 20, "p2pcp-signal")
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root, a=BACKENDS[0], b=BACKENDS[1], address=server.address, cert=cert, key=key
        )
    )
    the_lab.start(server, NGINX, "-c", str(conf), "-g", "daemon off;")
    wait_for(lambda: (root / "nginx.pid").exists(), 10, "nginx")
    return str(ca)


def _answers(node: Node, *args: str) -> str:
    done = subprocess.run(node.command(*args), capture_output=True, text=True)
    return done.stdout.strip()


def _connections(
    the_lab: Lab, host: Node, root: Path, url: str, count: int, forged: str = ""
) -> list[str]:
    script = root / "client.py"
    script.write_text(CLIENT)
    client = the_lab.start(host, PYTHON, str(script), url, str(count), str(root / "ca.pem"), forged)
    assert client.stdout is not None
    line = client.stdout.readline()
    assert line, client.communicate(timeout=30)[1]
    answers: list[str] = json.loads(line)
    return answers


def test_behind_nginx_a_transfer_spans_two_processes_and_limits_count_each_client(
    tmp_path: Path,
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(2_000_000))
    out = tmp_path / "out"
    out.mkdir()
    with lab(Site(), Site()) as the_lab:
        ca = _start_deployment(the_lab, tmp_path)
        url = f"wss://{SERVER_ADDRESSES[0]}"
        common = ["--server", url, "--ca-file", ca, "--json"]
        env = {**env_without_config(), "P2PCP_CODE": "4242-acorn-acorn"}
        sender = the_lab.start(
            the_lab.hosts[0], PYTHON, "-m", "p2pcp", "send", *common, str(payload), env=env
        )
        assert sender.stdout is not None and '"code"' in sender.stdout.readline()
        receiver = the_lab.start(
            the_lab.hosts[1], PYTHON, "-m", "p2pcp", "receive", *common, "--yes", "-o", str(out),
            env=env,
        )  # fmt: skip
        got_out, got_err = receiver.communicate(timeout=120)
        sent_out, sent_err = sender.communicate(timeout=60)
        assert receiver.returncode == 0 and sender.returncode == 0, (got_err, sent_err)
        assert (out / "payload.bin").read_bytes() == payload.read_bytes()
        logs = [(tmp_path / f"signal-{port}.log").read_text() for port in BACKENDS]
        # The two peers met through different processes, and each was seen as itself.
        assert sum("allocate side=" in log for log in logs) == 1, logs
        assert sum("join side=" in log for log in logs) == 1, logs

        # Each process allows 2 connections per client address. Four from the first host
        # spread over both processes; a fifth, forging X-Forwarded-For through nginx, is
        # still that host (nginx appends the address it saw; the right-most untrusted hop
        # counts).
        first = the_lab.hosts[0]
        assert _connections(the_lab, first, tmp_path, url, 4) == ["welcome"] * 4
        forged = f"{PUBLIC}.99"
        assert _connections(the_lab, first, tmp_path, url, 1, forged) == ["refused"]
        # The other host is not counted with the first (as it would be if nginx's own address
        # were the client's): it gets in.
        assert _connections(the_lab, the_lab.hosts[1], tmp_path, url, 2) == ["welcome"] * 2
        # Straight to a process, past nginx, the forged header is ignored: still the first host.
        direct = f"ws://{SERVER_ADDRESSES[0]}:{BACKENDS[0]}"
        assert _connections(the_lab, first, tmp_path, direct, 1, forged) == ["refused"]
