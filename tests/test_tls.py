"""wss:// end to end: a server with a certificate the test makes, clients that verify it."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import finish, p2pcp, sha256_file, start_signal_server


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _make_pki(root: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""
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
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
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


def test_wss_with_a_trusted_ca_and_refusal_of_an_unknown_one(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = _make_pki(tmp_path)
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
