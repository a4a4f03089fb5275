"""Jobs waiting to run again, kept in Redis instead of the broker.

A retry or a wait for rate budget could be a Celery countdown, but on Redis a countdown is a
message held unacked by one worker: if it outlives the visibility timeout it is delivered
again, in a loop (Celery docs, "Redis caveats"; kombu#337, celery#4400), and the wait holds a
prefetch slot. So a job that must wait is parked in the sorted set `halo:deferred`, scored by
when it is due, and its message is acked. Every worker runs a mover thread that leases due
jobs and publishes them back to the queue. A lease (not a removal) covers a mover that dies
between taking and publishing: the job is taken again when the lease ends. A job published
twice that way runs once: the runner's claim and record check make the second a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import redis

from worker.results import DueJob, ResultStore

log = logging.getLogger("halo.deferrals")

_POLL_S: Final = 0.2
_BATCH: Final = 500
# Publishing a batch takes milliseconds; a lease this long is only ever reached by a mover
# that died mid-batch.
_LEASE_S: Final = 30.0


class DeferredMover:
    """Moves due jobs from `halo:deferred` back to the queue, until stopped."""

    def __init__(
        self, store: ResultStore, publish: Callable[[str, dict[str, Any], str | None], None]
    ) -> None:
        self._store = store
        self._publish = publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="halo-deferred-mover", daemon=True)

    def start(self) -> None:
        """Start the mover thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current batch."""
        self._stop.set()
        self._thread.join(timeout_s)

    def move_due(self) -> int:
        """Publish every job due now; returns how many were published."""
        moved = 0
        while batch := self._store.take_due(limit=_BATCH, lease_s=_LEASE_S):
            for due in batch:
                self._move(due)
                moved += 1
            if len(batch) < _BATCH:
                break
        return moved

    def _move(self, due: DueJob) -> None:
        job = due.payload.get("job")
        submitted_at = due.payload.get("submitted_at")
        if job is None:
            log.error("deferred job has no payload; dropped", extra={"job_id": due.job_id})
        else:
            self._publish(due.job_id, job, submitted_at if isinstance(submitted_at, str) else None)
        self._store.release_moved(due)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.move_due()
            except redis.RedisError as exc:
                log.warning("deferred jobs not moved: %s", type(exc).__name__)
                self._stop.wait(1.0)
            except Exception:  # the thread must outlive any one failure
                log.exception("deferred mover failed; retrying")
                self._stop.wait(1.0)
            self._stop.wait(_POLL_S)


_mover: DeferredMover | None = None


def start_mover(
    store: ResultStore, publish: Callable[[str, dict[str, Any], str | None], None]
) -> None:
    """Start this process's mover (at worker start)."""
    global _mover  # noqa: PLW0603 - one mover per worker process.
    if _mover is None:
        _mover = DeferredMover(store, publish)
        _mover.start()


def stop_mover() -> None:
    """Stop this process's mover (at worker shutdown)."""
    if _mover is not None:
        _mover.stop()
