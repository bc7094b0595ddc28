"""wss:// end to end: a server with a certificate the test makes, clients that verify it."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import finish, make_pki, p2pcp, sha256_file, start_signal_server


def test_wss_with_a_trusted_ca_and_refusal_of_an_unknown_one(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = make_pki(tmp_path)
    server = start_signal_server(
        tmp_path / "server.log", "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    )
    try:
        assert server.url.startswith("wss://127.0.0.1:")
        (tmp_path / "doc.txt").write_text("over TLS")
        out = tmp_path / "out"
        out.mkdir()
        # Without the CA the certificate is not trusted: exit 4 and a clear message.
        refused = finish(p2pcp("send", "--server", server.url, str(tmp_path / "doc.txt")))
        assert refused.code == 4
        assert "not trusted" in refused.stderr and "--ca-file" in refused.stderr
        # With the CA (as a flag on one side, from the environment on the other) it works.
        sender = p2pcp(
            "send",
            "--json",
            "--server",
            server.url,
            "--ca-file",
            str(ca_file),
            str(tmp_path / "doc.txt"),
        )
        assert sender.stdout is not None
        code = json.loads(sender.stdout.readline())["code"]
        got = finish(
            p2pcp(
                "receive",
                "--yes",
                "-o",
                str(out),
                "--server",
                server.url,
                code,
                env={"P2PCP_CA_FILE": str(ca_file)},
            )
        )
        assert finish(sender).code == 0 and got.code == 0, got.stderr
        assert sha256_file(out / "doc.txt") == sha256_file(tmp_path / "doc.txt")
        # --insecure skips verification (for testing only).
        insecure = finish(
            p2pcp(
                "receive",
                "--yes",
                "--insecure",
                "-o",
                str(out),
                "--server",
                server.url,
                "5-acorn-zebra",
            )
        )
        assert insecure.code == 3  # it reached the server: the nameplate is unknown there
    finally:
        server.stop()
