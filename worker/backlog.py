"""Per-connection backlogs: jobs waiting for Halo budget, parked in arrival order.

When a connection's shared budget is spent, its jobs stop taking worker slots: each is parked,
in arrival order, in its connection's backlog and its message is acked. Jobs for that
connection that arrive while a backlog exists join the end of it, so the backlog drains in
order. Other connections are untouched: their jobs keep running straight off the queue. A
burst (`worker.burst`) parks its jobs here too, while there is budget, to be batched.

A dispatcher (`worker.dispatcher`, re-exported here with `BATCH_COST`) takes parked jobs in
order and releases them in batches as the budget allows. Parked jobs are never re-published
on a timer, so a deep backlog costs nothing while it waits, and nothing is delivered late
enough to meet the visibility timeout.

Keys:
    halo:backlogs                 connections that have a backlog (set)
    halo:backlog:<name>           job ids in arrival order (sorted set, score = sequence)
    halo:backlog:<name>:taken     job ids being published, scored by lease end (sorted set)
    halo:backlog:jobs             payloads of parked jobs (hash)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from worker.dispatcher import BATCH_COST, Dispatcher
from worker.keys import (
    BACKLOG_JOBS,
    BACKLOGS,
    backlog_key,
    backlog_seq_key,
    backlog_taken_key,
    dispatch_key,
)

__all__ = ["BATCH_COST", "Backlogs", "Dispatcher", "Parked"]

_TAKE_LEASE_MS: Final = 30_000
_DISPATCH_LOCK_MS: Final = 5_000


# KEYS: backlog, backlogs, jobs, backlog's counter. ARGV: connection, job_id, payload
_PARK = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], seq, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: backlog, taken, jobs, backlogs. ARGV: n, lease_until_ms, connection
_TAKE = """
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local out = {}
for i = 1, #popped, 2 do
  local job_id = popped[i]
  redis.call('ZADD', KEYS[2], ARGV[2], job_id)
  table.insert(out, job_id)
  table.insert(out, redis.call('HGET', KEYS[3], job_id) or '')
end
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[3])
end
return out
"""

# KEYS: taken, jobs. ARGV: job ids...
_RELEASE_TAKEN = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return #ARGV
"""

# Taken jobs whose publisher died go back to the front of the backlog.
# KEYS: taken, backlog. ARGV: now_ms
_REAP = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, job_id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], job_id)
  redis.call('ZADD', KEYS[2], 0, job_id)
end
return #stale
"""


@dataclass(frozen=True)
class Parked:
    """A parked job, as the dispatcher hands it to a batch."""

    job_id: str
    job: Any
    submitted_at: str | None


class Backlogs:
    """Parking and releasing jobs per connection."""

    def __init__(self, client: redis.Redis, *, take_lease_ms: int = _TAKE_LEASE_MS) -> None:
        """Keep backlogs in `client` (the result Redis). Jobs a dispatcher took are its own for
        `take_lease_ms`; after that `reap` gives them to another (tests shorten the lease)."""
        self._redis = client
        self._take_lease_ms = take_lease_ms
        self._park = client.register_script(_PARK)
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE_TAKEN)
        self._reap = client.register_script(_REAP)

    def size(self, connection: str) -> int:
        """How many jobs of a connection wait in its backlog (including those being released)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(backlog_key(connection))
        pipe.zcard(backlog_taken_key(connection))
        waiting, taken = pipe.execute()
        return int(waiting) + int(taken)

    def park(self, connection: str, job_id: str, job: Any, submitted_at: str) -> None:
        """Add a job to the end of its connection's backlog (a no-op if already parked)."""
        payload = json.dumps({"job": job, "submitted_at": submitted_at})
        self._park(
            keys=[backlog_key(connection), BACKLOGS, BACKLOG_JOBS, backlog_seq_key(connection)],
            args=[connection, job_id, payload],
        )

    def parked_total(self, connection: str) -> int:
        """How many times a job was parked in the connection's backlog (a counter that only
        grows, while the backlog's keys live)."""
        return int(self._redis.get(backlog_seq_key(connection)) or 0)

    def waiting(self, connection: str) -> int:
        """How many jobs of a connection wait to be taken (leased ones excluded)."""
        return int(self._redis.zcard(backlog_key(connection)))

    def connections(self) -> list[str]:
        """Connections that have a backlog now."""
        return sorted(str(name) for name in cast(set[Any], self._redis.smembers(BACKLOGS)))

    def take(self, connection: str, n: int) -> list[Parked]:
        """Lease the `n` oldest parked jobs of a connection for publishing."""
        raw = cast(
            list[Any],
            self._take(
                keys=[
                    backlog_key(connection),
                    backlog_taken_key(connection),
                    BACKLOG_JOBS,
                    BACKLOGS,
                ],
                args=[n, _now_ms() + self._take_lease_ms, connection],
            ),
        )
        parked = []
        for index in range(0, len(raw), 2):
            payload = json.loads(raw[index + 1]) if raw[index + 1] else {}
            submitted_at = payload.get("submitted_at")
            parked.append(
                Parked(
                    str(raw[index]),
                    payload.get("job"),
                    submitted_at if isinstance(submitted_at, str) else None,
                )
            )
        return parked

    def released(self, connection: str, parked: list[Parked]) -> None:
        """Forget jobs once their batch is on the queue."""
        if parked:
            self._release(
                keys=[backlog_taken_key(connection), BACKLOG_JOBS],
                args=[p.job_id for p in parked],
            )

    def reap(self, connection: str) -> int:
        """Return jobs whose publisher died mid-release to the front of the backlog."""
        keys = [backlog_taken_key(connection), backlog_key(connection)]
        return int(self._reap(keys=keys, args=[_now_ms()]))

    def dispatch_lock(self, connection: str) -> bool:
        """Take the right to release this connection's backlog for a few seconds."""
        return bool(self._redis.set(dispatch_key(connection), "1", nx=True, px=_DISPATCH_LOCK_MS))

    def dispatch_unlock(self, connection: str) -> None:
        self._redis.delete(dispatch_key(connection))


def _now_ms() -> int:
    return int(time.time() * 1000)
