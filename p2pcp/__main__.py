"""``python -m p2pcp``."""

from __future__ import annotations

from .start import main

main()
