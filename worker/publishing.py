"""How a job goes on the queue: the one path for the producer and the worker's republishing.

A job message is the task `TASK_NAME` on `QUEUE` with the job as its only argument, its
`job_id` as the task id (so a job published twice is still one job: the runner's claim is by
job_id), and `submitted_at` as the only keyword. Celery's events, Flower and `celery inspect`
show a message's `argsrepr`/`kwargsrepr` instead of its arguments; here they are the job's
redacted view (ids and the ticket id template, never variables, details or meta) and the
keywords, which hold no job content. The liveness canary is not a job and is sent by
`worker.liveness`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from celery import Celery

from worker.celeryconfig import BATCH_TASK_NAME
from worker.models import QUEUE, TASK_NAME, redacted_fields, redacted_view

# Celery puts argsrepr in the message headers; a batch of many jobs must not make them large.
_MAX_BATCH_REPR_CHARS: Final = 4096


def send_job(
    app: Celery, job_id: str, job: Any, submitted_at: str | None, *, retry: bool | None = None
) -> None:
    """Publish one job.

    Args:
        app: the Celery app whose broker takes the message.
        job_id: the job's id, used as the task id.
        job: the job as JSON (a dict for any job that validates; anything else is shown as
            an empty view and fails as invalid on the worker).
        submitted_at: when the producer accepted the job (ISO 8601), or None if unknown.
        retry: whether to retry an unreachable broker (Celery's `task_publish_retry`, with
            the app's `task_publish_retry_policy`); None keeps the app's default.

    Raises:
        What Celery raises when the broker cannot take the message (kombu's
        OperationalError, redis.RedisError, OSError).
    """
    kwargs = {"submitted_at": submitted_at} if submitted_at else {}
    app.send_task(
        TASK_NAME,
        args=[job],
        kwargs=kwargs,
        task_id=job_id,
        queue=QUEUE,
        argsrepr=redacted_view(job if isinstance(job, dict) else {}),
        # A time, nothing from the job.
        kwargsrepr=json.dumps(kwargs),
        retry=retry,
    )


def send_batch(
    app: Celery,
    connection: str,
    jobs: Sequence[Mapping[str, Any]],
    *,
    prepaid: int,
    reservation: str | None,
) -> None:
    """Publish a batch of jobs of one connection, with the Halo budget already granted for it.

    Args:
        app: the Celery app whose broker takes the message.
        connection: the connection every job names.
        jobs: ``{"job_id", "job", "submitted_at"}`` per job, as `send_job` takes them.
        prepaid: how many Halo requests the grant covers.
        reservation: the governor's reservation for that grant, or None.
    """
    shown = [redacted_fields(_mapping(entry.get("job"))) for entry in jobs]
    budget = {"prepaid": prepaid, "reservation": reservation}
    app.send_task(
        BATCH_TASK_NAME,
        args=[connection, list(jobs)],
        kwargs=budget,
        queue=QUEUE,
        argsrepr=json.dumps([connection, shown])[:_MAX_BATCH_REPR_CHARS],
        kwargsrepr=json.dumps(budget),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
