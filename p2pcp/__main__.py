"""``python -m p2pcp``."""

from __future__ import annotations

from .cli import main

main()
