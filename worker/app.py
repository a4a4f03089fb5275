"""The Celery app: configuration and signal hooks. The only module wired at import time.

`celery -A worker.app worker` runs a worker; `celery -A worker.app flower` runs Flower.

Delivery is at-least-once over Redis, made exactly-once per job by `worker.runner`. The
settings below are chosen against the traps of the kombu Redis transport (kombu 5.7.0,
`kombu/transport/redis.py`):

- Late acks: a message stays in the transport's "unacked" hash until its job has a record or
  is deferred, so a worker killed mid-job does not lose it.
- That hash is only put back on the queue by `QoS.restore_visible`, for messages older than
  `visibility_timeout`, and only by a running worker, every ``unacked_restore_interval *
  unacked_restore_throttle`` seconds (10 x 10 by default). We scan every 5 s, so a job
  stranded by a SIGKILL runs again within `visibility_timeout` + 5 s.
- Nothing is ever scheduled with a countdown or ETA (retries park in `halo:deferred`, see
  `worker.deferrals`), so no delayed message can outlive the visibility timeout and be
  delivered again in a loop. `Settings` checks that a job's deadline fits inside it.
- `task_reject_on_worker_lost` requeues a job whose pool child died (prefork); the runner also
  counts runs that never ended and fails a job after `max_deliveries` of them, so a job that
  kills its worker cannot loop forever.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery, signals

from worker import logs
from worker.deferrals import start_mover, stop_mover
from worker.models import QUEUE, TASK_NAME, redacted_view
from worker.runtime import runtime
from worker.settings import get_settings

settings = get_settings()

app = Celery("halo", include=["worker.tasks"])
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    broker_transport_options={
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "health_check_interval": 10,
    },
    # kombu turns certificate checks off for a rediss:// broker given no SSL options.
    broker_use_ssl=(
        {"ssl_cert_reqs": ssl.CERT_REQUIRED} if settings.broker_url.startswith("rediss") else None
    ),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    task_default_queue=QUEUE,
    task_routes={TASK_NAME: {"queue": QUEUE}},
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # On SIGTERM, running jobs get this long to finish before the worker stops and their
    # unfinished messages return to the queue. Orchestrators must wait longer (compose
    # stop_grace_period, Kubernetes terminationGracePeriodSeconds).
    worker_soft_shutdown_timeout=min(settings.job_deadline_s, 60.0),
    worker_enable_soft_shutdown_on_idle=True,
    # Halo calls are I/O: threads keep hundreds of requests in flight in one process.
    worker_pool="threads",
    worker_concurrency=settings.worker_concurrency,
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
)


@signals.setup_logging.connect
def _json_logging(**_: Any) -> None:
    logs.configure(settings.log_level)


def publish_job(job_id: str, job: Any, submitted_at: str | None) -> None:
    """Put a job (back) on the queue; events and Flower see only its redacted view."""
    app.send_task(
        TASK_NAME,
        args=[job],
        kwargs={"submitted_at": submitted_at} if submitted_at else {},
        task_id=job_id,
        queue=QUEUE,
        argsrepr=redacted_view(job if isinstance(job, dict) else {}),
        kwargsrepr="{}",
    )


@signals.worker_init.connect
def _build_runtime(**_: Any) -> None:
    # Fail at start, naming the connection and key, rather than on every job.
    runtime()


@signals.worker_ready.connect
def _start_background(**_: Any) -> None:
    start_mover(runtime().store, publish_job)


@signals.worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    stop_mover()
