"""Room bookkeeping of the rendezvous server, with no I/O."""

from __future__ import annotations

import ipaddress

import pytest

from signal_server.limits import SlidingWindow, client_address, client_key
from signal_server.rooms import RoomError, Rooms


def test_allocate_draws_a_random_free_nameplate_of_the_shortest_length() -> None:
    rooms = Rooms()
    first = [rooms.allocate(f"s{i}", 0) for i in range(9)]
    assert sorted(first) == [str(n) for n in range(1, 10)]  # every one-digit number, once
    two = [rooms.allocate(f"t{i}", 0) for i in range(20)]
    assert all(len(n) == 2 for n in two) and len(set(two)) == 20
    rooms.leave("s3")
    assert rooms.allocate("u", 0) == first[3]  # a one-digit number is free again: it comes first


def test_nameplates_are_not_handed_out_in_order() -> None:
    """Anyone can count up from 1; the first waiting sender must not sit at a guessable place."""
    seen = {Rooms().allocate("s", 0) for _ in range(200)}
    assert len(seen) >= 7  # of the nine one-digit numbers (all nine with overwhelming odds)
    rooms = Rooms()
    order = [rooms.allocate(f"s{i}", 0) for i in range(9)]
    assert order != [str(n) for n in range(1, 10)]  # in order: 1 chance in 362,880


def test_a_dense_length_is_walked_to_its_last_free_nameplate() -> None:
    rooms = Rooms()
    for n in range(10, 100):
        if n != 57:
            rooms.allocate(f"c{n}", 0, str(n))
    for i in range(9):
        rooms.allocate(f"s{i}", 0)
    assert rooms.allocate("last", 0) == "57"
    assert len(rooms.allocate("next", 0)) == 3


def test_two_sides_meet_and_a_third_is_refused() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    room = rooms.join(nameplate, "r", 1)
    assert room.sides == ["s", "r"] and not room.spent
    rooms.relayed("r")
    assert room.spent
    assert rooms.peer_of("s") == "r" and rooms.peer_of("r") == "s"
    with pytest.raises(RoomError) as info:
        rooms.join(nameplate, "x", 2)
    assert info.value.reason == "crowded"
    assert rooms.peer_of("s") == "r"


def test_a_spent_room_stays_closed_after_one_side_leaves() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    rooms.join(nameplate, "r", 0)
    rooms.relayed("s")  # the first side's relay spends nothing
    rooms.relayed("r")  # the joiner's does: it made its guess
    assert rooms.leave("r") == ("s", False)
    with pytest.raises(RoomError, match="already in use"):
        rooms.join(nameplate, "x", 0)
    assert rooms.leave("s") == (None, False)
    assert len(rooms) == 0


def test_a_joiner_that_leaves_without_a_word_made_no_guess() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    rooms.join(nameplate, "x", 0)
    rooms.relayed("s")  # the waiting side already sent its SPAKE2 message
    assert rooms.leave("x") == ("s", True)  # reopened
    room = rooms.join(nameplate, "r", 1)
    assert room.sides == ["s", "r"]
    rooms.relayed("r")
    assert rooms.leave("r") == ("s", False)


def test_a_room_whose_first_side_left_takes_nobody_new() -> None:
    rooms = Rooms()
    nameplate = rooms.allocate("s", 0)
    rooms.join(nameplate, "r", 0)
    assert rooms.leave("s") == ("r", False)
    with pytest.raises(RoomError, match="already in use"):
        rooms.join(nameplate, "x", 0)


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
    assert rooms.allocate("t", 0, nameplate) == nameplate  # free again


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


def test_per_address_limits_count_an_ipv6_client_by_its_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" == client_key("192.0.2.7")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("-") == "-"


def test_per_address_records_are_forgotten_once_idle() -> None:
    window = SlidingWindow(limit=2, seconds=60)
    for n in range(1000):
        assert window.allow(f"10.0.{n // 256}.{n % 256}", float(n % 30))
    assert window.allow("192.0.2.1", 100.0)
    assert len(window) == 1001
    assert window.forget_idle(100.0) == 1000  # every address silent for 60 s or more
    assert len(window) == 1
    assert window.allow("192.0.2.1", 101.0) and not window.allow("192.0.2.1", 102.0)


def test_the_client_behind_a_trusted_proxy_is_the_right_most_untrusted_hop() -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    # nginx on loopback appended the address it saw; what the client wrote to the left is not
    # believed, nor a hop that is itself a trusted proxy.
    assert client_address("127.0.0.1", ["9.9.9.9, 198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", ["198.51.100.7, 10.1.2.3"], trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", ["9.9.9.9", "198.51.100.7"], trusted) == "198.51.100.7"
    # From anyone else the header is ignored.
    assert client_address("198.51.100.8", ["9.9.9.9"], trusted) == "198.51.100.8"
    # No header, only proxies, or garbage: the proxy itself counts.
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["10.0.0.5"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["not-an-address"], trusted) == "127.0.0.1"
    assert client_address("::ffff:127.0.0.1", ["2001:db8::1"], trusted) == "2001:db8::1"
