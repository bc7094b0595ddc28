"""The ``p2pcp`` command's entry point: the command line imported with the collector off.

Start-up is paid by every command and sits on the critical path of every transfer (a fifth
of a 128 MiB one across the LAN lab). Importing the command line (aiortc, PyAV, cryptography,
rich, typer, ours) creates hundreds of thousands of objects and no garbage cycles, and each of
those allocations counts towards the cyclic collector's next run: it ran about 120 times
during the imports, 55-65 ms of CPU, an eighth of start-up (``import p2pcp.cli``: 445
against 392 ms of CPU with the collector off, medians of 15 runs). What the imports made is
then frozen (``gc.freeze``), so that later collections during a transfer do not walk it again.

During a transfer aiortc allocates objects for every packet (chunks, records, frames), nearly
none of them in cycles, and the collector's youngest generation ran every 700 allocations:
with it running every 20,000 (as the rendezvous server does), p2pcp on one host moved 7-11%
more (``bench/compare.py``, 256 MiB, 5 rounds each, interleaved: medians 223 -> 240 and
252 -> 280 MB/s).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import NoReturn

GC_THRESHOLDS = (20_000, 50, 100)
"""The collector's thresholds once the command line is loaded (Python's: 700, 10, 10)."""


def load() -> Callable[[], NoReturn]:
    """Import the command line with the cyclic garbage collector off; freeze what it made and
    turn the collector back on (if it was), with GC_THRESHOLDS. Returns the command line's
    ``main``."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        from .cli import main
    finally:
        gc.freeze()
        if was_on:
            gc.set_threshold(*GC_THRESHOLDS)
            gc.enable()
    return main


def main() -> NoReturn:
    """Entry point of ``p2pcp`` and ``python -m p2pcp``."""
    load()()
