"""The Scripting examples of docs/scripting.md, extracted and run exactly as written (the docs
cannot drift)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PYTHON, SignalServer

from p2pcp.code import make_code

README = Path(__file__).parent.parent / "docs" / "scripting.md"


@dataclass(frozen=True)
class Example:
    """One example: shell lines for the sending machine and for the receiving machine."""

    send: str
    receive: str


def scripting_examples() -> list[Example]:
    text = README.read_text()
    section = text.split("## Scripting", 1)[1].split("\n## ", 1)[0]
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        send, receive = block.split("# receiving machine\n")
        assert send.startswith("# sending machine\n"), block
        examples.append(Example(send.removeprefix("# sending machine\n"), receive))
    return examples


EXAMPLES = scripting_examples()


def test_the_scripting_section_has_examples() -> None:
    assert len(EXAMPLES) >= 5


def _fixtures(src: Path) -> None:
    (src / "photos" / "2024").mkdir(parents=True)
    (src / "photos" / "2024" / "beach.jpg").write_bytes(os.urandom(300_000))
    (src / "photos" / "cat.jpg").write_bytes(os.urandom(100_000))
    (src / "report.pdf").write_bytes(os.urandom(500_000))
    (src / "backup.tar.gz").write_bytes(os.urandom(800_000))
    (src / "notes.txt").write_text("remember the milk\n")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.send.strip()[:40] for e in EXAMPLES])
def test_readme_example(signal_server: SignalServer, tmp_path: Path, example: Example) -> None:
    src, dst, bin_dir = tmp_path / "sending", tmp_path / "receiving", tmp_path / "bin"
    for d in (src, dst, bin_dir):
        d.mkdir()
    _fixtures(src)
    # `p2pcp` on PATH runs this checkout's code with this interpreter.
    (bin_dir / "p2pcp").write_text(f'#!/bin/sh\nexec {PYTHON} -m p2pcp "$@"\n')
    (bin_dir / "p2pcp").chmod(0o755)
    code = make_code("777")
    base = {k: v for k, v in os.environ.items() if not k.startswith("P2PCP_")}
    base["P2PCP_CONFIG"] = os.devnull  # never the developer's own config file
    base.update(PATH=f"{bin_dir}:{base['PATH']}", P2PCP_SERVER=signal_server.url)
    sender = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", example.send],
        cwd=src,
        env={**base, "P2PCP_CODE": str(code)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30  # the room is open once the server logs its nameplate
    while f"nameplate={code.nameplate}" not in signal_server.log_text():
        assert time.monotonic() < deadline and sender.poll() is None, sender.communicate()
        time.sleep(0.05)
    receiver = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", example.receive],
        cwd=dst,
        env={**base, "CODE": str(code)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    sent_out, sent_err = sender.communicate(timeout=60)
    assert sender.returncode == 0, sent_err
    assert receiver.returncode == 0, receiver.stderr

    originals = {p.name: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    received = [p for p in dst.rglob("*") if p.is_file() and p.name in originals]
    for path in received:
        assert path.read_bytes() == originals[path.name], path
    if '--text "' in example.send:
        message = example.send.split('--text "', 1)[1].split('"', 1)[0]
        assert receiver.stdout == message + "\n"
    else:
        assert received, "the example received no file"
    assert not [p for p in dst.rglob("*.p2pcp-part")]
