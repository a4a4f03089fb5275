"""A job's runs: who runs it now, what its earlier runs left, and its write journal.

Keys (`worker.keys`):

    halo:claim:<job_id>     who runs the job now (string, token), with a lease
    halo:job:<job_id>       state across runs (hash): attempts, clean run ends, Halo requests,
                            submitted_at, first start, the write journal; deleted with the
                            record write (`worker.records`)

Every run is counted when it starts and every clean end (a deferral, a park, a wait) is counted
when it ends, so a run that was counted and never ended is a run whose worker died: that is how
crashes are counted (`RunState.crashes`) without anyone watching the workers.

A run's start is one call: whether the job has a record, its claim and the count of the run
(`Claims.claim` with `submitted_at`). Its end is the record write's call, which also ends the
job's state and the writer's claim (`worker.records`), or a clean end here.

The claim and the write journal are the writes here a failover must not lose (a lost claim
lets a second worker run the job alongside; a lost journal lets a rerun POST again): with
replica acks (`worker.replication`) neither is relied on until the replicas required have it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.keys import claim_key, job_state_key, result_key
from worker.replication import DurableField, NotReplicated, ReplicaAcks

# Counts a run and returns what earlier runs left, as {'counted', attempts, clean ends, Halo
# requests, first start, submitted_at}.
_BEGIN_RUN_LUA = """
local function begin_run(state, submitted_at, now_s, ttl_s)
  redis.call('HSETNX', state, 'submitted_at', submitted_at)
  redis.call('HSETNX', state, 'first_started_s', now_s)
  local attempts = redis.call('HINCRBY', state, 'attempts', 1)
  redis.call('EXPIRE', state, ttl_s)
  local s = redis.call('HMGET', state, 'clean_ends', 'requests', 'first_started_s', 'submitted_at')
  return {'counted', attempts, s[1] or '0', s[2] or '0', s[3], s[4]}
end
"""

# KEYS: state, result. ARGV: submitted_at, now_s, ttl_s. A job with a record: {'recorded'}.
_BEGIN_RUN = (
    _BEGIN_RUN_LUA
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'recorded'} end
return begin_run(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""
)

# The claim, and with it (count = 1) whether the job has a record and the run's start, in one
# call. KEYS: claim, state, result. ARGV: token, lease_ms, count (1/0), submitted_at, now_s,
# ttl_s. Returns {'recorded'} (count = 1 and the job has a record: nothing is claimed or
# counted), {'busy'} (held elsewhere), {'taken'} (count = 0) or begin_run's answer.
_CLAIM = (
    _BEGIN_RUN_LUA
    + """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return {'recorded'} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
if ARGV[3] ~= '1' then return {'taken'} end
return begin_run(KEYS[2], ARGV[4], ARGV[5], ARGV[6])
"""
)

# A claim the replicas did not confirm: released, and the run it counted taken back.
# KEYS: claim, state. ARGV: token, take the run back (1/0)
_GIVE_UP = """
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'attempts', -1) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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


@dataclass
class _Held:
    """A claim this process holds: its token, and what the claim's call found."""

    token: str
    run: RunState | None = None  # the run it counted, until `begin_run` hands it out
    recorded: bool = False  # the job had a record when claimed (no run counted)
    released: bool = False  # the job's record write released it (`worker.records`)


class Claims:
    """Claims and run state in the result Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, acks: ReplicaAcks | None = None) -> None:
        """Keep run state in `client`, for `ttl_s` (the record's lifetime) after a run; claims
        and journal notes wait for the replicas `acks` asks for."""
        self.redis = client
        self.ttl_s = ttl_s
        self.acks = acks or ReplicaAcks()
        self._claim = client.register_script(_CLAIM)
        self._give_up = client.register_script(_GIVE_UP)
        self._begin = client.register_script(_BEGIN_RUN)
        self._end_run = client.register_script(_END_RUN)
        self._release_claim = client.register_script(_RELEASE_CLAIM)
        # The claims this process holds, by job: a claim is the fleet's only one for its job.
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    @contextmanager
    def claim(
        self, job_id: str, *, lease_s: float, submitted_at: str | None = None
    ) -> Iterator[bool]:
        """Hold a job so no second worker runs it at the same time.

        Yields whether the claim was taken. The lease outlives the longest run, so a worker
        that dies holding a claim blocks its job only until the lease ends. With
        `submitted_at`, the same atomic call first asks whether the job has a record (then it
        claims nothing, yields True, and `begin_run` answers None: the job needs no run), and
        counts the run it claims, which `begin_run` hands out without a call of its own.

        The claim is released when the block ends, unless the job's record write released it
        already (`held_token`, `record_written`).

        Raises:
            NotReplicated: the replicas required did not confirm the claim in time; it is
                released again, the run it counted taken back, and nothing ran.
        """
        token = uuid.uuid4().hex
        count = submitted_at is not None
        keys = [claim_key(job_id), job_state_key(job_id), result_key(job_id)]
        args: list[str | float] = [token, int(lease_s * 1000), "1" if count else "0"]
        args += [submitted_at or "", time.time(), self.ttl_s]
        try:
            raw = self.acks.write(
                self.redis,
                f"the claim of job {job_id}",
                lambda client: self._claim(keys=keys, args=args, client=client),
            )
        except NotReplicated as exc:
            # Not relied on, so not held either: the redelivery may take it, and its run is
            # its first, not one after a crash.
            counted = isinstance(exc.reply, list) and exc.reply[:1] == ["counted"]
            self._give_up(keys=keys[:2], args=[token, "1" if counted else "0"])
            raise
        answer = cast(list[Any], raw)
        if answer[0] == "busy":
            yield False
            return
        if answer[0] == "recorded":
            # Nothing claimed, so nothing to release, nor for a record write to release.
            held = _Held("", recorded=True, released=True)
        else:
            held = _Held(token, _run_state(answer))
        with self._lock:
            self._held[job_id] = held
        try:
            yield True
        finally:
            with self._lock:
                if self._held.get(job_id) is held:
                    del self._held[job_id]
            if not held.released:
                self._release_claim(keys=[claim_key(job_id)], args=[token])

    def held_token(self, job_id: str) -> str | None:
        """The token of this process's claim of `job_id`, if it holds one: the record write
        releases the claim in the same call (`worker.records`)."""
        with self._lock:
            held = self._held.get(job_id)
            return held.token if held is not None and held.token else None

    def record_written(self, job_id: str, token: str) -> None:
        """The job's record write, given `token` by `held_token`, ran: it released the claim,
        which is not released again when the claim's block ends."""
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and held.token == token:
                held.released = True

    def claim_ttl_s(self, job_id: str) -> float:
        """Seconds left on a job's claim (0 when nobody holds it)."""
        return max(0, int(self.redis.pttl(claim_key(job_id)))) / 1000

    def begin_run(self, job_id: str, submitted_at: str) -> RunState | None:
        """Count a new run of a job and return what earlier runs left; None, counting
        nothing, when the job has a record.

        The first call after a claim taken with `submitted_at` answers with what that claim
        found, without a call to Redis.
        """
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and (held.run is not None or held.recorded):
                run, recorded = held.run, held.recorded
                held.run, held.recorded = None, False
                return None if recorded else run
        raw = cast(
            list[Any],
            self._begin(
                keys=[job_state_key(job_id), result_key(job_id)],
                args=[submitted_at, time.time(), self.ttl_s],
            ),
        )
        return _run_state(raw)

    def end_run(self, job_id: str, *, halo_requests: float, counted: bool) -> None:
        """End this run cleanly without a record (the job waits elsewhere)."""
        self._end_run(keys=[job_state_key(job_id)], args=[halo_requests, "1" if counted else "0"])

    def journal(self, job_id: str) -> RedisJournal:
        """The write journal of one job (see `worker.journal.WriteJournal`)."""
        return RedisJournal(self.redis, job_state_key(job_id), self.acks)


def _run_state(raw: list[Any]) -> RunState | None:
    """A begin_run answer as a `RunState`; None for any other answer."""
    if raw[0] != "counted":
        return None
    return RunState(
        attempts=int(raw[1]),
        clean_ends=int(raw[2]),
        halo_requests=float(raw[3]),
        first_started_s=float(raw[4]),
        submitted_at=str(raw[5]),
    )


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
        self.rider(changed_fields).write()

    def rider(self, changed_fields: list[str]) -> DurableField:
        """The note of `note`, unwritten: for the POST's budget grant to write in the same
        call, and wait for the same replicas (`worker.journal.noted_before_post`)."""
        return DurableField(
            self._redis,
            self._key,
            "journal",
            json.dumps(changed_fields),
            self._acks,
            f"the write journal of {self._key}",
        )
