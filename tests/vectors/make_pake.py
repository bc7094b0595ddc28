"""Write ``pake.json``: SPAKE2, key-derivation and sealing outputs of the Python side for fixed
inputs. ``tests/test_vectors.py`` checks the Python code still produces exactly this file and runs
the JavaScript suite (``tests/js/``), which checks the browser page's code against the same file.

Run ``python tests/vectors/make_pake.py`` only when the protocol changes on purpose."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spake2 import SPAKE2_Symmetric
from spake2.spake2 import DefaultParams

from p2pcp.pake import APP_ID, SealedChannel, derive_key, verification_string

HERE = Path(__file__).parent
CASES = [
    ("7-guitar-ocean", True),
    ("123-abandon-zoo", True),
    ("7-guitar-ocean", False),  # the peer typed another code: keys differ
]


def _entropy(label: str) -> bytes:
    """64 fixed bytes per label (what os.urandom gives SPAKE2 for its secret scalar)."""
    return hashlib.sha512(label.encode()).digest()


def vectors() -> dict[str, Any]:
    cases = []
    for index, (code, same) in enumerate(CASES):
        other = code if same else "7-guitar-river"
        ea, eb = _entropy(f"{index}a"), _entropy(f"{index}b")
        a = SPAKE2_Symmetric(code.encode(), idSymmetric=APP_ID, entropy_f=lambda n, e=ea: e[:n])
        b = SPAKE2_Symmetric(other.encode(), idSymmetric=APP_ID, entropy_f=lambda n, e=eb: e[:n])
        ma, mb = a.start(), b.start()
        ka, kb = a.finish(mb), b.finish(ma)
        sealer = SealedChannel.for_role(ka, "sender")
        payload = {"type": "confirm", "role": "sender"}
        cases.append(
            {
                "code_a": code,
                "code_b": other,
                "entropy_a": ea.hex(),
                "entropy_b": eb.hex(),
                "message_a": ma.hex(),
                "message_b": mb.hex(),
                "key_a": ka.hex(),
                "key_b": kb.hex(),
                "seal_sender": derive_key(ka, "seal:sender").hex(),
                "seal_receiver": derive_key(ka, "seal:receiver").hex(),
                "verify": verification_string(ka),
                "payload": payload,
                "sealed": [sealer.seal(payload), sealer.seal(payload)],
            }
        )
    params = DefaultParams
    return {
        "app_id": APP_ID.decode(),
        "S": params.S.to_bytes().hex(),
        "comment": "python-spake2 SPAKE2_Symmetric, Ed25519; sealed = base64 AES-256-GCM boxes "
        "under seal_sender with nonces 0 and 1 (see docs/protocol.md section 2)",
        "cases": cases,
    }


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    (HERE / "pake.json").write_text(render())
