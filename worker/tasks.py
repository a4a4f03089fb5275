"""The Celery task: payload in, one call to the runner out. All policy lives in the runner."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject
from celery.worker.request import Request

from worker.app import app
from worker.backlog import Parked
from worker.batch import run_batch
from worker.celeryconfig import BATCH_TASK_NAME
from worker.liveness import CANARY_TASK_NAME, canary_ran
from worker.models import TASK_NAME, redacted_fields
from worker.runtime import runtime

log = logging.getLogger("halo.tasks")

# While the result store is unreachable a delivery is handed back to the broker; this pause
# keeps a worker from spinning on the same message until Redis returns.
_STORE_DOWN_PAUSE_S = 1.0


class RedactingRequest(Request):
    """A task request that shows events, logs, Flower and `celery inspect` only a job's
    redacted view, whoever published it.

    Producers set `argsrepr`, but a message published without one would show its real
    arguments (`saferepr`), and `inspect reserved` shows real arguments regardless
    (`Request.info(safe=False)`): both would put email content in Flower.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        payloads = self.args if isinstance(self.args, list | tuple) else []
        shown = [redacted_fields(p) for p in payloads if isinstance(p, dict)]
        jobs = [j for p in payloads if isinstance(p, list) for j in p if isinstance(j, dict)]
        shown += [redacted_fields(_mapping(j.get("job"))) for j in jobs]
        self._argsrepr = json.dumps(shown)[:4096]
        self._kwargsrepr = json.dumps(sorted(self.kwargs)) if isinstance(self.kwargs, dict) else ""
        # Celery's own log lines of a task's end ("Task ... succeeded", failures; the `data`
        # field of our JSON logs) read the reprs from the request dict, a copy of the message
        # headers: a producer that set none (celery-node, a raw push) or set Python's repr of
        # the job (plain Celery) would put the job's content in every worker's log.
        self.request_dict["argsrepr"] = self._argsrepr
        self.request_dict["kwargsrepr"] = self._kwargsrepr

    def info(self, safe: bool = False) -> Any:
        del safe
        return super().info(safe=True)


def _mapping(value: Any) -> dict[str, Any]:
    # A malformed batch message may carry anything as a job; showing it must not fail.
    return value if isinstance(value, dict) else {}


@app.task(name=TASK_NAME, bind=True, Request=RedactingRequest)
def update_ticket(self: Task[Any, Any], *args: Any, **kwargs: Any) -> str:
    """Run one delivery of an Update Halo Ticket job.

    Called as ``update_ticket(job, submitted_at=...)``. Any other argument shape is recorded as
    `invalid_job` under the task id, never retried. Returns what became of the delivery
    (recorded, deferred, duplicate, busy): the record itself is in the result store.
    """
    runner = runtime().runner
    task_id = str(self.request.id)
    submitted_at = kwargs.get("submitted_at")
    # A timestamp (ISO 8601): anything else from a hand-made message is ignored, not recorded.
    timestamp = isinstance(submitted_at, str) and submitted_at.isascii() and len(submitted_at) < 64
    submitted_at = submitted_at if timestamp else None
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


@app.task(name=BATCH_TASK_NAME, bind=True, Request=RedactingRequest)
def update_batch(
    self: Task[Any, Any],
    connection: str,
    jobs: list[dict[str, Any]],
    prepaid: int = 0,
    reservation: str | None = None,
) -> int:
    """Run a batch released from a connection's backlog; returns how many jobs it recorded.

    Published by the worker's own dispatcher only (see `worker.backlog`), with the budget it
    was granted: spent now, as the batch sends, and never twice (a redelivered batch, whose
    first delivery may have sent, takes budget afresh).
    """
    current = runtime()
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if redelivered or not reservation or connection not in current.clients.connections:
        prepaid = 0
    else:
        conn = current.clients.connections[connection]
        prepaid = current.governor.use_reservation(conn, reservation, prepaid)
    parked = [
        Parked(str(j["job_id"]), j.get("job"), j.get("submitted_at"))
        for j in jobs
        if isinstance(j, dict) and isinstance(j.get("job_id"), str)
    ]
    try:
        return run_batch(current.runner, connection, parked, prepaid)
    except redis.RedisError as exc:
        log.warning(
            "result store unreachable; batch handed back to the broker",
            extra={"task_id": str(self.request.id), "error": type(exc).__name__},
        )
        time.sleep(_STORE_DOWN_PAUSE_S)
        raise Reject(f"result store unreachable ({type(exc).__name__})", requeue=True) from None


@app.task(name=CANARY_TASK_NAME, ignore_result=True)
def canary(sent_at: float) -> None:
    """Stamp the heartbeat: this worker consumed its own canary (see `worker.liveness`)."""
    canary_ran(sent_at)
