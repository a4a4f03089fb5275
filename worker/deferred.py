"""Jobs that wait without a message on the broker: deferred ones, and the net for lost ones.

Keys (`worker.keys`):

    halo:deferred           jobs waiting to run again, scored by due time in ms (sorted set)
    halo:deferred:jobs      their payloads (hash)
    halo:unfinished         accepted jobs without a record yet, scored by when one was last
                            seen on its way, in ms (sorted set); the producer adds them
                            (`worker.handoff.track`), `take_lost` finds the lost ones
    halo:unfinished:jobs    their payloads (hash)

A job leaves both sets in the same call that writes its record (`worker.records`). The mover
(`worker.deferrals`) publishes deferred jobs when they are due and lost jobs when they are found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.keys import (
    CLAIM_PREFIX,
    DEFERRED,
    DEFERRED_JOBS,
    RESULT_PREFIX,
    UNFINISHED,
    UNFINISHED_JOBS,
    job_state_key,
)
from worker.replication import ReplicaAcks

# KEYS: state, deferred, deferred jobs. ARGV: job_id, due_ms, payload, requests
_DEFER = """
redis.call('HINCRBY', KEYS[1], 'clean_ends', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'requests', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: deferred, deferred jobs. ARGV: now_ms, lease_ms, limit
# Due jobs get a lease (their score moves into the future) instead of being removed: a mover
# that dies before publishing them leaves them to be taken again when the lease ends.
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
local leased = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, job_id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', leased, job_id)
  table.insert(out, job_id)
  table.insert(out, redis.call('HGET', KEYS[2], job_id) or '')
  table.insert(out, tostring(leased))
end
return out
"""

# KEYS: deferred, deferred jobs. ARGV: job_id, leased score
_RELEASE_MOVED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: unfinished, unfinished jobs, deferred, waiting hashes..., job queues...
# ARGV: quiet_ms, limit, result key prefix, claim key prefix, number of waiting hashes
# Nothing is taken while a job queue holds messages: a quiet job may be one of them. Else every
# job quiet for quiet_ms is marked seen now; those with no record, no run (claim), no deferral
# and no place in a waiting hash (a backlog, a ticket's line) are returned: the broker has lost
# them.
_TAKE_LOST = """
local first_queue = 4 + tonumber(ARGV[5])
for i = first_queue, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then return {} end
end
local function waiting(job_id)
  for i = 4, first_queue - 1 do
    if redis.call('HEXISTS', KEYS[i], job_id) == 1 then return true end
  end
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quiet = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                         'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, job_id in ipairs(quiet) do
  if redis.call('EXISTS', ARGV[3] .. job_id) == 1 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('HDEL', KEYS[2], job_id)
  else
    redis.call('ZADD', KEYS[1], 'XX', now, job_id)
    if redis.call('EXISTS', ARGV[4] .. job_id) == 0
        and not redis.call('ZSCORE', KEYS[3], job_id)
        and not waiting(job_id) then
      table.insert(out, job_id)
      table.insert(out, redis.call('HGET', KEYS[2], job_id) or '')
    end
  end
end
return out
"""


@dataclass(frozen=True)
class DueJob:
    """A deferred job whose time has come, leased to the mover that took it."""

    job_id: str
    payload: dict[str, Any]
    lease: str


class DeferredJobs:
    """The deferred and unfinished sets in the result Redis."""

    def __init__(self, client: redis.Redis, *, acks: ReplicaAcks | None = None) -> None:
        """Keep the sets in `client`; a tracking entry (`track`) returns once the replicas
        `acks` asks for have it."""
        self.redis = client
        self.acks = acks or ReplicaAcks()
        self._defer = client.register_script(_DEFER)
        self._take_due = client.register_script(_TAKE_DUE)
        self._release_moved = client.register_script(_RELEASE_MOVED)
        self._take_lost = client.register_script(_TAKE_LOST)

    def defer(
        self, job_id: str, payload: dict[str, Any], *, due_s: float, halo_requests: float
    ) -> None:
        """End this run cleanly and park the job until `due_s` (Unix time)."""
        self._defer(
            keys=[job_state_key(job_id), DEFERRED, DEFERRED_JOBS],
            args=[job_id, int(due_s * 1000), json.dumps(payload), halo_requests],
        )

    def recheck_later(self, job_id: str, payload: dict[str, Any], *, due_s: float) -> None:
        """Schedule another delivery of a job held by another worker, without counting a run.

        Redis cannot tell a duplicate delivery from the redelivery of a job whose worker died
        holding the claim; acking either would lose the second kind. Coming back once the
        claim's lease ends settles it: the job then has a record, or nobody holds it.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(DEFERRED_JOBS, job_id, json.dumps(payload))
        # Always set the due time (no NX): when this delivery was published by a mover that
        # has not yet released its lease on the entry, an NX add would leave the lease score,
        # the mover's `release_moved` would then delete the entry, and the job, whose message
        # is acked, would be lost.
        pipe.zadd(DEFERRED, {job_id: int(due_s * 1000)})
        pipe.execute()

    def take_due(self, *, limit: int, lease_s: float) -> list[DueJob]:
        """Lease up to `limit` deferred jobs that are due, for the caller to re-enqueue."""
        now_ms = int(time.time() * 1000)
        raw = cast(
            list[Any],
            self._take_due(
                keys=[DEFERRED, DEFERRED_JOBS], args=[now_ms, int(lease_s * 1000), limit]
            ),
        )
        due = []
        for index in range(0, len(raw), 3):
            payload = json.loads(raw[index + 1]) if raw[index + 1] else {}
            due.append(DueJob(str(raw[index]), payload, str(raw[index + 2])))
        return due

    def release_moved(self, due: DueJob) -> None:
        """Forget a deferred job once it is back on the queue."""
        self._release_moved(keys=[DEFERRED, DEFERRED_JOBS], args=[due.job_id, due.lease])

    def take_lost(
        self, *, quiet_s: float, limit: int, waiting: Sequence[str], queues: Sequence[str]
    ) -> list[DueJob]:
        """Unfinished jobs nobody has shown a sign of for `quiet_s`, for re-enqueueing.

        A job is accounted for while it runs (its claim), waits to run again (`halo:deferred`)
        or waits elsewhere (a field of one of the hashes `waiting`, keyed by job_id: the
        backlog's payloads, the jobs waiting for their ticket); otherwise, once
        quiet for longer than a stranded message takes to come back (the visibility timeout
        plus a dead worker's claim), its message is gone. Each job returned is marked seen,
        so it is returned again only after another quiet period. Nothing is returned while
        a job queue (the broker's lists `queues`) holds messages, since a quiet job may just
        be waiting there: a lost job is then found once the queues drain. The queues must be
        in this Redis (`worker.deferrals.redeliver_lost` looks at a broker elsewhere itself).

        Returns:
            The jobs, as `DueJob`s with an empty `lease` (being marked seen is their lease).
        """
        raw = cast(
            list[Any],
            self._take_lost(
                keys=[UNFINISHED, UNFINISHED_JOBS, DEFERRED, *waiting, *queues],
                args=[int(quiet_s * 1000), limit, RESULT_PREFIX, CLAIM_PREFIX, len(waiting)],
            ),
        )
        lost = []
        for index in range(0, len(raw), 2):
            payload = json.loads(raw[index + 1]) if raw[index + 1] else {}
            lost.append(DueJob(str(raw[index]), payload, ""))
        return lost
