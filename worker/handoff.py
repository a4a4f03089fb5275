"""What this project's producer and the workers leave each other in the result store.

The wire contract (docs/contract.md) is the job, its record under `halo:result:<job_id>` and the
completion feed `halo:results`: a producer in any language needs nothing more. The Python
producer (`producers`) does two things more, and the workers answer to both; this module is
their one definition, for the producer's side and the worker's:

- The safety net. An accepted job is noted in `halo:unfinished` (scored by when it was last
  seen on its way, in ms) with its payload in `halo:unfinished:jobs`, until it has a record. A
  worker publishes a job that stays quiet there too long again: the broker lost its message
  (`worker.deferred.DeferredJobs.take_lost` reads these keys; the record write in
  `worker.records` removes the job from them).
- The wake-up. The script that writes a record pushes onto `halo:notify:<job_id>`, so that a
  producer waiting for one job's record blocks on that list instead of polling.

The keys are named in `worker.keys`. This module imports only redis and those names, so a
producer gets it without the worker's HTTP client, Celery tasks or job runner.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from worker.keys import UNFINISHED, UNFINISHED_JOBS, notify_key, result_key
from worker.replication import ReplicaAcks

# KEYS: unfinished, unfinished jobs. ARGV: job_id, payload, result key
# Redis's clock, not the producer's: the worker compares the score with Redis's clock too. The
# record is only read, so its key is an argument: Redis ACLs count a script's declared keys as
# written, and a producer (who runs this) may read records but never write one.
_TRACK = """
if redis.call('EXISTS', ARGV[3]) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
           ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def track(
    client: redis.Redis, job_id: str, payload: dict[str, Any], acks: ReplicaAcks | None = None
) -> None:
    """Remember an accepted job until it has a record (a no-op once it has one).

    Kombu's Redis transport pops a message (BRPOP) before it records it as unacked, so a worker
    killed between the two loses the message for good; so can a Redis that lost its data. A
    job tracked here is published again if that happens. Idempotent: tracking a job again keeps
    its first entry.

    Args:
        client: the result store (`HALO_RESULT_URL`).
        job_id: the job's id.
        payload: ``{"job": <the job as submitted>, "submitted_at": <ISO 8601>}``, what a
            worker publishes again.

        acks: the replicas the entry must reach (`worker.replication`; default none).

    Raises:
        redis.RedisError: the result store is unreachable.
        NotReplicated: the replicas required did not confirm the entry (nor, since they apply
            writes in order, the job's earlier push on the queue).
    """
    script = client.register_script(_TRACK)
    (acks or ReplicaAcks()).write(
        client,
        f"the tracking entry of job {job_id}",
        lambda pipe: script(
            keys=[UNFINISHED, UNFINISHED_JOBS],
            args=[job_id, json.dumps(payload), result_key(job_id)],
            client=pipe,
        ),
    )


def read_record(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """A job's record, or None while it has none."""
    raw = client.get(result_key(job_id))
    return json.loads(raw) if raw else None


def wait_for_record(client: redis.Redis, job_id: str, timeout_s: float) -> dict[str, Any] | None:
    """Block until a job's record exists, or `timeout_s` passes; no polling.

    Uses its own connection for the blocking pop, so the shared pool's socket timeouts do not
    cut it short.

    Args:
        client: the result store, with decoded responses.

    Raises:
        redis.RedisError: the result store is unreachable.
    """
    deadline = time.monotonic() + timeout_s
    record = read_record(client, job_id)
    if record is not None or timeout_s <= 0:
        return record
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
    blocking_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    # `from_pool`: closing the client disconnects the pool, rather than leaving its socket to
    # the garbage collector (which warns of it as unclosed).
    with redis.Redis.from_pool(blocking_pool) as blocking:
        while record is None:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return None
            popped = blocking.blpop([notify_key(job_id)], timeout=max(remaining_s, 0.01))
            if popped:
                # Put the wake-up back for any other waiter on the same job.
                blocking.rpush(notify_key(job_id), "1")
            record = read_record(client, job_id)
    return record
