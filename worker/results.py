"""Result records, the completion feed, and the per-job state that makes delivery exactly-once.

Keys (CONTRACT §3 names the first two; the rest are this worker's own):

    halo:result:<job_id>    the record (string, JSON), expires after HALO_RESULT_TTL_S
    halo:results            the completion feed (stream: job_id, outcome, record)
    halo:job:<job_id>       state across runs (hash): attempts, clean run ends, Halo requests,
                            submitted_at, first start, the write journal
    halo:claim:<job_id>     who runs the job now (string, token), with a lease
    halo:notify:<job_id>    a wake-up for producers blocked waiting on the record (list)
    halo:deferred           jobs waiting to run again, scored by due time in ms (sorted set)
    halo:deferred:jobs      their payloads (hash)
    halo:unfinished         accepted jobs without a record yet, scored by when one was last
                            seen on its way, in ms (sorted set); see `take_lost`
    halo:unfinished:jobs    their payloads (hash)
    halo:failed-job:<job_id>
                            what `halo-jobs replay` needs of a failed job (hash): `connection`,
                            `job` (the payload as submitted; absent when it was invalid) and
                            `replays` (counted by replay); expires with the record

A record and its feed entry are written by one Lua script, so a worker dying between the two
cannot leave one without the other, and a second write for the same job_id is a no-op. The
same script keeps a failed job's payload for replay: only failed jobs, only for the record's
lifetime. A payload holds no credential (jobs never do) but does hold email-derived
`variables`, `summary` and `details`, so it is kept no longer than the record it explains.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from worker.errors import ErrorCode
from worker.models import RESULTS_STREAM, Outcome, ResultRecord, result_key
from worker.replication import NotReplicated, ReplicaAcks

DEFERRED: Final = "halo:deferred"
DEFERRED_JOBS: Final = "halo:deferred:jobs"
UNFINISHED: Final = "halo:unfinished"
UNFINISHED_JOBS: Final = "halo:unfinished:jobs"
# A producer that waits for a record finds the wake-up for this long after the write.
_NOTIFY_TTL_S: Final = 300


def _state_key(job_id: str) -> str:
    return f"halo:job:{job_id}"


def _claim_key(job_id: str) -> str:
    return f"halo:claim:{job_id}"


def _notify_key(job_id: str) -> str:
    return f"halo:notify:{job_id}"


def failed_job_key(job_id: str) -> str:
    """Where a failed job's payload is kept for replay: ``halo:failed-job:<job_id>``."""
    return f"halo:failed-job:{job_id}"


# KEYS: result, stream, state, notify, deferred, deferred jobs, failed job, unfinished,
#       unfinished jobs
# ARGV: record, ttl_s, job_id, outcome, notify ttl_s, keep failed job (1/0), connection, job
_WRITE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local now = redis.call('TIME')
local oldest_ms = tonumber(now[1]) * 1000 - tonumber(ARGV[2]) * 1000
redis.call('XADD', KEYS[2], 'MINID', '~', tostring(oldest_ms), '*',
           'job_id', ARGV[3], 'outcome', ARGV[4], 'record', ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HDEL', KEYS[6], ARGV[3])
redis.call('ZREM', KEYS[8], ARGV[3])
redis.call('HDEL', KEYS[9], ARGV[3])
redis.call('RPUSH', KEYS[4], '1')
redis.call('EXPIRE', KEYS[4], ARGV[5])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[7], 'connection', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[7], 'job', ARGV[8]) end
  redis.call('EXPIRE', KEYS[7], ARGV[2])
end
return 1
"""

# KEYS: state. ARGV: submitted_at, now_s, ttl_s
_BEGIN_RUN = """
redis.call('HSETNX', KEYS[1], 'submitted_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'first_started_s', ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'clean_ends', 'requests', 'first_started_s', 'submitted_at')
return {attempts, s[1] or '0', s[2] or '0', s[3], s[4]}
"""

# KEYS: state, deferred, deferred jobs. ARGV: job_id, due_ms, payload, requests
_DEFER = """
redis.call('HINCRBY', KEYS[1], 'clean_ends', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'requests', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: state. ARGV: requests, counted (1/0)
# An uncounted run (it only waited for budget) is taken back off `attempts` instead.
_END_RUN = """
redis.call('HINCRBYFLOAT', KEYS[1], 'requests', ARGV[1])
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'clean_ends', 1)
else
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
end
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

# KEYS: unfinished, unfinished jobs. ARGV: job_id, payload, result key
# The record is only read, so its key is an argument: Redis ACLs count a script's declared keys
# as written, and a producer (who runs this) may read records but never write one.
_TRACK = """
if redis.call('EXISTS', ARGV[3]) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
           ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: unfinished, unfinished jobs, deferred, backlog jobs, job queues...
# ARGV: quiet_ms, limit, result key prefix, claim key prefix
# Nothing is taken while a job queue holds messages: a quiet job may be one of them. Else every
# job quiet for quiet_ms is marked seen now; those with no record, no run (claim), no deferral
# and no backlog place are returned: the broker has lost them.
_TAKE_LOST = """
for i = 5, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then return {} end
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
        and redis.call('HEXISTS', KEYS[4], job_id) == 0 then
      table.insert(out, job_id)
      table.insert(out, redis.call('HGET', KEYS[2], job_id) or '')
    end
  end
end
return out
"""

_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RunState:
    """What earlier runs of a job left: used for attempts, budgets and crash counting."""

    attempts: int
    clean_ends: int
    halo_requests: float
    first_started_s: float
    submitted_at: str

    @property
    def crashes(self) -> int:
        """Earlier runs that ended without finishing or deferring: their worker died."""
        return self.attempts - 1 - self.clean_ends


@dataclass(frozen=True)
class DueJob:
    """A deferred job whose time has come, leased to the mover that took it."""

    job_id: str
    payload: dict[str, Any]
    lease: str


class ResultStore:
    """Records, the feed and job state in the result Redis (`HALO_RESULT_URL`)."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, acks: ReplicaAcks | None = None) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        # Claims, journals, records and tracking entries wait for replicas (worker.replication).
        self.acks = acks or ReplicaAcks()
        self._write = client.register_script(_WRITE_RECORD)
        self._begin = client.register_script(_BEGIN_RUN)
        self._defer = client.register_script(_DEFER)
        self._end_run = client.register_script(_END_RUN)
        self._take_due = client.register_script(_TAKE_DUE)
        self._release_moved = client.register_script(_RELEASE_MOVED)
        self._release_claim = client.register_script(_RELEASE_CLAIM)
        self._track = client.register_script(_TRACK)
        self._take_lost = client.register_script(_TAKE_LOST)

    # -- records -------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's record, or None while it has none."""
        raw = self.redis.get(result_key(job_id))
        return json.loads(raw) if raw else None

    def write(self, record: ResultRecord, job: Any = None) -> bool:
        """Write a record and its feed entry, atomically, once per job_id.

        Args:
            record: the record.
            job: the job's payload as it came off the queue; kept beside a failed record
                for `halo-jobs replay` (see the module docstring), ignored otherwise.

        Returns:
            False when the job already had a record (then nothing was written).
        """
        kept = _kept_for_replay(record, job)
        written = self.acks.write(
            self.redis,
            f"the record of job {record.job_id}",
            lambda pipe: self._write(
                keys=[
                    result_key(record.job_id),
                    RESULTS_STREAM,
                    _state_key(record.job_id),
                    _notify_key(record.job_id),
                    DEFERRED,
                    DEFERRED_JOBS,
                    failed_job_key(record.job_id),
                    UNFINISHED,
                    UNFINISHED_JOBS,
                ],
                args=[
                    record.model_dump_json(),
                    self.ttl_s,
                    record.job_id,
                    record.outcome.value,
                    _NOTIFY_TTL_S,
                    "1" if kept else "0",
                    *(kept or ("", "")),
                ],
                client=pipe,
            ),
        )
        return bool(written)

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Block until a job's record exists, or `timeout_s` passes; no polling.

        Uses its own connection for the blocking pop, so the shared pool's socket timeouts
        do not cut it short.
        """
        deadline = time.monotonic() + timeout_s
        record = self.get(job_id)
        if record is not None or timeout_s <= 0:
            return record
        pool = self.redis.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        blocking_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        # `from_pool`: closing the client disconnects the pool, rather than leaving its socket
        # to the garbage collector (which warns of it as unclosed).
        with redis.Redis.from_pool(blocking_pool) as blocking:
            while record is None:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    return None
                popped = blocking.blpop([_notify_key(job_id)], timeout=max(remaining_s, 0.01))
                if popped:
                    # Put the wake-up back for any other waiter on the same job.
                    blocking.rpush(_notify_key(job_id), "1")
                record = self.get(job_id)
        return record

    # -- runs ----------------------------------------------------------------------------------

    def begin_run(self, job_id: str, submitted_at: str) -> RunState:
        """Count a new run of a job and return what earlier runs left."""
        raw = cast(
            list[Any],
            self._begin(keys=[_state_key(job_id)], args=[submitted_at, time.time(), self.ttl_s]),
        )
        return RunState(
            attempts=int(raw[0]),
            clean_ends=int(raw[1]),
            halo_requests=float(raw[2]),
            first_started_s=float(raw[3]),
            submitted_at=str(raw[4]),
        )

    @contextmanager
    def claim(self, job_id: str, *, lease_s: float) -> Iterator[bool]:
        """Hold a job so no second worker runs it at the same time.

        Yields whether the claim was taken. The lease outlives the longest run, so a worker
        that dies holding a claim blocks its job only until the lease ends.
        """
        token = uuid.uuid4().hex
        try:
            taken = bool(
                self.acks.write(
                    self.redis,
                    f"the claim of job {job_id}",
                    lambda pipe: pipe.set(
                        _claim_key(job_id), token, nx=True, px=int(lease_s * 1000)
                    ),
                )
            )
        except NotReplicated:
            # Not relied on, so not held either: the redelivery may take it.
            self._release_claim(keys=[_claim_key(job_id)], args=[token])
            raise
        try:
            yield taken
        finally:
            if taken:
                self._release_claim(keys=[_claim_key(job_id)], args=[token])

    def end_run(self, job_id: str, *, halo_requests: float, counted: bool) -> None:
        """End this run cleanly without a record (the job waits elsewhere)."""
        self._end_run(keys=[_state_key(job_id)], args=[halo_requests, "1" if counted else "0"])

    def defer(
        self, job_id: str, payload: dict[str, Any], *, due_s: float, halo_requests: float
    ) -> None:
        """End this run cleanly and park the job until `due_s` (Unix time)."""
        self._defer(
            keys=[_state_key(job_id), DEFERRED, DEFERRED_JOBS],
            args=[job_id, int(due_s * 1000), json.dumps(payload), halo_requests],
        )

    def claim_ttl_s(self, job_id: str) -> float:
        """Seconds left on a job's claim (0 when nobody holds it)."""
        return max(0, int(self.redis.pttl(_claim_key(job_id)))) / 1000

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

    # -- the safety net under the broker -------------------------------------------------------

    def track(self, job_id: str, payload: dict[str, Any]) -> None:
        """Remember an accepted job until it has a record (a no-op once it has one).

        Kombu's Redis transport pops a message (BRPOP) before it records it as unacked, so a
        worker killed between the two loses the message for good; so can a Redis that lost
        its data. A job tracked here is published again if that happens (`take_lost`).
        Idempotent: tracking a job again keeps its first entry.

        Raises:
            NotReplicated: the replicas required did not confirm the entry (nor, since they
                apply writes in order, the job's earlier push on the queue).
        """
        self.acks.write(
            self.redis,
            f"the tracking entry of job {job_id}",
            lambda pipe: self._track(
                keys=[UNFINISHED, UNFINISHED_JOBS],
                args=[job_id, json.dumps(payload), result_key(job_id)],
                client=pipe,
            ),
        )

    def take_lost(
        self, *, quiet_s: float, limit: int, backlog_jobs: str, queues: Sequence[str]
    ) -> list[DueJob]:
        """Unfinished jobs nobody has shown a sign of for `quiet_s`, for re-enqueueing.

        A job is accounted for while it runs (its claim), waits to run again (`halo:deferred`)
        or waits for budget (the backlog payloads, hash `backlog_jobs`); otherwise, once
        quiet for longer than a stranded message takes to come back (the visibility timeout
        plus a dead worker's claim), its message is gone. Each job returned is marked seen,
        so it is returned again only after another quiet period. Nothing is returned while
        a job queue (the broker's lists `queues`) holds messages, since a quiet job may just
        be waiting there: a lost job is then found once the queues drain.

        Returns:
            The jobs, as `DueJob`s with an empty `lease` (being marked seen is their lease).
        """
        raw = cast(
            list[Any],
            self._take_lost(
                keys=[UNFINISHED, UNFINISHED_JOBS, DEFERRED, backlog_jobs, *queues],
                args=[int(quiet_s * 1000), limit, result_key(""), _claim_key("")],
            ),
        )
        lost = []
        for index in range(0, len(raw), 2):
            payload = json.loads(raw[index + 1]) if raw[index + 1] else {}
            lost.append(DueJob(str(raw[index]), payload, ""))
        return lost

    # -- the write journal -----------------------------------------------------------------------

    def journal(self, job_id: str) -> RedisJournal:
        """The write journal of one job (see `worker.update.WriteJournal`)."""
        return RedisJournal(self.redis, _state_key(job_id), self.acks)


class RedisJournal:
    """Remembers, in the job's state hash, the fields a run was about to POST."""

    def __init__(self, client: redis.Redis, key: str, acks: ReplicaAcks | None = None) -> None:
        self._redis = client
        self._key = key
        self._acks = acks or ReplicaAcks()

    def recall(self) -> list[str] | None:
        raw = self._redis.hget(self._key, "journal")
        return list(json.loads(raw)) if raw else None

    def note(self, changed_fields: list[str]) -> None:
        """Note the fields before the POST; returns only once the replicas required have the
        note, so the POST is never sent on a note a failover could lose.

        Raises:
            NotReplicated: too few replicas confirmed; the POST must not be sent.
        """
        self._acks.write(
            self._redis,
            f"the write journal of {self._key}",
            lambda pipe: pipe.hset(self._key, "journal", json.dumps(changed_fields)),
        )


def _kept_for_replay(record: ResultRecord, job: Any) -> tuple[str, str] | None:
    """``(connection, job JSON)`` to keep beside a failed record, or None to keep nothing.

    The job JSON is empty when the job was invalid: it cannot be replayed as it was.
    """
    if record.outcome is not Outcome.FAILED or not isinstance(job, Mapping):
        return None
    connection = job.get("connection")
    valid = record.error is not None and record.error.code is not ErrorCode.INVALID_JOB
    return (
        connection if isinstance(connection, str) else "",
        json.dumps(job, separators=(",", ":"), ensure_ascii=False) if valid else "",
    )
