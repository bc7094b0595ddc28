"""Rooms and nameplates, with no I/O: allocate, join, leave, expire.

A room is named by a nameplate (a small decimal number) and holds at most two sides. Once two
sides have met in a room it is spent: nobody else may join it, even after one side leaves, so
a code can be used (or guessed) once only. A room is forgotten when its last side leaves or
when it has been idle for longer than the idle timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_SIDES = 2


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
    """True once two sides have met here."""
    last_active: float = 0.0
    """Clock time of the last join or relayed message."""


class Rooms:
    """All rooms of one server. Side ids are opaque strings chosen by the caller."""

    def __init__(self, max_rooms: int = 100_000) -> None:
        self.max_rooms = max_rooms
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def allocate(self, side: str, now: float, nameplate: str | None = None) -> str:
        """Open a room and put ``side`` in it: the smallest free nameplate, or the one asked for
        (a sender that chose its own code)."""
        self._check_free(side)
        if len(self._rooms) >= self.max_rooms:
            raise RoomError("too_many_rooms", "the server has too many open rooms; try later")
        if nameplate is None:
            number = 1
            while str(number) in self._rooms:
                number += 1
            nameplate = str(number)
        elif not (nameplate.isascii() and nameplate.isdigit() and 0 < len(nameplate) <= 8):
            raise RoomError("bad_message", "a nameplate is a number of up to 8 digits")
        elif nameplate in self._rooms:
            raise RoomError("nameplate_taken", f"nameplate {nameplate} is in use")
        self._rooms[nameplate] = Room(nameplate, [side], last_active=now)
        self._room_of[side] = nameplate
        return nameplate

    def join(self, nameplate: str, side: str, now: float) -> Room:
        """Put ``side`` into a room that has one side and was never spent."""
        self._check_free(side)
        room = self._rooms.get(nameplate)
        if room is None:
            raise RoomError("no_such_nameplate", f"no sender is waiting with nameplate {nameplate}")
        if room.spent or len(room.sides) >= MAX_SIDES:
            raise RoomError("crowded", f"nameplate {nameplate} is already in use")
        room.sides.append(side)
        room.spent = len(room.sides) == MAX_SIDES
        room.last_active = now
        self._room_of[side] = nameplate
        return room

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

    def leave(self, side: str) -> str | None:
        """Take ``side`` out of its room; returns the peer left behind, if any."""
        nameplate = self._room_of.pop(side, None)
        if nameplate is None:
            return None
        room = self._rooms[nameplate]
        room.sides.remove(side)
        if not room.sides:
            del self._rooms[nameplate]
            return None
        return room.sides[0]

    def expire(self, now: float, idle: float) -> list[Room]:
        """Forget every room idle for more than ``idle`` seconds; returns them."""
        dead = [r for r in self._rooms.values() if now - r.last_active > idle]
        for room in dead:
            del self._rooms[room.nameplate]
            for side in room.sides:
                self._room_of.pop(side, None)
        return dead
