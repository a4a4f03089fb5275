"""The Celery task: payload in, one call to the runner out. All policy lives in the runner."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import redis
from billiard.einfo import ExceptionInfo
from celery import Task, signals
from celery.exceptions import Reject
from celery.worker.request import Request
from kombu.exceptions import OperationalError

from worker.app import app, publish_job
from worker.backlog import Parked
from worker.batch import of_other_connections, run_batch
from worker.celeryconfig import BATCH_TASK_NAME
from worker.liveness import CANARY_TASK_NAME, canary_ran
from worker.models import TASK_NAME, ResultRecord, redacted_fields
from worker.outcomes import (
    DeliveryNotes,
    JobFailed,
    JobWaiting,
    announce_batch_jobs,
    batch_summary,
    conclude,
)
from worker.runner import RunResult, job_id_of
from worker.runtime import runtime

log = logging.getLogger("halo.tasks")

# While the result store is unreachable a delivery is handed back to the broker; this pause
# keeps a worker from spinning on the same message until Redis returns.
_STORE_DOWN_PAUSE_S = 1.0
# Keyword arguments whose values are ids, counts or times: shown when they look like one (a
# hand-made message may put anything there). Any other key shows by name only; a job passed
# as `job=` shows as its redacted view.
_SHOWN_KWARGS = {
    "submitted_at": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$"),
    "reservation": re.compile(r"^[A-Za-z0-9._:-]{1,64}$"),
    "prepaid": None,  # a number only
}
_SHOWN_KEY_CHARS = 64

# What each task's jobs became, for the state Flower shows (see `worker.outcomes`).
notes = DeliveryNotes()


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
        self._kwargsrepr = _shown_kwargs(self.kwargs)
        # Celery's own log lines (succeeded, retry, raised) read these from the request.
        self.request_dict["argsrepr"] = self._argsrepr
        self.request_dict["kwargsrepr"] = self._kwargsrepr

    def info(self, safe: bool = False) -> Any:
        del safe
        return super().info(safe=True)

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        # A job's failure or wait is an outcome, not a crash: its event carries no traceback
        # (it would only point at the line of `worker.outcomes` that reports it). Flower hides
        # a None traceback; `on_retry` sends `safe_str` of it, so a wait gets "" instead.
        exc = exc_info.exception
        # On the retry path billiard's `ExceptionWithTraceback` wraps it (in `.exc`).
        outcome = exc if isinstance(exc, JobFailed | JobWaiting) else getattr(exc, "exc", None)
        if isinstance(outcome, JobFailed):
            exc_info.traceback = None
        elif isinstance(outcome, JobWaiting):
            exc_info.traceback = ""
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def _mapping(value: Any) -> dict[str, Any]:
    # A malformed batch message may carry anything as a job; showing it must not fail.
    return value if isinstance(value, dict) else {}


def _shown_kwargs(kwargs: Any) -> str:
    if not isinstance(kwargs, dict):
        return ""
    shown: dict[str, Any] = {}
    for key, value in sorted(kwargs.items(), key=lambda item: str(item[0])):
        if key == "job":
            shown[key] = redacted_fields(_mapping(value))
        elif key in _SHOWN_KWARGS and (value is None or isinstance(value, int | float)):
            shown[key] = value if abs(value or 0) < 2**53 else "<not shown>"
        elif (
            isinstance(value, str) and (pattern := _SHOWN_KWARGS.get(key)) and pattern.match(value)
        ):
            shown[key] = value
        else:
            shown[str(key)[:_SHOWN_KEY_CHARS]] = "<not shown>"
    return json.dumps(shown)[:4096]


class _OutcomesWithoutTraceback(logging.Filter):
    """Celery logs an exception listed in `throws` at INFO without `exc_info`, but still
    puts its traceback in the line's `data` (`celery/app/trace.py` `_log_error`): a failed job
    is an outcome, not a crash, so that traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and data.get("description") == "raised expected":
            record.data = {k: v for k, v in data.items() if k != "traceback"}
        return True


@signals.worker_init.connect
def _watch_deliveries(**_: Any) -> None:
    runtime().runner.observers.append(notes)
    logging.getLogger("celery.app.trace").addFilter(_OutcomesWithoutTraceback())


@app.task(name=TASK_NAME, bind=True, Request=RedactingRequest, throws=(JobFailed,))
def update_ticket(self: Task[Any, Any], *args: Any, **kwargs: Any) -> str:
    """Run one delivery of an Update Halo Ticket job.

    Called as ``update_ticket(job, submitted_at=...)``. Any other argument shape is recorded as
    `invalid_job` under the task id, never retried. Returns what became of the job, for
    Flower (``recorded: succeeded; changed status``); the record itself is in the result store.

    Raises:
        JobFailed: the job's record says it failed (Flower shows FAILURE; the message is acked).
        JobWaiting: the job was deferred, parked or is held elsewhere (Flower shows RETRY;
            the message is acked and nothing is published: the job comes back by itself).
        Reject: the result store is unreachable; the message goes back to the broker.
    """
    runner = runtime().runner
    task_id = str(self.request.id)
    submitted_at = kwargs.get("submitted_at")
    # A timestamp (ISO 8601): anything else from a hand-made message is ignored, not recorded.
    timestamp = isinstance(submitted_at, str) and submitted_at.isascii() and len(submitted_at) < 64
    submitted_at = submitted_at if timestamp else None
    payload: Any = None
    try:
        with notes.watch() as seen:
            if len(args) == 1 and set(kwargs) <= {"submitted_at"}:
                payload = args[0]
                result = runner.run(payload, task_id=task_id, submitted_at=submitted_at)
            elif not args and "job" in kwargs and set(kwargs) <= {"job", "submitted_at"}:
                payload = kwargs["job"]
                result = runner.run(payload, task_id=task_id, submitted_at=submitted_at)
            else:
                shape = f"got {len(args)} positional argument(s) and keys {sorted(kwargs)}"
                result = runner.reject_malformed(task_id, shape)
        duplicate = result is RunResult.DUPLICATE
        stored = runner.store.records.get(job_id_of(payload, task_id)) if duplicate else None
        return conclude(result, seen, stored)
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
) -> str:
    """Run a batch released from a connection's backlog; returns its jobs counted by outcome
    (``3 jobs: 2 succeeded, 1 failed (ticket_not_found/stop_all: 1)``), for Flower.

    Published by the worker's own dispatcher only (see `worker.dispatcher`), with the budget it
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
    foreign = of_other_connections(connection, parked)
    for member in foreign:
        log.warning(
            "batch member names another connection; sent on as a single job",
            extra={"job_id": member.job_id, "batch_connection": connection},
        )
        publish_job(member.job_id, member.job, member.submitted_at)
    parked = [p for p in parked if p not in foreign]
    try:
        with notes.watch() as seen:
            run_batch(current.runner, connection, parked, prepaid)
        _announce(self, seen.records)
        return batch_summary(len(parked), seen)
    except redis.RedisError as exc:
        log.warning(
            "result store unreachable; batch handed back to the broker",
            extra={"task_id": str(self.request.id), "error": type(exc).__name__},
        )
        time.sleep(_STORE_DOWN_PAUSE_S)
        raise Reject(f"result store unreachable ({type(exc).__name__})", requeue=True) from None


def _announce(task: Task[Any, Any], records: list[ResultRecord]) -> None:
    """Send the batch's per-job events (`worker.outcomes.announce_batch_jobs`), best effort:
    the records are written, and only Flower's view is at stake."""
    if not records:
        return
    try:
        with task.app.events.default_dispatcher(hostname=task.request.hostname) as dispatcher:
            announce_batch_jobs(dispatcher.send, str(task.request.id), records)
    except (OSError, OperationalError, redis.RedisError) as exc:
        log.warning(
            "could not tell Flower how a batch's jobs ended",
            extra={"task_id": str(task.request.id), "error": type(exc).__name__},
        )


@app.task(name=CANARY_TASK_NAME, ignore_result=True)
def canary(sent_at: float) -> None:
    """Stamp the heartbeat: this worker consumed its own canary (see `worker.liveness`)."""
    canary_ran(sent_at)
