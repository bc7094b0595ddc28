"""How paired devices meet, in this process against a real p2pcp-signal: the holder's rooms
follow the time windows (the identifier the server sees changes), and a sender that holds
the pairing is handed over while one that does not is refused."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from helpers import SignalServer

from p2pcp import devicekeys, meeting
from p2pcp.devicekeys import nameplate, public_bytes
from p2pcp.devices import Device
from p2pcp.errors import CodeError
from p2pcp.events import AnyEvent, Notice
from p2pcp.pake import RECEIVER, SENDER
from p2pcp.signaling import Tls

SECRET = bytes(range(32))


class Events:
    def __init__(self) -> None:
        self.seen: list[AnyEvent] = []

    def emit(self, event: AnyEvent) -> None:
        self.seen.append(event)


def _devices() -> tuple[X25519PrivateKey, X25519PrivateKey, Device, Device]:
    home, phone = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    phone_here = Device("phone", public_bytes(phone), SECRET, 0.0)
    home_there = Device("home", public_bytes(home), SECRET, 0.0)
    return home, phone, phone_here, home_there


def test_the_rooms_follow_the_windows(
    signal_server: SignalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devicekeys, "WINDOW", 1.0)
    monkeypatch.setattr(devicekeys, "SKEW", 0.1)
    monkeypatch.setattr(meeting, "REFRESH", 0.1)
    home, _, phone_here, _ = _devices()

    async def hold_a_while() -> tuple[float, float]:
        holder = meeting.RoomHolder(
            home, [phone_here], signal_server.url, Tls(), Events(), RECEIVER
        )
        first = time.time()
        await holder.start()
        await asyncio.sleep(3.6)
        await holder.close()
        return first, time.time()

    first, last = asyncio.run(hold_a_while())
    logged = set(re.findall(r"allocate side=\S+ nameplate=(\d{8})", signal_server.log_text()))
    # Within SKEW of an edge it holds the neighbouring window's room too.
    windows = range(int(first - 0.1), int(last + 0.1) + 1)
    expected = {nameplate(SECRET, w) for w in windows}
    # A room for each second (window) it held, under that window's identifier, and no other.
    assert len(logged) >= 3 and logged <= expected, (logged, expected)


def test_a_sender_with_the_pairing_is_handed_over_and_one_without_is_refused(
    signal_server: SignalServer,
) -> None:
    home, phone, phone_here, home_there = _devices()
    impostor = X25519PrivateKey.generate()

    async def scenario() -> None:
        events = Events()
        holder = meeting.RoomHolder(home, [phone_here], signal_server.url, Tls(), events, RECEIVER)
        await holder.start()
        try:
            await asyncio.sleep(0.3)
            with pytest.raises(CodeError, match="could not prove it is home"):
                await meeting.meet_as_sender(
                    impostor, home_there, signal_server.url, Tls(), Events(), SENDER, 10
                )
            assert any(isinstance(e, Notice) and "without this pairing" in e.message
                       for e in events.seen)  # fmt: skip
            sending = asyncio.ensure_future(
                meeting.meet_as_sender(
                    phone, home_there, signal_server.url, Tls(), Events(), SENDER, 10
                )
            )
            device, met = await asyncio.wait_for(holder.next(), 20)
            assert device.name == "phone"
            await meeting.answer(met.signaling, met.box, device, None)
            sent = await sending
            assert sent.verification == met.verification
            for side in (sent, met):
                await side.signaling.close()
        finally:
            await holder.close()

    asyncio.run(scenario())
