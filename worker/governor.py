"""The shared rate governor: one budget per Halo connection, kept in Redis for the whole fleet.

Halo limits each tenant to N requests per *rolling* window (FACTS, Rate limits), so the
governor keeps the same thing: a sliding log of the fleet's request times per connection (a
sorted set), and grants a request only while fewer than N lie inside the window. A Lua script
makes check-and-add atomic across every worker process on every host, and it reads Redis's
clock, so hosts whose clocks disagree still share one timeline.

The window is padded a little: Halo counts a request when it arrives, the governor when it
is granted, a few milliseconds earlier, and a request granted at the very edge of our window
must not land inside Halo's.

It learns from Halo: a 429 whose text states ``N Requests per rolling M minute window`` lowers
the connection's limit for every worker, and a 429 pauses the connection for every worker until
``Retry-After`` (or, without one, until the oldest logged request leaves the window).

Keys, per connection:
    halo:rate:<name>          the sliding log (sorted set of grant times, ms)
    halo:rate:<name>:pause    set while Halo asked everyone to wait (string with a TTL)
    halo:rate:<name>:learned  the limit Halo stated, as "requests/window_ms" (string, 1 day)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from worker.connections import Connection, RateLimit
from worker.errors import BudgetExhausted, HaloRateLimited

# Padding of the window: 5 % (at least 0.2 s) keeps 95 % of Halo's budget usable.
_PAD_FRACTION: Final = 0.05
_MIN_PAD_MS: Final = 200
# A learned limit is forgotten after a day, so that a raised tenant limit is used again.
_LEARNED_TTL_S: Final = 24 * 3600

# KEYS: log, pause, learned. ARGV: limit, window_ms, n, member prefix
# Returns {granted (1/0), wait_ms, limit, window_ms, in_window}
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local learned = redis.call('GET', KEYS[3])
if learned then
  local l, w = string.match(learned, '(%d+)/(%d+)')
  if tonumber(l) < limit then limit = tonumber(l); window = math.max(window, tonumber(w)) end
end
local pad = math.max(math.floor(window * tonumber(ARGV[5])), tonumber(ARGV[6]))
local span = window + pad
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {0, paused, limit, window, -1} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local count = redis.call('ZCARD', KEYS[1])
local n = tonumber(ARGV[3])
if count + n <= limit then
  local seq = redis.call('INCR', KEYS[1] .. ':seq')
  for i = 1, n do
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. seq .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], span)
  redis.call('PEXPIRE', KEYS[1] .. ':seq', span)
  return {1, 0, limit, window, count + n}
end
local need = count + n - limit
local entry = redis.call('ZRANGE', KEYS[1], need - 1, need - 1, 'WITHSCORES')
local wait = span
if entry[2] then wait = math.max(1, tonumber(entry[2]) + span - now) end
return {0, wait, limit, window, count}
"""

# KEYS: log, pause, learned. ARGV: pause_ms (or -1: until the oldest entry leaves the window),
# learned "requests/window_ms" or "", window_ms for the default pause
_OBSERVE_429 = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[4]) end
local pause = tonumber(ARGV[1])
if pause < 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  pause = 1000
  if oldest[2] then pause = math.max(1000, tonumber(oldest[2]) + tonumber(ARGV[3]) - now) end
end
local current = redis.call('PTTL', KEYS[2])
-- `Retry-After: 0` (or a date already past) asks for no pause; PX 0 would be an error.
if pause > 0 and current < pause then redis.call('SET', KEYS[2], '1', 'PX', pause) end
return pause
"""


@dataclass(frozen=True)
class Grant:
    """The governor's answer: granted, or how long until there is room."""

    granted: bool
    wait_s: float
    limit: int
    window_s: float
    in_window: int


class Governor:
    """The fleet's rate budget per Halo connection (implements `worker.halo.client.Budget`)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._observe = client.register_script(_OBSERVE_429)

    def try_acquire(self, connection: Connection, n: int = 1) -> Grant:
        """Take room for `n` requests if there is room for all of them now."""
        limit = connection.rate_limit
        raw = cast(
            list[Any],
            self._acquire(
                keys=_keys(connection.name),
                args=[
                    limit.requests,
                    int(limit.window_s * 1000),
                    n,
                    "r:",
                    _PAD_FRACTION,
                    _MIN_PAD_MS,
                ],
            ),
        )
        return Grant(
            granted=bool(raw[0]),
            wait_s=int(raw[1]) / 1000,
            limit=int(raw[2]),
            window_s=int(raw[3]) / 1000,
            in_window=int(raw[4]),
        )

    def acquire(self, connection: Connection) -> None:
        """Take room for one request.

        Raises:
            BudgetExhausted: no room now; `retry_after_s` says when there will be.
        """
        grant = self.try_acquire(connection)
        if not grant.granted:
            raise BudgetExhausted(
                f"connection {connection.name!r} has used its Halo budget "
                f"({grant.limit} requests per {grant.window_s:g} s); room again in "
                f"{grant.wait_s:.1f} s",
                retry_after_s=grant.wait_s,
            )

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        """Share a 429 with the fleet: pause the connection, and learn Halo's stated limit."""
        learned = ""
        if error.learned_limit is not None:
            requests, window_s = error.learned_limit
            learned = f"{requests}/{int(window_s * 1000)}"
        pause_ms = -1 if error.retry_after_s is None else math.ceil(error.retry_after_s * 1000)
        self._observe(
            keys=_keys(connection.name),
            args=[pause_ms, learned, int(connection.rate_limit.window_s * 1000), _LEARNED_TTL_S],
        )

    def effective_limit(self, connection: Connection) -> RateLimit:
        """The limit in force: the configured one, or the lower one Halo stated."""
        learned = self._redis.get(_keys(connection.name)[2])
        configured = connection.rate_limit
        if learned:
            requests, window_ms = (int(part) for part in str(learned).split("/"))
            if requests < configured.requests:
                return RateLimit(requests, max(configured.window_s, window_ms / 1000))
        return configured


def _keys(name: str) -> list[str]:
    base = f"halo:rate:{name}"
    return [base, f"{base}:pause", f"{base}:learned"]
