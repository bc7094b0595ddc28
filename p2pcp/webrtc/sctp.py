"""Our SCTP transport: aiortc's, with each of our changes as one base class.

``install()`` in ``__init__.py`` substitutes it where aiortc's ``RTCPeerConnection`` builds its
SCTP transport, so every association of a peer connection gets all of them, each with its own
state and packet size.
"""

from __future__ import annotations

from .congestion import LossRecovery
from .delayed_sack import DelayedSack
from .large import LargePackets
from .reassembly import Reassembly


class SctpTransport(LargePackets, DelayedSack, LossRecovery, Reassembly):
    """aiortc's SCTP with large packets, delayed SACKs, Westwood+ loss recovery and a cheaper
    reassembly."""
