"""Jobs waiting to run again, kept in Redis instead of the broker, and the thread that moves
them back.

A retry could be a Celery countdown, but on Redis a countdown is a message held unacked by one
worker: if it outlives the visibility timeout it is delivered again, in a loop (Celery docs,
"Redis caveats"; kombu#337, celery#4400), and the wait holds a prefetch slot. So a job that
must wait is parked in the sorted set `halo:deferred`, scored by when it is due, and its
message is acked. A lease (not a removal) covers a mover that dies between taking and
publishing: the job is taken again when the lease ends. A job published twice that way runs
once: the runner's claim and record check make the second a no-op.

The same thread is the safety net under the broker: an accepted job that has had no sign of
life for too long (no record, no run, no deferral, no backlog or ticket wait) is published again
(`redeliver_lost`, see `DeferredJobs.take_lost`).

Every worker runs one `Mover` thread, which also drives the backlog dispatcher
(`worker.backlog`) and hands on tickets whose holder died (`worker.tickets`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from worker.deferred import DueJob
from worker.results import ResultStore

log = logging.getLogger("halo.deferrals")

_POLL_S: Final = 0.1
_BATCH: Final = 500
# Publishing a batch takes milliseconds; a lease this long is only ever reached by a mover
# that died mid-batch.
_LEASE_S: Final = 30.0

Publish = Callable[[str, Any, str | None], None]


def move_due(store: ResultStore, publish: Publish) -> int:
    """Publish every deferred job that is due now; returns how many were published."""
    moved = 0
    while batch := store.deferred.take_due(limit=_BATCH, lease_s=_LEASE_S):
        for due in batch:
            _move(store, publish, due)
            moved += 1
        if len(batch) < _BATCH:
            break
    return moved


def redeliver_lost(
    store: ResultStore,
    publish: Publish,
    *,
    quiet_s: float,
    waiting: Sequence[str],
    queues: Sequence[str],
    broker: redis.Redis | None = None,
) -> int:
    """Publish again every accepted job whose message the broker lost; returns how many.

    `quiet_s` must outlast the slowest legitimate silence: a message stranded by a dead
    worker (the visibility timeout) and that worker's claim (the runner's lease). `waiting`
    names the hashes (keyed by job_id) of jobs waiting without a message: the backlog's
    payloads, the jobs waiting for their ticket. Nothing is published while a job queue
    (`queues`) holds messages: a quiet job may be waiting there.

    `broker` is the broker's Redis when it is not the result store's (`HALO_RESULT_URL` set
    to another server): the queues are then looked at there, before the result store is
    asked, not in the same script. A message taken off the queue between the two would at
    worst be run twice, and its claim makes the second run a no-op.
    """
    if broker is not None:
        if any(broker.llen(queue) for queue in queues):
            return 0
        queues = ()
    lost = store.deferred.take_lost(quiet_s=quiet_s, limit=_BATCH, waiting=waiting, queues=queues)
    for due in lost:
        job = due.payload.get("job")
        submitted_at = due.payload.get("submitted_at")
        if job is None:
            continue
        log.warning(
            "job had no record, run, deferral or waiting place for %.0f s; published again",
            quiet_s,
            extra={"job_id": due.job_id},
        )
        publish(due.job_id, job, submitted_at if isinstance(submitted_at, str) else None)
    return len(lost)


def every(interval_s: float, step: Callable[[], int]) -> Callable[[], int]:
    """A mover step that does its work at most once per `interval_s` (the mover ticks far more
    often, for the steps that must react quickly)."""
    next_s = 0.0

    def throttled() -> int:
        nonlocal next_s
        now_s = time.monotonic()
        if now_s < next_s:
            return 0
        next_s = now_s + interval_s
        return step()

    return throttled


def _move(store: ResultStore, publish: Publish, due: DueJob) -> None:
    job = due.payload.get("job")
    submitted_at = due.payload.get("submitted_at")
    if job is None:
        log.error("deferred job has no payload; dropped", extra={"job_id": due.job_id})
    else:
        publish(due.job_id, job, submitted_at if isinstance(submitted_at, str) else None)
    store.deferred.release_moved(due)


class Mover:
    """A background thread running `steps` (each returns how much it moved) until stopped."""

    def __init__(self, steps: Sequence[Callable[[], int]]) -> None:
        self._steps = list(steps)
        self.last_round_s: float | None = None  # time.monotonic() when a round last finished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="halo-mover", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        self._thread.join(timeout_s)

    def run_once(self) -> int:
        """One round of every step."""
        moved = sum(step() for step in self._steps)
        self.last_round_s = time.monotonic()
        return moved

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except redis.RedisError as exc:
                log.warning("mover paused: Redis unreachable (%s)", type(exc).__name__)
                self._stop.wait(1.0)
            except Exception:  # the thread must outlive any one failure
                log.exception("mover round failed; retrying")
                self._stop.wait(1.0)
            self._stop.wait(_POLL_S)


_mover: Mover | None = None


def start_mover(steps: Sequence[Callable[[], int]]) -> None:
    """Start this process's mover (at worker start)."""
    global _mover  # noqa: PLW0603 - one mover per worker process.
    if _mover is None:
        _mover = Mover(steps)
        _mover.start()


def mover_age_s() -> float | None:
    """Seconds since this process's mover last finished a round; None before the first (or
    where no mover runs)."""
    if _mover is None or _mover.last_round_s is None:
        return None
    return time.monotonic() - _mover.last_round_s


def stop_mover() -> None:
    """Stop this process's mover (at worker shutdown)."""
    if _mover is not None:
        _mover.stop()
