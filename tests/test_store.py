"""One contract for both room stores: the same operations give the same answers in this
process's memory (rooms.py) and in Redis (the Lua scripts in store.py), so the two cannot drift
apart. The Redis half needs a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from signal_server.rooms import RoomError
from signal_server.store import MemoryStore, RedisStore, RoomStore

Contract = Callable[[RoomStore], Awaitable[None]]
MSG = {"type": "relay", "body": {"kind": "pake"}}


async def _nothing(side: str, text: str) -> None:
    pass


def _run(kind: str, request: pytest.FixtureRequest, contract: Contract, max_rooms: int) -> None:
    async def scenario() -> None:
        store: RoomStore
        if kind == "memory":
            store = MemoryStore(max_rooms)
        else:
            store = RedisStore(request.getfixturevalue("redis_url"), max_rooms)
        await store.start(_nothing)
        try:
            await contract(store)
        finally:
            await store.close()

    asyncio.run(scenario())


async def _refused(reason: str, operation: Awaitable[Any]) -> None:
    with pytest.raises(RoomError) as info:
        await operation
    assert info.value.reason == reason


async def allocate_random_free_of_the_shortest_length(store: RoomStore) -> None:
    first = [await store.allocate(f"a{i}", 0, None) for i in range(9)]
    assert sorted(first) == [str(n) for n in range(1, 10)]
    two = [await store.allocate(f"b{i}", 0, None) for i in range(30)]
    assert all(len(n) == 2 for n in two) and len(set(two)) == 30
    assert await store.leave(first[4], "a4") == (None, False)
    assert await store.allocate("c", 0, None) == first[4]
    assert await store.count() == 39


async def a_dense_length_is_walked(store: RoomStore) -> None:
    for n in range(1, 100):
        if n != 57:
            await store.allocate(f"c{n}", 0, str(n))
    assert await store.allocate("last", 0, None) == "57"
    assert len(await store.allocate("next", 0, None)) == 3


async def a_chosen_nameplate(store: RoomStore) -> None:
    assert await store.allocate("a", 0, "42") == "42"
    await _refused("nameplate_taken", store.allocate("b", 0, "42"))
    await _refused("bad_message", store.allocate("c", 0, "4x"))
    await _refused("bad_message", store.allocate("d", 0, "123456789"))


async def two_meet_and_a_third_is_refused(store: RoomStore) -> None:
    nameplate = await store.allocate("s", 0, None)
    assert await store.join(nameplate, "r", 1) == ["s"]
    assert await store.relay(nameplate, "r", 1, MSG) == "s"
    assert await store.relay(nameplate, "s", 1, MSG) == "r"
    await _refused("crowded", store.join(nameplate, "x", 2))
    await _refused("no_such_nameplate", store.join("77", "y", 2))
    lonely = await store.allocate("l", 3, None)
    assert await store.relay(lonely, "l", 3, MSG) is None  # nobody to relay to


async def a_spent_room_stays_closed(store: RoomStore) -> None:
    nameplate = await store.allocate("s", 0, None)
    await store.join(nameplate, "r", 0)
    await store.relay(nameplate, "s", 0, MSG)  # the first side's relay spends nothing
    await store.relay(nameplate, "r", 0, MSG)  # the joiner's does
    assert await store.leave(nameplate, "r") == ("s", False)
    await _refused("crowded", store.join(nameplate, "x", 0))
    assert await store.leave(nameplate, "s") == (None, False)
    assert await store.count() == 0


async def a_joiner_that_leaves_without_a_word_reopens_the_room(store: RoomStore) -> None:
    nameplate = await store.allocate("s", 0, None)
    await store.join(nameplate, "x", 0)
    await store.relay(nameplate, "s", 0, MSG)
    assert await store.leave(nameplate, "x") == ("s", True)
    assert await store.join(nameplate, "r", 1) == ["s"]
    await _refused("crowded", store.join(nameplate, "y", 1))  # two sides: nobody else
    await store.relay(nameplate, "r", 1, MSG)
    assert await store.leave(nameplate, "r") == ("s", False)
    await _refused("crowded", store.join(nameplate, "z", 2))


async def a_room_whose_first_side_left_takes_nobody_new(store: RoomStore) -> None:
    nameplate = await store.allocate("s", 0, None)
    await store.join(nameplate, "r", 0)
    assert await store.leave(nameplate, "s") == ("r", False)
    await _refused("crowded", store.join(nameplate, "x", 0))
    assert await store.leave(nameplate, "r") == (None, False)
    assert await store.allocate("t", 0, nameplate) == nameplate  # forgotten, free again


async def idle_rooms_expire(store: RoomStore) -> None:
    old = await store.allocate("a", 0, None)
    busy = await store.allocate("b", 0, None)
    await store.join(busy, "c", 0)
    await store.relay(busy, "c", 90, MSG)
    assert await store.expire(100, 50) == [(old, ["a"])]
    assert await store.count() == 1 and await store.relay(busy, "b", 100, MSG) == "c"


async def the_room_limit(store: RoomStore) -> None:
    await store.allocate("a", 0, None)
    await store.allocate("b", 0, None)
    await _refused("too_many_rooms", store.allocate("c", 0, None))
    await _refused("too_many_rooms", store.allocate("d", 0, "9"))


CONTRACT = [
    allocate_random_free_of_the_shortest_length,
    a_dense_length_is_walked,
    a_joiner_that_leaves_without_a_word_reopens_the_room,
    a_room_whose_first_side_left_takes_nobody_new,
    a_chosen_nameplate,
    two_meet_and_a_third_is_refused,
    a_spent_room_stays_closed,
    idle_rooms_expire,
]


@pytest.mark.parametrize("contract", CONTRACT, ids=lambda c: c.__name__)
def test_memory_store(contract: Contract, request: pytest.FixtureRequest) -> None:
    _run("memory", request, contract, 100)


@pytest.mark.parametrize("contract", CONTRACT, ids=lambda c: c.__name__)
def test_redis_store(contract: Contract, request: pytest.FixtureRequest) -> None:
    _run("redis", request, contract, 100)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_room_limit(kind: str, request: pytest.FixtureRequest) -> None:
    _run(kind, request, the_room_limit, 2)
