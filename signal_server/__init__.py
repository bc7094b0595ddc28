"""The p2pcp rendezvous server: pairs two peers by nameplate and relays their signaling.

It never sees the code's words, file data or keys: peers seal everything after the PAKE.
"""

from __future__ import annotations

__version__ = "0.1.0"
