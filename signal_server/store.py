"""Where rooms live: in this process (default), or in Redis, shared by several server processes.

Both stores offer the same small async interface. With Redis, every room operation is one Lua
script (atomic across processes), rooms are a hash per nameplate plus a sorted set by last
activity (for the room count and idle expiry), and a message for a side connected to another
process travels by pub/sub on that process's channel. A process that dies loses only its own
connections; rooms whose sides are elsewhere carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .rooms import MAX_DIGITS, TRIES, RoomError, Rooms, candidates, valid_nameplate

log = logging.getLogger("signal_server")

Deliver = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Delivers a message to a side connected to this process."""


class RoomStore(Protocol):
    """Room bookkeeping shared by whoever serves the sides."""

    server_id: str

    async def start(self, deliver: Deliver) -> None:
        """Begin receiving messages for this process's sides."""

    async def close(self) -> None:
        """Stop."""

    async def allocate(self, side: str, now: float, nameplate: str | None) -> str:
        """Open a room with ``side`` in it (RoomError if refused)."""

    async def join(self, nameplate: str, side: str, now: float) -> list[str]:
        """Put ``side`` into a room; returns the other sides (RoomError if refused)."""

    async def leave(self, nameplate: str, side: str) -> tuple[str | None, bool]:
        """Take ``side`` out of its room; returns the peer left behind and whether the room
        opened again (a joiner that left without relaying anything)."""

    async def relay(
        self, nameplate: str, side: str, now: float, message: dict[str, Any]
    ) -> str | None:
        """Deliver ``message`` from ``side`` to the other side of its room; note activity, and
        spend the room if ``side`` is the joiner. Returns the peer, or None (nobody there, and
        nothing done)."""

    async def expire(self, now: float, idle: float) -> list[tuple[str, list[str]]]:
        """Forget rooms idle for more than ``idle`` seconds; returns (nameplate, sides)."""

    async def count(self) -> int:
        """Rooms open."""

    async def send(self, side: str, message: dict[str, Any]) -> None:
        """Deliver ``message`` to ``side`` wherever it is connected."""


class MemoryStore:
    """Rooms in this process only."""

    def __init__(self, max_rooms: int) -> None:
        self.rooms = Rooms(max_rooms)
        self.server_id = secrets.token_hex(4)
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        pass

    async def allocate(self, side: str, now: float, nameplate: str | None) -> str:
        return self.rooms.allocate(side, now, nameplate)

    async def join(self, nameplate: str, side: str, now: float) -> list[str]:
        return [s for s in self.rooms.join(nameplate, side, now).sides if s != side]

    async def leave(self, nameplate: str, side: str) -> tuple[str | None, bool]:
        return self.rooms.leave(side)

    async def relay(
        self, nameplate: str, side: str, now: float, message: dict[str, Any]
    ) -> str | None:
        peer = self.rooms.peer_of(side)
        if peer is None:
            return None
        self.rooms.touch(nameplate, now)
        self.rooms.relayed(side)
        await self.send(peer, message)
        return peer

    async def expire(self, now: float, idle: float) -> list[tuple[str, list[str]]]:
        return [(room.nameplate, list(room.sides)) for room in self.rooms.expire(now, idle)]

    async def count(self) -> int:
        return len(self.rooms)

    async def send(self, side: str, message: dict[str, Any]) -> None:
        assert self._deliver is not None
        await self._deliver(side, message)


_ROOM = "p2pcp:room:"
_ROOMS = "p2pcp:rooms"
_LENGTHS = "p2pcp:lengths"
_CHANNEL = "p2pcp:to:"
_KEYS = [_ROOMS, _ROOM, _LENGTHS, _CHANNEL]

# KEYS: the rooms sorted set, the room key prefix, the hash of rooms per nameplate length.
# ARGV: side, now, max rooms, wanted nameplate ('' for any), tries per length, then that many
# random candidates of each length 1..MAX_DIGITS (drawn by the caller from `secrets`: a script
# has no good randomness). A length is skipped when full; within one, the candidates are
# tried, then (a dense length) the numbers after the first candidate, in turn.
_ALLOCATE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.error_reply('too_many_rooms')
end
local nameplate = ARGV[4]
if nameplate == '' then
  local tries = tonumber(ARGV[5])
  for digits = 1, 8 do  -- rooms.MAX_DIGITS
    local size = 9 * 10 ^ (digits - 1)
    if tonumber(redis.call('HGET', KEYS[3], digits) or '0') < size then
      local first = (digits - 1) * tries + 6
      for i = first, first + tries - 1 do
        if redis.call('EXISTS', KEYS[2] .. ARGV[i]) == 0 then nameplate = ARGV[i]; break end
      end
      if nameplate == '' then
        local low = 10 ^ (digits - 1)
        local start = tonumber(ARGV[first])
        for step = 1, size do
          local n = string.format('%d', low + (start - low + step) % size)
          if redis.call('EXISTS', KEYS[2] .. n) == 0 then nameplate = n; break end
        end
      end
      if nameplate ~= '' then break end
    end
  end
  if nameplate == '' then return redis.error_reply('too_many_rooms') end
elseif redis.call('EXISTS', KEYS[2] .. nameplate) == 1 then
  return redis.error_reply('nameplate_taken')
end
redis.call('HSET', KEYS[2] .. nameplate, 'a', ARGV[1], 'spent', '0')
redis.call('ZADD', KEYS[1], ARGV[2], nameplate)
redis.call('HINCRBY', KEYS[3], #nameplate, 1)
return nameplate
"""
assert MAX_DIGITS == 8, "_ALLOCATE walks lengths 1..8"

_JOIN = """
local key = KEYS[2] .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return redis.error_reply('no_such_nameplate') end
local first = redis.call('HGET', key, 'a')
if redis.call('HGET', key, 'spent') == '1' or not first or redis.call('HEXISTS', key, 'b') == 1 then
  return redis.error_reply('crowded')
end
redis.call('HSET', key, 'b', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return first
"""

# One round trip per relayed message: find the peer, note activity, spend the room if the
# joiner speaks, and publish to the peer's process unless it is this one (ARGV[4]: this
# process's id; ARGV[5]: the message). Returns the peer, or false.
_RELAY = """
local key = KEYS[2] .. ARGV[1]
local a = redis.call('HGET', key, 'a')
local b = redis.call('HGET', key, 'b')
local peer = false
if a == ARGV[2] then peer = b elseif b == ARGV[2] then peer = a end
if not peer then return false end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
if b == ARGV[2] then redis.call('HSET', key, 'spent', '1') end
if string.sub(peer, 1, #ARGV[4] + 1) ~= ARGV[4] .. ':' then
  redis.call('PUBLISH', KEYS[4] .. peer, ARGV[5])
end
return peer
"""

_LEAVE = """
local key = KEYS[2] .. ARGV[1]
local a = redis.call('HGET', key, 'a')
local b = redis.call('HGET', key, 'b')
local peer = false
local reopened = 0
if a == ARGV[2] then
  redis.call('HDEL', key, 'a'); peer = b
  if b then redis.call('HSET', key, 'spent', '1') end
elseif b == ARGV[2] then
  redis.call('HDEL', key, 'b'); peer = a
  if redis.call('HGET', key, 'spent') ~= '1' then reopened = 1 end
end
if redis.call('HEXISTS', key, 'a') == 0 and redis.call('HEXISTS', key, 'b') == 0 then
  if redis.call('DEL', key) == 1 then redis.call('HINCRBY', KEYS[3], #ARGV[1], -1) end
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return {peer or '', reopened}
"""

_EXPIRE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, nameplate in ipairs(stale) do
  local key = KEYS[2] .. nameplate
  table.insert(out, nameplate)
  table.insert(out, redis.call('HGET', key, 'a') or '')
  table.insert(out, redis.call('HGET', key, 'b') or '')
  if redis.call('DEL', key) == 1 then redis.call('HINCRBY', KEYS[3], #nameplate, -1) end
  redis.call('ZREM', KEYS[1], nameplate)
end
return out
"""


class _Batch:
    """Commands issued in one turn of the event loop go to Redis in one pipeline: under load
    (a thousand pairs at once) that costs the client library about a sixth of the CPU of one
    round trip per command, and each caller still gets its own answer or error, in order."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, *command: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((command, future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    pipe.execute_command(*command)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every caller learns it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class RedisStore:
    """Rooms in Redis, shared by every server process pointed at it."""

    def __init__(self, url: str, max_rooms: int) -> None:
        import redis.asyncio as redis

        # A bounded pool that waits for a free connection under load (the default pool raises
        # "Too many connections" instead).
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=20, decode_responses=True
        )
        self._redis = redis.Redis(connection_pool=pool)
        self.max_rooms = max_rooms
        self.server_id = secrets.token_hex(6)
        self._deliver: Deliver | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        from redis.exceptions import NoScriptError, ResponseError

        self._no_script, self._response_error = NoScriptError, ResponseError
        self._batch = _Batch(self._redis)
        self._scripts = {
            name: self._redis.register_script(text)
            for name, text in (
                ("allocate", _ALLOCATE),
                ("join", _JOIN),
                ("relay", _RELAY),
                ("leave", _LEAVE),
                ("expire", _EXPIRE),
            )
        }

    async def _run(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        try:
            try:
                return await self._batch.call("EVALSHA", script.sha, len(_KEYS), *_KEYS, *args)
            except self._no_script:  # Redis restarted (or flushed its scripts): load and retry
                return await script(keys=_KEYS, args=list(args))
        except self._response_error as exc:
            reason = str(exc).strip()
            messages = {
                "too_many_rooms": "the server has too many open rooms; try later",
                "nameplate_taken": "that nameplate is in use",
                "no_such_nameplate": "no sender is waiting with that nameplate",
                "crowded": "that nameplate is already in use",
            }
            if reason in messages:
                raise RoomError(reason, messages[reason]) from None
            raise

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._redis.ping()
        for script in self._scripts.values():
            await self._redis.script_load(script.script)
        self._pubsub = self._redis.pubsub()
        await self._pubsub.psubscribe(f"{_CHANNEL}{self.server_id}:*")
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        assert self._deliver is not None
        async for item in self._pubsub.listen():
            if item.get("type") != "pmessage":
                continue
            side = str(item["channel"])[len(_CHANNEL) :]
            with contextlib.suppress(ValueError):
                await self._deliver(side, json.loads(item["data"]))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        await self._redis.aclose()

    async def allocate(self, side: str, now: float, nameplate: str | None) -> str:
        if nameplate is not None and not valid_nameplate(nameplate):
            raise RoomError("bad_message", "a nameplate is a number of up to 8 digits")
        tries = [n for length in candidates() for n in length]
        return str(
            await self._run("allocate", side, now, self.max_rooms, nameplate or "", TRIES, *tries)
        )

    async def join(self, nameplate: str, side: str, now: float) -> list[str]:
        return [str(await self._run("join", nameplate, side, now))]

    async def leave(self, nameplate: str, side: str) -> tuple[str | None, bool]:
        peer, reopened = await self._run("leave", nameplate, side)
        return (str(peer) if peer else None), reopened == 1

    async def relay(
        self, nameplate: str, side: str, now: float, message: dict[str, Any]
    ) -> str | None:
        peer = await self._run("relay", nameplate, side, now, self.server_id, json.dumps(message))
        if not peer:
            return None
        if peer.startswith(f"{self.server_id}:"):
            assert self._deliver is not None
            await self._deliver(peer, message)
        return str(peer)

    async def expire(self, now: float, idle: float) -> list[tuple[str, list[str]]]:
        flat = await self._run("expire", now - idle)
        return [(flat[i], [s for s in flat[i + 1 : i + 3] if s]) for i in range(0, len(flat), 3)]

    async def count(self) -> int:
        return int(await self._redis.zcard(_ROOMS))

    async def send(self, side: str, message: dict[str, Any]) -> None:
        if side.startswith(f"{self.server_id}:"):
            assert self._deliver is not None
            await self._deliver(side, message)
        else:
            await self._batch.call("PUBLISH", f"{_CHANNEL}{side}", json.dumps(message))
