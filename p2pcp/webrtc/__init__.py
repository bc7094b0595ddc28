"""Our changes to aiortc, aioice and pyOpenSSL, as subclasses substituted where aiortc builds its
transports, pinned to the exact versions they were written for.

One module per concern: ``congestion`` (Westwood+ loss recovery), ``delayed_sack`` (RFC 4960
section 6.2), ``reassembly`` (messages looked for only when one can be complete), ``large``,
``pieces`` and ``dtls`` (large packets between p2pcp peers), ``ice`` (aioice's connectivity
checks and data path), on ``association`` (a packet size per association).
``install()`` puts the subclasses where ``RTCPeerConnection`` and ``RTCIceGatherer`` construct
aiortc's own, once the installed versions are the pinned ones (``pins.py``); ``changes()`` says
which change is in force and, for one that is not, why: ``p2pcp --debug`` logs it, ``p2pcp
doctor`` shows it, and the tests fail on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aioice import ice as aioice_ice
from aioice import stun
from aioice import turn as aioice_turn
from aiortc import rtcdtlstransport, rtcicetransport, rtcpeerconnection, rtcsctptransport

from . import large, pins
from .dtls import DtlsTransport
from .ice import IceConnection
from .sctp import SctpTransport

log = logging.getLogger(__name__)

_sctp = rtcsctptransport.RTCSctpTransport
_dtls = rtcdtlstransport.RTCDtlsTransport
_pc = rtcpeerconnection.RTCPeerConnection
_ice = aioice_ice.Connection

_WRITTEN_AGAINST: list[tuple[type, str, str]] = [
    (_sctp, "__init__", "294b0e5108438509"),
    (_sctp, "_send", "f0f8aff63a9a8743"),
    (_sctp, "_receive_sack_chunk", "4b35ccf1372cdec8"),
    (_sctp, "_t3_expired", "0e759bf4b1b2d8c8"),
    (_sctp, "_update_rto", "a1e7afb18886a101"),
    (_sctp, "_transmit", "aa8941d5f8f020e8"),
    (_sctp, "_send_sack", "ac92513522fa60e7"),
    (_sctp, "_receive_chunk", "830bae988365ba89"),
    (_sctp, "_receive_forward_tsn_chunk", "a7b72a09e9c4bb20"),
    (_dtls, "_recv_next", "998076720c05aa13"),
    (_dtls, "_write_ssl", "6573c0237063bdf0"),
    (_pc, "_RTCPeerConnection__createDtlsTransport", "ad91de689a334df2"),
    (_pc, "_RTCPeerConnection__createSctpTransport", "f1155cfa69ec6e34"),
    (rtcicetransport.RTCIceGatherer, "__init__", "a0d775c349927f2b"),
    (_ice, "connect", "da51be46190141ee"),
    (_ice, "check_incoming", "cb3e32bd47e5fa82"),
    (_ice, "send", "8f91d54578f0ca74"),
    (_ice, "_pair_remote_candidate", "bf264fc1c6761107"),
    (_ice, "get_component_candidates", "118597a9fcb703f9"),
    (aioice_ice.StunProtocol, "datagram_received", "ff4c8b910d45fb3a"),
    (stun.Transaction, "__init__", "be1622dc921927d6"),
    (aioice_turn.TurnClientMixin, "send_data", "c25f67f43c7dcdb5"),
    (aioice_turn.TurnTransport, "sendto", "cee46ff3776d1c37"),
    (_ice, "data_received", "5631b17fab717d6b"),
    (_sctp, "_receive_data_chunk", "790c2bb8cd0f5dd7"),
    (_sctp, "_get_inbound_stream", "7bb5d6a0225afa1c"),
    (rtcsctptransport.InboundStream, "add_chunk", "de934faf324b1b4b"),
    (rtcsctptransport.InboundStream, "pop_messages", "bd29de9aa7c4f8fd"),
    (rtcsctptransport.InboundStream, "prune_chunks", "ff5a6cd9b68a26fb"),
    (_ice, "query_consent", "fe49173a650a378a"),
    (_ice, "check_complete", "52f939709eabc0ab"),
    (_sctp, "_mark_received", "2ac68b6a3934ca87"),
]
ORIGINALS: dict[str, tuple[Any, str]] = {
    f"{owner.__name__}.{name}": (getattr(owner, name), digest)
    for owner, name, digest in _WRITTEN_AGAINST
}
"""The aiortc and aioice methods our subclasses copy, extend or rely on, with the fingerprint of
the source they were written against (``pins.fingerprint``)."""

NEEDS = {
    "loss recovery": ("aiortc",),
    "delayed SACK": ("aiortc",),
    "reassembly": ("aiortc",),
    "large packets": ("aiortc", "pyOpenSSL"),
    "ICE fixes": ("aioice",),
}
"""Each change, and the distributions whose pinned versions it was written for."""


@dataclass(frozen=True)
class Change:
    """One of our changes to aiortc and aioice, and whether it is in force."""

    name: str
    """What it is for (a key of NEEDS)."""
    in_force: bool
    """Whether this process runs it."""
    why_not: str = ""
    """Why it is not in force (empty when it is)."""


_reported = False


def install() -> list[Change]:
    """Substitute our subclasses where the installed versions are the pinned ones; return the
    state of each change. The first call logs it: a change not in force as a warning."""
    global _reported
    if not pins.version_mismatches("aiortc"):
        setattr(rtcpeerconnection, "RTCSctpTransport", SctpTransport)  # noqa: B010
        if not pins.version_mismatches("pyOpenSSL"):
            setattr(rtcpeerconnection, "RTCDtlsTransport", DtlsTransport)  # noqa: B010
    if not pins.version_mismatches("aioice"):
        setattr(rtcicetransport, "Connection", IceConnection)  # noqa: B010
    result = changes()
    if _reported:
        return result
    _reported = True
    for change in result:
        if change.in_force:
            log.debug("%s: in force", change.name)
        else:
            log.warning("%s: not in force (%s)", change.name, change.why_not)
    return result


def dtls_substituted() -> bool:
    """Whether our DTLS transport (dtls.py) is the one aiortc builds."""
    return _substituted()["pyOpenSSL"]


def in_force(name: str) -> bool:
    """Whether the change called ``name`` is in force (see NEEDS)."""
    return any(change.in_force for change in changes() if change.name == name)


def _substituted() -> dict[str, bool]:
    return {
        "aiortc": vars(rtcpeerconnection)["RTCSctpTransport"] is SctpTransport,
        "pyOpenSSL": vars(rtcpeerconnection)["RTCDtlsTransport"] is DtlsTransport,
        "aioice": vars(rtcicetransport)["Connection"] is IceConnection,
    }


def changes(deep: bool = False) -> list[Change]:
    """Each change and whether it is in force; ``deep`` also compares the source of every
    original method with the one it was written against (slower: it reads aiortc's source)."""
    substituted = _substituted()
    changed = pins.source_mismatches(ORIGINALS) if deep else []
    result = []
    for name, distributions in NEEDS.items():
        reasons = pins.version_mismatches(*distributions)
        if not reasons:  # the right versions, but install() has not run
            reasons = [f"{d} not substituted" for d in distributions if not substituted[d]]
        if name == "large packets" and not large.LARGE_PACKETS:
            reasons.append("turned off by P2PCP_LARGE_PACKETS=0")
        reasons += changed
        result.append(Change(name, not reasons, "; ".join(dict.fromkeys(reasons))))
    return result
