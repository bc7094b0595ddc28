"""p2pcp: copy files directly between two machines over WebRTC."""

from __future__ import annotations

__version__ = "0.1.0"
