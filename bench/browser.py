"""Benchmark: the browser page in headless Chromium against the real CLI, both directions.

Usage: python bench/browser.py [--size-mib 1024 64] [--direction both|to-browser|from-browser]
       [--folder]

For each size it sends one random file CLI -> page (the page streams it into the origin-private
file system, checks the hash and offers it as a download) and page -> CLI, and prints the rate
(from the first click to the page's "done") and the peak resident memory of Chromium: all its
processes together, and its largest process (and its kind). Memory that stays flat from a small
file to 1 GiB is what "bounded" means here. With ``--folder`` the CLI sends a folder of eight
files of that total size instead: the page receives it as one streamed zip, checked here file by
file against the source. Chromium runs with a normal (persistent) profile: in
a private one it keeps the origin-private file system in memory, so a received file would be.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import finish, p2pcp, start_send, start_signal_server  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from test_browser import CHROMIUM, FLAGS  # noqa: E402

MIB = 1 << 20


class ChromiumMemory:
    """Samples the RSS of every Chromium process every 0.2 s; keeps the peaks."""

    def __init__(self) -> None:
        self.peak_total = 0
        self.peak_one = 0
        self.largest = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChromiumMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            sizes = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"chromium" not in command.split(b"\0", 1)[0]:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                match = re.search(r"VmRSS:\s+(\d+) kB", status)
                if match:
                    sizes.append(int(match.group(1)) * 1024)
                    if int(match.group(1)) * 1024 > self.peak_one:
                        kind = re.search(rb"--type=([a-z-]+)", command)
                        self.largest = kind.group(1).decode() if kind else "browser"
            if sizes:
                self.peak_total = max(self.peak_total, sum(sizes))
                self.peak_one = max(self.peak_one, max(sizes))


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))


def to_browser(page, server, source: Path) -> float:  # type: ignore[no-untyped-def]
    sender, code = start_send(server, str(source))
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    started = time.monotonic()
    page.fill("#code", code)
    page.click("#receive")
    page.wait_for_selector("body[data-state=connected]", state="attached", timeout=60_000)
    page.click("#accept")
    page.wait_for_selector(
        "body[data-state=done], body[data-state=error]", state="attached", timeout=3_600_000
    )
    seconds = time.monotonic() - started
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
    assert finish(sender).code == 0
    target = source.with_suffix(".downloaded")
    downloads[0].save_as(target)
    if source.is_dir():  # one zip of the folder: every member equal to its source file
        with zipfile.ZipFile(target) as archive:
            for member in archive.infolist():
                digest = hashlib.sha256()
                with archive.open(member) as f:
                    for block in iter(lambda: f.read(MIB), b""):
                        digest.update(block)
                assert digest.hexdigest() == _sha(source.parent / member.filename), member
    else:
        assert _sha(target) == _sha(source), "the download differs from the source"
    target.unlink()
    return seconds


def from_browser(page, server, source: Path, out: Path) -> float:  # type: ignore[no-untyped-def]
    page.set_input_files("#files", str(source))
    started = time.monotonic()
    page.click("#send")
    page.wait_for_selector("#ticket:not([hidden])", state="attached", timeout=30_000)
    code = page.inner_text("#your-code")
    result = finish(
        p2pcp("receive", "--json", "--yes", "-o", str(out), "--server", server.url, code), 3600
    )
    page.wait_for_selector(
        "body[data-state=done], body[data-state=error]", state="attached", timeout=60_000
    )
    seconds = time.monotonic() - started
    assert result.code == 0, result.stdout[-1000:]
    received = out / source.name
    assert _sha(received) == _sha(source)
    received.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, nargs="+", default=[64, 1024])
    parser.add_argument(
        "--direction", choices=["both", "to-browser", "from-browser"], default="both"
    )
    parser.add_argument("--folder", action="store_true", help="a folder of 8 files, to the page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_signal_server(tmp / "server.log")
        rows = []
        try:
            with sync_playwright() as playwright:
                for size in args.size_mib:
                    source = tmp / f"random-{size}.bin"
                    if args.folder:
                        source = tmp / f"folder-{size}"
                        source.mkdir()
                        for n in range(8):
                            _random_file(source / f"part{n}.bin", size * MIB // 8)
                    else:
                        _random_file(source, size * MIB)
                    runs = []
                    if args.folder:
                        runs.append(("CLI -> page (folder, zip)", "to"))
                    elif args.direction in ("both", "to-browser"):
                        runs.append(("CLI -> page", "to"))
                    if args.direction in ("both", "from-browser") and not args.folder:
                        runs.append(("page -> CLI", "from"))
                    for label, kind in runs:
                        # A normal profile: in a private (off-the-record) one, Chromium keeps
                        # the origin-private file system in memory, as private windows do.
                        browser = playwright.chromium.launch_persistent_context(
                            tempfile.mkdtemp(dir=tmp),
                            executable_path=CHROMIUM,
                            args=FLAGS,
                            accept_downloads=True,
                        )
                        page = browser.new_page()
                        page.goto(f"http://127.0.0.1:{server.port}/")
                        page.wait_for_selector("body[data-ready=yes]", state="attached")
                        with ChromiumMemory() as memory:
                            if kind == "to":
                                seconds = to_browser(page, server, source)
                            else:
                                out = tmp / "out"
                                out.mkdir(exist_ok=True)
                                seconds = from_browser(page, server, source, out)
                        browser.close()
                        rows.append((label, size, size * MIB / seconds / 1e6, memory))
                    if source.is_dir():
                        shutil.rmtree(source)
                    else:
                        source.unlink()
        finally:
            server.stop()
    header = f"{'direction':<26} {'MiB':>6} {'MB/s':>6} {'Chromium peak RSS':>18}"
    print(f"{header} {'largest process':>16}")
    for label, size, rate, memory in rows:
        print(
            f"{label:<26} {size:>6} {rate:>6.1f} {memory.peak_total / MIB:>14.0f} MiB"
            f" {memory.peak_one / MIB:>12.0f} MiB ({memory.largest})"
        )


if __name__ == "__main__":
    main()
