"""The browser page without a browser: its protocol code against the Python side's outputs
(shared vectors, run under Node), its word list, and how the server serves it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import SignalServer, require, start_signal_server

from p2pcp.wordlist import WORDS

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(Path(__file__).parent / "vectors"))
import make_pake  # noqa: E402
import make_typos  # noqa: E402


def test_the_shared_vectors_are_what_the_python_side_computes() -> None:
    """tests/vectors/*.json are the Python side's outputs; tests/js/ holds the page to them."""
    assert (ROOT / "tests/vectors/pake.json").read_text() == make_pake.render()
    assert (ROOT / "tests/vectors/typos.json").read_text() == make_typos.render()


def test_the_page_code_matches_the_vectors_under_node() -> None:
    require("node")
    node = shutil.which("node")
    assert node
    done = subprocess.run(
        [node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), done.stdout[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 10, done.stdout[-2000:]


def test_the_page_javascript_type_checks() -> None:
    """tsc (pinned in webbuild/package.json, installed by scripts/test) checks the page's modules,
    each of which opts in with `// @ts-check`: webbuild/tsconfig.json."""
    tsc = ROOT / "webbuild/node_modules/.bin/tsc"
    require("node", str(tsc))
    for name in ("app.js", "transfer.js", "p2pcp.js"):
        first = (ROOT / "signal_server/web" / name).read_text().splitlines()[0]
        assert first == "// @ts-check", f"{name} does not opt in to type checks"
    done = subprocess.run(
        [str(tsc), "-p", "webbuild"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_page_constants_are_the_cli_constants() -> None:
    """signal_server/web/constants.js is what tests/make_constants.py renders from p2pcp."""
    import make_constants

    assert make_constants.PATH.read_text() == make_constants.render()
    assert "CREDIT_WINDOW = 16777216;" in make_constants.render()


def test_the_page_word_list_is_the_cli_word_list() -> None:
    text = (ROOT / "signal_server/web/wordlist.js").read_text()
    words = json.loads(text[text.index("[") : text.rindex("]") + 1])
    assert words == list(WORDS)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_server_serves_the_page_with_a_strict_policy(signal_server: SignalServer) -> None:
    base = f"http://127.0.0.1:{signal_server.port}"
    status, headers, body = _get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="code"' in body and b'src="/app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in (
        "/app.js",
        "/p2pcp.js",
        "/transfer.js",
        "/wordlist.js",
        "/constants.js",
        "/vendor/noble.js",
        "/vendor/qr.js",
        "/vendor/zip.js",
        "/style.css",
    ):
        status, headers, body = _get(base + path)
        assert status == 200 and body, path
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert headers["Content-Type"].startswith(kind), path
    served = _get(base + "/p2pcp.js")[2]
    assert served == (ROOT / "signal_server/web/p2pcp.js").read_bytes()
    for path in ("/../pyproject.toml", "/vendor/../app.js", "/server.py", "/web/index.html"):
        assert _get(base + path)[0] == 404, path
    assert _get(base + "/healthz")[2] == b"ok\n"


def test_no_page_leaves_only_the_websocket_and_health(tmp_path: Path) -> None:
    server = start_signal_server(tmp_path / "server.log", "--no-page")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/")[0] == 426  # websockets: "Upgrade Required"
        assert _get(base + "/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    "name", ["index.html", "app.js", "p2pcp.js", "wordlist.js", "constants.js", "style.css"]
)
def test_the_page_loads_nothing_from_elsewhere(name: str) -> None:
    """No CDN: every script, style and connection stays on the page's own server."""
    text = (ROOT / "signal_server/web" / name).read_text()
    assert not re.search(r"(https?|wss?)://(?!localhost)[\w.-]", text), name
