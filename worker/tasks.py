"""The Celery task: payload in, one call to the runner out. All policy lives in the runner."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from worker.app import app
from worker.models import TASK_NAME
from worker.runtime import runtime

log = logging.getLogger("halo.tasks")

# While the result store is unreachable a delivery is handed back to the broker; this pause
# keeps a worker from spinning on the same message until Redis returns.
_STORE_DOWN_PAUSE_S = 1.0


@app.task(name=TASK_NAME, bind=True)
def update_ticket(self: Task[Any, Any], *args: Any, **kwargs: Any) -> str:
    """Run one delivery of an Update Halo Ticket job.

    Called as ``update_ticket(job, submitted_at=...)``. Any other argument shape is recorded as
    `invalid_job` under the task id, never retried. Returns what became of the delivery
    (recorded, deferred, duplicate, busy): the record itself is in the result store.
    """
    runner = runtime().runner
    task_id = str(self.request.id)
    submitted_at = kwargs.get("submitted_at")
    submitted_at = submitted_at if isinstance(submitted_at, str) else None
    try:
        if len(args) == 1 and set(kwargs) <= {"submitted_at"}:
            return runner.run(args[0], task_id=task_id, submitted_at=submitted_at).value
        if not args and "job" in kwargs and set(kwargs) <= {"job", "submitted_at"}:
            return runner.run(kwargs["job"], task_id=task_id, submitted_at=submitted_at).value
        shape = f"got {len(args)} positional argument(s) and keys {sorted(kwargs)}"
        return runner.reject_malformed(task_id, shape).value
    except redis.RedisError as exc:
        log.warning(
            "result store unreachable; delivery handed back to the broker",
            extra={"job_id": task_id, "error": type(exc).__name__},
        )
        time.sleep(_STORE_DOWN_PAUSE_S)
        raise Reject(f"result store unreachable ({type(exc).__name__})", requeue=True) from None
