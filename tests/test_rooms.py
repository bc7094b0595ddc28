"""Room bookkeeping of the rendezvous server, with no I/O."""

from __future__ import annotations

import pytest

from signal_server.rooms import RoomError, Rooms


def test_allocate_takes_the_smallest_free_nameplate() -> None:
    rooms = Rooms()
    assert rooms.allocate("a", 0) == "1"
    assert rooms.allocate("b", 0) == "2"
    assert rooms.allocate("c", 0) == "3"
    rooms.leave("b")
    assert rooms.allocate("d", 0) == "2"


def test_two_sides_meet_and_a_third_is_refused() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    room = rooms.join(nameplate, "r", 1)
    assert room.sides == ["s", "r"] and room.spent
    assert rooms.peer_of("s") == "r" and rooms.peer_of("r") == "s"
    with pytest.raises(RoomError) as info:
        rooms.join(nameplate, "x", 2)
    assert info.value.reason == "crowded"
    assert rooms.peer_of("s") == "r"


def test_a_spent_room_stays_closed_after_one_side_leaves() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    rooms.join(nameplate, "r", 0)
    assert rooms.leave("r") == "s"
    with pytest.raises(RoomError, match="already in use"):
        rooms.join(nameplate, "x", 0)
    assert rooms.leave("s") is None
    assert len(rooms) == 0


def test_unknown_nameplate() -> None:
    with pytest.raises(RoomError) as info:
        Rooms().join("5", "r", 0)
    assert info.value.reason == "no_such_nameplate"


def test_a_side_joins_one_room_only() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    with pytest.raises(RoomError, match="already in a room"):
        rooms.allocate("s", 0)
    with pytest.raises(RoomError, match="already in a room"):
        rooms.join(nameplate, "s", 0)


def test_room_is_forgotten_when_both_leave() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    rooms.join(nameplate, "r", 0)
    rooms.leave("s")
    rooms.leave("r")
    assert len(rooms) == 0 and rooms.room_of("s") is None
    assert rooms.allocate("t", 0) == nameplate


def test_idle_rooms_expire_and_activity_keeps_them() -> None:
    rooms = Rooms()
    old = rooms.allocate("a", 0)
    busy = rooms.allocate("b", 0)
    rooms.join(busy, "c", 0)
    rooms.touch(busy, 90)
    expired = rooms.expire(100, idle=50)
    assert [r.nameplate for r in expired] == [old]
    assert rooms.room_of("a") is None and rooms.peer_of("b") == "c"


def test_room_limit() -> None:
    rooms = Rooms(max_rooms=2)
    rooms.allocate("a", 0)
    rooms.allocate("b", 0)
    with pytest.raises(RoomError) as info:
        rooms.allocate("c", 0)
    assert info.value.reason == "too_many_rooms"
