"""Rooms and nameplates, with no I/O: allocate, join, leave, expire.

A room is named by a nameplate (a small decimal number, drawn at random among the free ones of
the shortest length) and holds at most two sides. Once the side that joined has relayed
anything (its SPAKE2 message: one guess at the code) the room is spent: nobody else may join it,
even after one side leaves, so a code can be guessed once only. A joiner that leaves without
relaying anything has made no guess: the room opens again for the next one, and the side
waiting there is told so (``peer_left`` with ``reopened``). A room is forgotten when its last
side leaves or when it has been idle for longer than the idle timeout.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_SIDES = 2
MAX_DIGITS = 8
TRIES = 8
"""Random nameplates tried per length before walking that length for a free one."""


def capacity(digits: int) -> int:
    """Nameplates of ``digits`` digits: 1-9, 10-99, ..."""
    return int(9 * 10 ** (digits - 1))


def seeds(tries: int = TRIES) -> list[int]:
    """``tries`` random 48-bit numbers from one read of ``secrets``; the length being filled
    turns each into a nameplate with ``candidate`` (the bias of the modulo is below 1e-6)."""
    raw = secrets.token_bytes(6 * tries)
    return [int.from_bytes(raw[i : i + 6], "big") for i in range(0, len(raw), 6)]


def candidate(seed: int, digits: int) -> int:
    """The nameplate of ``digits`` digits that ``seed`` picks."""
    return int(10 ** (digits - 1)) + seed % capacity(digits)


def valid_nameplate(nameplate: str) -> bool:
    """A decimal number of 1 to MAX_DIGITS digits."""
    return nameplate.isascii() and nameplate.isdigit() and 0 < len(nameplate) <= MAX_DIGITS


class RoomError(Exception):
    """A join that cannot be granted; ``reason`` is the wire error code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Room:
    """One rendezvous: a nameplate and the sides in it."""

    nameplate: str
    """The room's number, as text."""
    sides: list[str] = field(default_factory=list)
    """Side ids currently in the room, first one the allocator."""
    spent: bool = False
    """True once the joining side relayed something (made its guess), or its first side left."""
    last_active: float = 0.0
    """Clock time of the last join or relayed message."""


class Rooms:
    """All rooms of one server. Side ids are opaque strings chosen by the caller."""

    def __init__(self, max_rooms: int = 100_000) -> None:
        self.max_rooms = max_rooms
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, str] = {}
        self._by_length: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._rooms)

    def allocate(self, side: str, now: float, nameplate: str | None = None) -> str:
        """Open a room and put ``side`` in it: a random free nameplate of the shortest length
        with one free, or the one asked for (a sender that chose its own code)."""
        self._check_free(side)
        if len(self._rooms) >= self.max_rooms:
            raise RoomError("too_many_rooms", "the server has too many open rooms; try later")
        if nameplate is None:
            nameplate = self._free_nameplate()
        elif not valid_nameplate(nameplate):
            raise RoomError("bad_message", "a nameplate is a number of up to 8 digits")
        elif nameplate in self._rooms:
            raise RoomError("nameplate_taken", f"nameplate {nameplate} is in use")
        self._rooms[nameplate] = Room(nameplate, [side], last_active=now)
        self._room_of[side] = nameplate
        self._by_length[len(nameplate)] += 1
        return nameplate

    def _free_nameplate(self) -> str:
        drawn = seeds()
        for digits in range(1, MAX_DIGITS + 1):
            if self._by_length[digits] >= capacity(digits):
                continue
            tries = [candidate(seed, digits) for seed in drawn]
            for number in tries:
                if str(number) not in self._rooms:
                    return str(number)
            # Dense: walk this length from the first candidate to a free one.
            low, size = 10 ** (digits - 1), capacity(digits)
            for step in range(1, size + 1):
                number = low + (tries[0] - low + step) % size
                if str(number) not in self._rooms:
                    return str(number)
        raise RoomError("too_many_rooms", "the server has too many open rooms; try later")

    def join(self, nameplate: str, side: str, now: float) -> Room:
        """Put ``side`` into a room that has one side and was never spent."""
        self._check_free(side)
        room = self._rooms.get(nameplate)
        if room is None:
            raise RoomError("no_such_nameplate", f"no sender is waiting with nameplate {nameplate}")
        if room.spent or len(room.sides) >= MAX_SIDES:
            raise RoomError("crowded", f"nameplate {nameplate} is already in use")
        room.sides.append(side)
        room.last_active = now
        self._room_of[side] = nameplate
        return room

    def relayed(self, side: str) -> None:
        """``side`` relayed a message: if it is the joining side, the room is spent."""
        room = self.room_of(side)
        if room is not None and len(room.sides) == MAX_SIDES and room.sides[1] == side:
            room.spent = True

    def _check_free(self, side: str) -> None:
        if side in self._room_of:
            raise RoomError("already_joined", "this connection is already in a room")

    def room_of(self, side: str) -> Room | None:
        """The room ``side`` is in, if any."""
        nameplate = self._room_of.get(side)
        return self._rooms.get(nameplate) if nameplate is not None else None

    def peer_of(self, side: str) -> str | None:
        """The other side in ``side``'s room, if there is one."""
        room = self.room_of(side)
        if room is None:
            return None
        return next((s for s in room.sides if s != side), None)

    def touch(self, nameplate: str, now: float) -> None:
        """Note activity in the room of ``nameplate``."""
        room = self._rooms.get(nameplate)
        if room is not None:
            room.last_active = now

    def leave(self, side: str) -> tuple[str | None, bool]:
        """Take ``side`` out of its room; returns the peer left behind, if any, and whether the
        room opened again (a joiner that left without relaying anything)."""
        nameplate = self._room_of.pop(side, None)
        if nameplate is None:
            return None, False
        room = self._rooms[nameplate]
        joiner = len(room.sides) == MAX_SIDES and room.sides[1] == side
        room.sides.remove(side)
        if not room.sides:
            self._forget(room)
            return None, False
        reopened = joiner and not room.spent
        room.spent = not reopened
        return room.sides[0], reopened

    def _forget(self, room: Room) -> None:
        del self._rooms[room.nameplate]
        self._by_length[len(room.nameplate)] -= 1

    def expire(self, now: float, idle: float) -> list[Room]:
        """Forget every room idle for more than ``idle`` seconds; returns them."""
        dead = [r for r in self._rooms.values() if now - r.last_active > idle]
        for room in dead:
            self._forget(room)
            for side in room.sides:
                self._room_of.pop(side, None)
        return dead
