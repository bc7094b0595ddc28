"""Where rooms live: in this process (default), or in Redis, shared by several server processes.

Both stores offer the same small async interface. With Redis, every room operation is one Lua
script (atomic across processes), rooms are a hash per nameplate plus a sorted set by last
activity (for the room count and idle expiry), and a message for a side connected to another
process travels by pub/sub on that process's channel. A process that dies loses only its own
connections; rooms whose sides are elsewhere carry on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .rooms import MAX_DIGITS, TRIES, RoomError, Rooms, seeds, valid_nameplate

log = logging.getLogger("signal_server")

Deliver = Callable[[str, str], Awaitable[None]]
"""Delivers a message (its JSON text, as it goes on the wire) to a side connected to this
process. Text, not a dict: a message that crossed Redis is sent on as it came, unparsed."""


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
        await self._deliver(side, json.dumps(message))


_ROOM = "p2pcp:room:"
_ROOMS = "p2pcp:rooms"
_LENGTHS = "p2pcp:lengths"
_CHANNEL = "p2pcp:to:"
_KEYS = [_ROOMS, _ROOM, _LENGTHS, _CHANNEL]

# KEYS: the rooms sorted set, the room key prefix, the hash of rooms per nameplate length.
# ARGV: side, now, max rooms, wanted nameplate ('' for any), tries, then that many random
# 48-bit seeds (drawn by the caller from `secrets`: a script has no good randomness). A length
# is skipped when full; within one, each seed picks a candidate (rooms.candidate: the lowest
# nameplate of that length plus the seed modulo their number, exact in Lua's doubles below
# 2^53), and (a dense length) then the numbers after the first candidate, in turn.
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
      local low = 10 ^ (digits - 1)
      local first = low + tonumber(ARGV[6]) % size
      for i = 6, 6 + tries - 1 do
        local n = string.format('%d', low + tonumber(ARGV[i]) % size)
        if redis.call('EXISTS', KEYS[2] .. n) == 0 then nameplate = n; break end
      end
      if nameplate == '' then
        for step = 1, size do
          local n = string.format('%d', low + (first - low + step) % size)
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


class _Pipe:
    """One Redis connection of our own, pipelined: commands issued in one turn of the event
    loop are written together, and a reader task hands each reply to its caller in order.

    redis-py's ``Pipeline`` costs, per batch, a pool checkout, a retry wrapper and a parse
    pass with callbacks; under a thousand pairs at once that machinery was a fifth of each
    server's CPU. This keeps redis-py for what it is good at (the URL, auth, TLS, the RESP
    parser) and drops the rest. A broken connection fails the commands in flight, and the
    next command reconnects."""

    def __init__(self, pool: Any) -> None:
        from redis.exceptions import ResponseError

        self._reply_error = ResponseError  # an error reply: that command's, not the connection's
        self._connection = pool.make_connection()
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def call(self, *command: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((command, future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._write(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        async with self._lock:  # batches go out whole and in order, as their futures queue
            try:
                if self._reader is None:
                    await self._connection.disconnect(nowait=True)  # whatever was left
                    await self._connection.connect()
                    self._reader = asyncio.create_task(self._read())
                packed = self._connection.pack_commands([command for command, _ in batch])
                self._pending.extend(future for _, future in batch)
                await self._connection.send_packed_command(packed, check_health=False)
            except Exception as exc:
                for _, future in batch:  # those not yet queued for a reply
                    if not future.done():
                        future.set_exception(exc)
                self._fail(exc)

    async def _read(self) -> None:
        while True:
            try:
                reply = await self._connection.read_response(timeout=math.inf)
            except self._reply_error as exc:
                reply = exc
            except Exception as exc:
                self._fail(exc)
                return
            if not self._pending:
                continue
            future = self._pending.popleft()
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _fail(self, exc: BaseException) -> None:
        """The connection broke: every command in flight fails, and the next reconnects."""
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(exc)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._connection.disconnect(nowait=True)


class RedisStore:
    """Rooms in Redis, shared by every server process pointed at it."""

    def __init__(self, url: str, max_rooms: int) -> None:
        import redis.asyncio as redis

        # A bounded pool that waits for a free connection under load (the default pool raises
        # "Too many connections" instead).
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=20, decode_responses=True, protocol=2
        )
        self._pool: Any = pool
        self._redis = redis.Redis(connection_pool=pool)
        self.max_rooms = max_rooms
        self.server_id = secrets.token_hex(6)
        self._deliver: Deliver | None = None
        self._listener: asyncio.Task[None] | None = None
        from redis.exceptions import NoScriptError, ResponseError

        self._no_script, self._response_error = NoScriptError, ResponseError
        self._batch = _Pipe(pool)
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
        subscriber = await self._subscribe()
        self._listener = asyncio.create_task(self._listen(subscriber))

    async def _subscribe(self) -> Any:
        """A connection of its own subscribed to this process's sides, once Redis confirms."""
        connection = self._pool.make_connection()
        await connection.connect()
        await connection.send_command("PSUBSCRIBE", f"{_CHANNEL}{self.server_id}:*")
        await connection.read_response(timeout=math.inf)  # ["psubscribe", pattern, 1]
        return connection

    async def _listen(self, connection: Any) -> None:
        """Hand each published message to its side here; if Redis goes away, subscribe again
        (messages published meanwhile are lost, as they would be to any subscriber).

        This reads the subscription's replies straight off its connection: redis-py's
        ``PubSub.listen`` spent a tenth of a busy server's CPU per message on the way."""
        assert self._deliver is not None
        delay = 0.5
        while True:
            try:
                if connection is None:
                    connection = await self._subscribe()
                    log.info("resubscribed to redis")
                delay = 0.5
                while True:
                    kind, _, channel, data = await connection.read_response(timeout=math.inf)
                    if kind == "pmessage":
                        await self._deliver(channel[len(_CHANNEL) :], data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted or the network failed: try again
                log.warning("redis subscription lost (%s); retrying in %.1f s", exc, delay)
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
                connection = None
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        await self._batch.close()
        await self._redis.aclose()

    async def allocate(self, side: str, now: float, nameplate: str | None) -> str:
        if nameplate is not None and not valid_nameplate(nameplate):
            raise RoomError("bad_message", "a nameplate is a number of up to 8 digits")
        return str(
            await self._run("allocate", side, now, self.max_rooms, nameplate or "", TRIES, *seeds())
        )

    async def join(self, nameplate: str, side: str, now: float) -> list[str]:
        return [str(await self._run("join", nameplate, side, now))]

    async def leave(self, nameplate: str, side: str) -> tuple[str | None, bool]:
        peer, reopened = await self._run("leave", nameplate, side)
        return (str(peer) if peer else None), reopened == 1

    async def relay(
        self, nameplate: str, side: str, now: float, message: dict[str, Any]
    ) -> str | None:
        text = json.dumps(message)
        peer = await self._run("relay", nameplate, side, now, self.server_id, text)
        if not peer:
            return None
        if peer.startswith(f"{self.server_id}:"):
            assert self._deliver is not None
            await self._deliver(peer, text)
        return str(peer)

    async def expire(self, now: float, idle: float) -> list[tuple[str, list[str]]]:
        flat = await self._run("expire", now - idle)
        return [(flat[i], [s for s in flat[i + 1 : i + 3] if s]) for i in range(0, len(flat), 3)]

    async def count(self) -> int:
        return int(await self._redis.zcard(_ROOMS))

    async def send(self, side: str, message: dict[str, Any]) -> None:
        if side.startswith(f"{self.server_id}:"):
            assert self._deliver is not None
            await self._deliver(side, json.dumps(message))
        else:
            await self._batch.call("PUBLISH", f"{_CHANNEL}{side}", json.dumps(message))
