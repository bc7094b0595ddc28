"""The browser page in headless Chromium against real ``p2pcp-signal`` and ``p2pcp`` processes:
Chromium's WebRTC (libwebrtc, dcSCTP) on one side, aiortc on the other.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), driven by Playwright;
the flags make loopback WebRTC work (host candidates, no mDNS names) and keep Chromium off the
network (no background services). The page is opened as ``http://127.0.0.1:PORT/``, a secure
context, as WebCrypto requires.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zxingcpp
from helpers import (
    SignalServer,
    finish,
    join_and_leave,
    p2pcp,
    require,
    sha256_file,
    start_send,
)
from PIL import Image
from playwright.sync_api import Download, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
]
MIB = 1 << 20


@pytest.fixture
def page(signal_server: SignalServer) -> Iterator[Page]:
    require(CHROMIUM)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(accept_downloads=True)
        the_page = context.new_page()
        the_page.goto(f"http://127.0.0.1:{signal_server.port}/")
        the_page.wait_for_selector("body[data-ready=yes]", state="attached")
        assert the_page.get_attribute("body", "data-state") == "idle"
        yield the_page
        browser.close()


def _wait_state(page: Page, *states: str, timeout: float = 120) -> str:
    selector = ", ".join(f"body[data-state={s}]" for s in states)
    page.wait_for_selector(selector, state="attached", timeout=timeout * 1000)
    return str(page.get_attribute("body", "data-state"))


def _connected(page: Page, peer: subprocess.Popen[str]) -> None:
    """Wait until the page shows the offer; if it fails instead, say why on both sides."""
    if _wait_state(page, "connected", "error") != "connected":
        if peer.poll() is None:
            peer.kill()
        out, err = peer.communicate()
        raise AssertionError(
            f"page: {page.inner_text('#status')}\npeer: {out[-2000:]}{err[-3000:]}"
        )


def _payload(tmp_path: Path) -> list[Path]:
    big = tmp_path / "random.bin"
    big.write_bytes(os.urandom(20 * MIB))
    note = tmp_path / "<img src=x onerror=alert(1)>note.txt"  # shown as text, never as HTML
    note.write_text("a small text file\nwith two lines\n")
    return [big, note]


def test_cli_send_to_browser_receive(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    sources = _payload(tmp_path)
    sender, code = start_send(signal_server, *map(str, sources))
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    verification = page.inner_text("#verification")
    offered = page.inner_text("#offer")
    assert "random.bin" in offered and "21.0 MB" in offered
    assert "<img src=x onerror=alert(1)>note.txt" in offered
    assert not page.query_selector_all("#offer img")
    page.click("#accept")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    assert "2 files received and verified" in page.inner_text("#status")
    result = finish(sender)
    assert result.code == 0, result.stderr
    shown_by_cli = next(e["verification"] for e in result.events if e["event"] == "verification")
    assert f"Verification: {shown_by_cli} " in verification
    # Two files: one streamed zip holding both, each under its own name.
    assert [d.suggested_filename for d in downloads] == ["p2pcp.zip"]
    target = tmp_path / "saved.zip"
    downloads[0].save_as(target)
    with zipfile.ZipFile(target) as archive:
        got = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
    assert got == {path.name: sha256_file(path) for path in sources}


def test_browser_send_to_cli_receive(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    sources = _payload(tmp_path)
    page.set_input_files("#files", [str(path) for path in sources])
    page.click("#send")
    page.wait_for_selector("#ticket:not([hidden])", state="attached", timeout=30_000)
    assert _wait_state(page, "waiting") == "waiting"
    command = shlex.split(page.inner_text("#command"))
    code = page.inner_text("#your-code")
    assert command == ["p2pcp", "receive", "--server", signal_server.url, code]
    _check_qr(page, f"http://127.0.0.1:{signal_server.port}/#{code}")
    # A prober that joins and leaves without a word made no guess: the page keeps waiting.
    # (in a thread of its own: Playwright's sync API keeps an event loop running in this one)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, join_and_leave(signal_server.url, code.split("-")[0], 2)).result()
    deadline = time.monotonic() + 30  # polled from here: the page's policy forbids eval
    while "left without trying" not in page.inner_text("#status"):
        assert time.monotonic() < deadline, page.inner_text("#status")
        time.sleep(0.1)
    assert page.get_attribute("body", "data-state") == "waiting"
    out = tmp_path / "out"
    out.mkdir()
    # Exactly the command the page shows, plus the options a script adds.
    result = finish(p2pcp(*command[1:2], "--json", "--yes", "-o", str(out), *command[2:]))
    assert result.code == 0, result.stderr + result.stdout[-2000:]
    assert _wait_state(page, "done", "error", timeout=30) == "done", page.inner_text("#status")
    assert {p.name: sha256_file(p) for p in out.iterdir()} == {
        p.name: sha256_file(p) for p in sources
    }
    assert result.events[-1]["event"] == "done" and result.events[-1]["files"] == 2


def test_a_wrong_code_typed_in_the_page_ends_in_error_and_the_cli_exits_3(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("secret")
    sender, code = start_send(signal_server, str(tmp_path / "f.txt"))
    nameplate, first, second = code.split("-")
    wrong = f"{nameplate}-{second}-{first}" if first != second else f"{nameplate}-{first}-zoo"
    page.fill("#code", wrong)
    page.click("#receive")
    assert _wait_state(page, "error", "done", timeout=60) == "error"
    assert "wrong code" in page.inner_text("#status")
    result = finish(sender)
    assert result.code == 3, result.stderr


def test_a_mistyped_word_is_refused_before_anything_is_sent(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("secret")
    sender, code = start_send(signal_server, str(tmp_path / "f.txt"))
    page.fill("#code", code + "x")
    page.click("#receive")
    assert _wait_state(page, "error", timeout=10) == "error"
    assert "is not a code word" in page.inner_text("#status")
    # The code was not spent: the right one still works.
    page.fill("#code", code)
    page.click("#receive")
    assert _wait_state(page, "connected", "error") == "connected", page.inner_text("#status")
    page.click("#accept")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    assert finish(sender).code == 0


def test_a_sender_that_vanishes_mid_transfer_ends_in_error(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.write(os.urandom(MIB) * 400)
    sender, code = start_send(signal_server, str(big))
    page.fill("#code", code)
    page.click("#receive")
    assert _wait_state(page, "connected", "error") == "connected", page.inner_text("#status")
    page.click("#accept")
    _wait_state(page, "transferring")
    page.wait_for_selector("#progress[value]:not([value='0'])", state="attached")
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    assert _wait_state(page, "error", "done", timeout=60) == "error"
    # The CLI sent keep-alives, so the page knows it is gone after 10 s of silence.
    assert "stopped answering (nothing for 10 s)" in page.inner_text("#status")
    assert not page.query_selector_all("#downloads a")  # nothing offered as a download


@pytest.mark.parametrize("scenario", ["wrong-hash", "wrong-hash-in-a-folder"])
def test_a_hash_mismatch_ends_in_error_and_saves_nothing(
    signal_server: SignalServer, page: Page, tmp_path: Path, scenario: str
) -> None:
    """A file that fails its check is never offered; in a folder, the zip holding the files
    that passed is not offered either."""
    hostile = str(Path(__file__).parent / "hostile.py")
    liar = subprocess.Popen(
        [sys.executable, hostile, scenario, signal_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert liar.stdout is not None
    code = liar.stdout.readline().strip()
    assert code, liar.communicate()[1]
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    page.fill("#code", code)
    page.click("#receive")
    assert _wait_state(page, "connected", "error") == "connected", page.inner_text("#status")
    page.click("#accept")
    assert _wait_state(page, "error", "done", timeout=60) == "error"
    assert "hash mismatch" in page.inner_text("#status")
    time.sleep(0.5)
    assert not downloads
    stdout, stderr = liar.communicate(timeout=60)
    assert "abort" in stdout, stderr  # the page told the sender why it stopped


def test_declining_in_the_page_ends_the_cli_with_exit_6(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("not wanted")
    sender, code = start_send(signal_server, str(tmp_path / "f.txt"))
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    page.click("#decline")
    assert _wait_state(page, "idle", "error", timeout=30) == "idle"
    assert "declined" in page.inner_text("#status")
    result = finish(sender)
    assert result.code == 6, result.stdout + result.stderr


def test_the_page_receives_from_its_address_with_the_code_in_the_fragment(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    """What `p2pcp send --qr` encodes when the server serves the page: the page's address with
    the code after `#`. Opened, the page fills in the code and receives at once, and takes the
    code out of the address bar (a fragment never reaches the server)."""
    (tmp_path / "hello.txt").write_text("scanned from a phone\n")
    sender = p2pcp("send", "--server", signal_server.url, "--json", str(tmp_path / "hello.txt"))
    assert sender.stdout is not None
    first = json.loads(sender.stdout.readline())
    code = first["code"]
    address = f"http://127.0.0.1:{signal_server.port}/#{code}"
    assert first["page"] == address
    page.goto("about:blank")  # as a phone opens it: a fresh load, not a hash change
    page.goto(address)
    _connected(page, sender)
    assert page.evaluate("location.hash") == "" and page.input_value("#code") == code
    page.click("#accept")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    result = finish(sender)
    assert result.code == 0, result.stderr
    assert code.split("-", 1)[1] not in signal_server.log_text()  # the words stayed home


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def _cli_receives_what_the_page_sends(signal_server: SignalServer, page: Page, out: Path) -> None:
    page.click("#send")
    page.wait_for_selector("#ticket:not([hidden])", state="attached", timeout=30_000)
    code = page.inner_text("#your-code")
    out.mkdir()
    result = finish(
        p2pcp("receive", "--server", signal_server.url, "--json", "--yes", "-o", str(out), code)
    )
    assert result.code == 0, result.stderr
    assert _wait_state(page, "done", "error", timeout=30) == "done", page.inner_text("#status")


def test_the_page_sends_a_folder_three_levels_deep_with_its_paths(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    """The folder picker (webkitdirectory) sends relative paths: the CLI gets the same tree."""
    album = tmp_path / "album"
    (album / "2024" / "summer").mkdir(parents=True)
    (album / "notes.txt").write_text("top\n")
    (album / "2024" / "list.txt").write_text("middle\n")
    (album / "2024" / "summer" / "beach.bin").write_bytes(os.urandom(3 * MIB))
    page.set_input_files("#folder", str(album))
    out = tmp_path / "out"
    _cli_receives_what_the_page_sends(signal_server, page, out)
    assert _tree(out / "album") == _tree(album)
    assert "3 files sent and verified" in page.inner_text("#status")


def test_files_and_folders_dropped_on_the_page_are_sent(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    """A drop (a DataTransfer made in the page, as the browser makes one) sends what it held."""
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped one\\n"], "one.txt"));
            data.items.add(new File(["dropped two\\n"], "two.txt"));
            document.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        }"""
    )
    deadline = time.monotonic() + 10
    while "2 files ready to send" not in page.inner_text("#drop"):
        assert time.monotonic() < deadline, page.inner_text("#drop")
        time.sleep(0.1)
    out = tmp_path / "out"
    _cli_receives_what_the_page_sends(signal_server, page, out)
    assert (out / "one.txt").read_text() == "dropped one\n"
    assert (out / "two.txt").read_text() == "dropped two\n"


def test_phone_layout_dark_mode_tap_targets_and_a_typo_caught_before_sending(
    signal_server: SignalServer, page: Page
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 18, 18)", background
    for selector in ("#receive", "#send", "#code", "#files"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["height"] >= 44, (selector, box)
    page.fill("#code", "7-acorn-zebar")
    page.click("#receive")
    assert _wait_state(page, "error") == "error"
    assert "'zebar' is not a code word: did you mean 'zebra'?" in page.inner_text("#status")
    assert "connect side=" not in signal_server.log_text()  # nothing was sent


def test_progress_says_which_file_how_fast_and_how_long(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    (tmp_path / "a.bin").write_bytes(os.urandom(40 * MIB))
    (tmp_path / "b.bin").write_bytes(os.urandom(MIB))
    sender, code = start_send(signal_server, str(tmp_path / "a.bin"), str(tmp_path / "b.bin"))
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    assert "2 files, 43.0 MB" in page.inner_text("#offer-total")  # 41 MiB, in MB
    page.click("#accept")
    seen = ""
    deadline = time.monotonic() + 60
    while not re.search(r"file 1 of 2 · a\.bin · [\d.]+ [kMG]?B/s · \d+:\d\d left", seen):
        assert time.monotonic() < deadline, seen
        seen = page.inner_text("#progress-text")
        time.sleep(0.05)
    assert _wait_state(page, "done", "error") == "done"
    assert "Done: 2 files received and verified" in page.inner_text("#status")
    assert finish(sender).code == 0


def _check_qr(page: Page, text: str) -> None:
    """The ticket's QR code decodes to ``text`` (zxing-cpp reads a screenshot of it): a phone
    that scans it opens the page with the code."""
    assert page.locator("#qr").get_attribute("data-text") == text
    shot = Image.open(io.BytesIO(page.locator("#qr").screenshot()))
    assert [result.text for result in zxingcpp.read_barcodes(shot)] == [text]


def test_a_folder_arrives_in_the_page_as_one_zip_with_its_tree(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    """A folder three levels deep, CLI -> page: one streamed `album.zip`, offered only after
    every file's SHA-256 matched, which unzips to the same tree."""
    album = tmp_path / "album"
    (album / "2024" / "summer").mkdir(parents=True)
    (album / "notes.txt").write_text("top\n")
    (album / "2024" / "list.txt").write_text("middle\n")
    (album / "2024" / "summer" / "beach.bin").write_bytes(os.urandom(5 * MIB))
    sender, code = start_send(signal_server, str(album))
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    page.click("#accept")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    assert finish(sender).code == 0
    assert [d.suggested_filename for d in downloads] == ["album.zip"]
    target = tmp_path / "album.zip"
    downloads[0].save_as(target)
    out = tmp_path / "out"
    with zipfile.ZipFile(target) as archive:
        archive.extractall(out)
    assert _tree(out / "album") == _tree(album)


AXE = Path(__file__).parent.parent / "webbuild" / "node_modules" / "axe-core" / "axe.min.js"


def _serious(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run()).violations")
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])})"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_no_serious_accessibility_violations_idle_or_mid_transfer(
    signal_server: SignalServer, tmp_path: Path
) -> None:
    """axe-core (pinned in webbuild/package.json, run inside the page: the test's own context
    lets its script in past the page's CSP) finds nothing serious or critical, idle in light
    and dark mode, at the offer, and mid-transfer."""
    require(CHROMIUM, str(AXE))
    (tmp_path / "big.bin").write_bytes(os.urandom(60 * MIB))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(bypass_csp=True).new_page()
        page.goto(f"http://127.0.0.1:{signal_server.port}/")
        page.wait_for_selector("body[data-ready=yes]", state="attached")
        problems = {"idle": _serious(page)}
        page.emulate_media(color_scheme="dark")
        problems["idle, dark"] = _serious(page)
        sender, code = start_send(
            signal_server, str(tmp_path / "big.bin"), env={"P2PCP_LARGE_PACKETS": "0"}
        )
        page.fill("#code", code)
        page.click("#receive")
        _connected(page, sender)
        problems["offer"] = _serious(page)
        page.click("#accept")
        _wait_state(page, "transferring", "done", "error")
        problems["mid-transfer"] = _serious(page)
        _wait_state(page, "done", "error")
        finish(sender)
        browser.close()
    assert problems == {"idle": [], "idle, dark": [], "offer": [], "mid-transfer": []}, problems


PAGE_DOC = Path(__file__).parent.parent / "docs" / "page.md"
SHOTS = PAGE_DOC.parent / "page"


@pytest.mark.parametrize(
    ("size", "width", "height", "scheme"),
    [("desktop", 900, 700, "light"), ("phone", 390, 844, "dark")],
)
def test_screenshots_of_the_page_idle_offer_transfer_and_done(
    signal_server: SignalServer,
    page: Page,
    tmp_path: Path,
    size: str,
    width: int,
    height: int,
    scheme: str,
) -> None:
    """The pictures in docs/page.md, taken here: idle, the offer, mid-transfer and done, at a
    desktop width in light mode and a phone's in dark mode. P2PCP_WRITE_SCREENS=1 writes them;
    otherwise the test checks the page reaches each state and that the document shows them."""
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    write = bool(os.environ.get("P2PCP_WRITE_SCREENS"))
    shots: list[Path] = []

    def shot(state: str) -> None:
        path = SHOTS / f"{size}-{state}.png"
        shots.append(path)
        if write:
            path.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(path), full_page=True)

    shot("idle")
    (tmp_path / "holiday").mkdir()
    (tmp_path / "holiday" / "video.mp4").write_bytes(os.urandom(60 * MIB))
    (tmp_path / "holiday" / "notes.txt").write_text("remember the sunscreen\n")
    sender, code = start_send(
        signal_server, str(tmp_path / "holiday"), env={"P2PCP_LARGE_PACKETS": "0"}
    )
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    shot("offer")
    page.click("#accept")
    deadline = time.monotonic() + 60
    while "left" not in page.inner_text("#progress-text"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shot("transfer")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    shot("done")
    assert finish(sender).code == 0
    document = PAGE_DOC.read_text()
    for path in shots:
        assert path.exists() and f"page/{path.name}" in document, path


def test_a_folder_saved_into_a_folder_the_user_chose_keeps_its_tree(
    signal_server: SignalServer, page: Page, tmp_path: Path
) -> None:
    """Where the browser has showDirectoryPicker, "Save into a folder" comes first and writes the
    real tree. The picker's dialog cannot be clicked in a headless test, so the test's own script
    (not the page's) answers it with a folder of the origin-private file system, and reads the
    tree back from there."""
    page.add_init_script(
        "window.showDirectoryPicker = async () =>"
        " (await navigator.storage.getDirectory()).getDirectoryHandle('picked', {create: true});"
    )
    page.reload()
    page.wait_for_selector("body[data-ready=yes]", state="attached")
    album = tmp_path / "album"
    (album / "2024" / "summer").mkdir(parents=True)
    (album / "notes.txt").write_text("top\\n")
    (album / "2024" / "summer" / "beach.bin").write_bytes(os.urandom(2 * MIB))
    sender, code = start_send(signal_server, str(album))
    page.fill("#code", code)
    page.click("#receive")
    _connected(page, sender)
    assert page.is_visible("#accept-folder")
    page.click("#accept-folder")
    assert _wait_state(page, "done", "error") == "done", page.inner_text("#status")
    assert finish(sender).code == 0
    written = page.evaluate(
        """async () => {
            const hex = (b) => [...new Uint8Array(b)]
                .map((x) => x.toString(16).padStart(2, "0")).join("");
            const out = {};
            const walk = async (dir, prefix) => {
                for await (const [name, handle] of dir.entries()) {
                    if (handle.kind === "directory") await walk(handle, prefix + name + "/");
                    else out[prefix + name] = hex(await crypto.subtle.digest("SHA-256",
                        await (await handle.getFile()).arrayBuffer()));
                }
            };
            const root = await navigator.storage.getDirectory();
            await walk(await root.getDirectoryHandle("picked"), "");
            return out;
        }"""
    )
    assert written == {f"album/{k}": v for k, v in _tree(album).items()}
