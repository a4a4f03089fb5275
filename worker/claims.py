"""A job's runs: who runs it now, what its earlier runs left, and its write journal.

Keys (`worker.keys`):

    halo:claim:<job_id>     who runs the job now (string, token), with a lease
    halo:job:<job_id>       state across runs (hash): attempts, clean run ends, Halo requests,
                            submitted_at, first start, the write journal; deleted with the
                            record write (`worker.records`)

Every run is counted when it starts and every clean end (a deferral, a park, a wait) is counted
when it ends, so a run that was counted and never ended is a run whose worker died: that is how
crashes are counted (`RunState.crashes`) without anyone watching the workers.

The claim and the write journal are the writes here a failover must not lose (a lost claim
lets a second worker run the job alongside; a lost journal lets a rerun POST again): with
replica acks (`worker.replication`) neither is relied on until the replicas required have it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.keys import claim_key, job_state_key
from worker.replication import NotReplicated, ReplicaAcks

# KEYS: state. ARGV: submitted_at, now_s, ttl_s
_BEGIN_RUN = """
redis.call('HSETNX', KEYS[1], 'submitted_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'first_started_s', ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'clean_ends', 'requests', 'first_started_s', 'submitted_at')
return {attempts, s[1] or '0', s[2] or '0', s[3], s[4]}
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


class Claims:
    """Claims and run state in the result Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, acks: ReplicaAcks | None = None) -> None:
        """Keep run state in `client`, for `ttl_s` (the record's lifetime) after a run; claims
        and journal notes wait for the replicas `acks` asks for."""
        self.redis = client
        self.ttl_s = ttl_s
        self.acks = acks or ReplicaAcks()
        self._begin = client.register_script(_BEGIN_RUN)
        self._end_run = client.register_script(_END_RUN)
        self._release_claim = client.register_script(_RELEASE_CLAIM)

    @contextmanager
    def claim(self, job_id: str, *, lease_s: float) -> Iterator[bool]:
        """Hold a job so no second worker runs it at the same time.

        Yields whether the claim was taken. The lease outlives the longest run, so a worker
        that dies holding a claim blocks its job only until the lease ends.

        Raises:
            NotReplicated: the replicas required did not confirm the claim in time; it is
                released again, and nothing ran.
        """
        token = uuid.uuid4().hex
        try:
            taken = bool(
                self.acks.write(
                    self.redis,
                    f"the claim of job {job_id}",
                    lambda pipe: pipe.set(
                        claim_key(job_id), token, nx=True, px=int(lease_s * 1000)
                    ),
                )
            )
        except NotReplicated:
            # Not relied on, so not held either: the redelivery may take it.
            self._release_claim(keys=[claim_key(job_id)], args=[token])
            raise
        try:
            yield taken
        finally:
            if taken:
                self._release_claim(keys=[claim_key(job_id)], args=[token])

    def claim_ttl_s(self, job_id: str) -> float:
        """Seconds left on a job's claim (0 when nobody holds it)."""
        return max(0, int(self.redis.pttl(claim_key(job_id)))) / 1000

    def begin_run(self, job_id: str, submitted_at: str) -> RunState:
        """Count a new run of a job and return what earlier runs left."""
        raw = cast(
            list[Any],
            self._begin(keys=[job_state_key(job_id)], args=[submitted_at, time.time(), self.ttl_s]),
        )
        return RunState(
            attempts=int(raw[0]),
            clean_ends=int(raw[1]),
            halo_requests=float(raw[2]),
            first_started_s=float(raw[3]),
            submitted_at=str(raw[4]),
        )

    def end_run(self, job_id: str, *, halo_requests: float, counted: bool) -> None:
        """End this run cleanly without a record (the job waits elsewhere)."""
        self._end_run(keys=[job_state_key(job_id)], args=[halo_requests, "1" if counted else "0"])

    def journal(self, job_id: str) -> RedisJournal:
        """The write journal of one job (see `worker.update.WriteJournal`)."""
        return RedisJournal(self.redis, job_state_key(job_id), self.acks)


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
