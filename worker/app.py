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
- `task_reject_on_worker_lost` requeues a job whose pool child died (prefork; the threads
  pool has no children). The runner counts runs that never ended and fails a job after
  `max_deliveries` of them, so a job that kills its worker cannot loop forever.
- After a broker reconnect, kombu puts the messages of jobs still running back on the queue,
  so a job can be delivered again while it runs; the runner's claim makes that run a no-op.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Celery, signals

from worker import fleet, heap, liveness, logs, metrics, sentry, transport
from worker.backlog import Parked
from worker.celeryconfig import RETIRED_BATCH_QUEUE, celery_config
from worker.connections import ConnectionsError
from worker.deferrals import every, move_due, redeliver_lost, start_mover, stop_mover
from worker.dispatcher import Dispatcher
from worker.keys import BACKLOG_JOBS, TICKET_WAITING
from worker.learned import Learned
from worker.models import QUEUE
from worker.publishing import send_batch, send_job
from worker.redisconn import RedisOptions, warn_if_insecure
from worker.runtime import redis_client, runtime
from worker.settings import get_settings

settings = get_settings()
_LOST_SCAN_S = 5.0
# Tickets whose holder died are handed on within a second of the hold's lease ending.
_TICKET_REAP_S = 1.0

# Queue items that are no task message go to the dead-letter list instead of killing the
# worker: kombu's Redis transport, checked (worker.transport).
transport.install()

# Every task takes its messages through a guard against malformed ones (worker.strategy).
app = Celery("halo", include=["worker.tasks"], task_cls="worker.strategy:GuardedTask")
app.conf.update(celery_config(settings))
# Workers and Flower both import this module: each says so when Redis TLS is not verified.
warn_if_insecure(
    RedisOptions.from_settings(settings), settings.broker_url, settings.result_url or ""
)


@signals.setup_logging.connect
def _json_logging(**_: Any) -> None:
    logs.configure(settings.log_level)


def publish_job(job_id: str, job: Any, submitted_at: str | None) -> None:
    """Put a job (back) on the queue (`worker.publishing`)."""
    send_job(app, job_id, job, submitted_at)


def publish_batch(
    connection: str, parked: list[Parked], prepaid: int, reservation: str | None
) -> None:
    """Put a released backlog batch on the queue, with the budget granted for it."""
    jobs = [{"job_id": p.job_id, "job": p.job, "submitted_at": p.submitted_at} for p in parked]
    send_batch(app, connection, jobs, prepaid=prepaid, reservation=reservation)


@signals.worker_init.connect
def _build_runtime(sender: Any, **_: Any) -> None:
    # Fail at start, naming what to fix, rather than strand or fail every job: a worker that
    # would not consume `halo` (worker.fleet), or a connection that cannot load.
    fleet.require_home_queue(set(sender.app.amqp.queues.consume_from))
    try:
        runtime()
    except ConnectionsError as exc:
        # Celery logs and ignores an Exception raised by a signal handler, and the worker
        # would start and fail every job; SystemExit is let through and stops it.
        raise SystemExit(f"the worker cannot start: {exc}") from None


@signals.worker_ready.connect
def _start_background(**_: Any) -> None:
    current = runtime()
    dispatcher = Dispatcher(
        current.backlogs,
        current.governor,
        current.clients.connections,
        publish_batch,
        batch_max=current.settings.batch_max,
        learned=Learned(current.redis),
    )
    # The broker's own Redis, when the result store is another server (HALO_RESULT_URL).
    separate_broker = current.settings.broker_url != current.settings.results_redis_url
    broker = (
        redis_client(current.settings.broker_url, current.settings)
        if separate_broker
        else current.redis
    )
    # A job silent for longer than a stranded message and a dead worker's claim take to
    # come back was lost by the broker (see DeferredJobs.take_lost).
    redeliver = partial(
        redeliver_lost,
        current.store,
        publish_job,
        quiet_s=current.tickets.quiet_s,
        waiting=(BACKLOG_JOBS, TICKET_WAITING),
        queues=(QUEUE, RETIRED_BATCH_QUEUE),
        broker=broker if separate_broker else None,
    )
    # Lost jobs are looked for every few seconds: they are found minutes after going quiet.
    lost = every(_LOST_SCAN_S, redeliver)
    reap = every(_TICKET_REAP_S, current.tickets.reap)
    retired = every(_LOST_SCAN_S, partial(fleet.drain_retired_queue, broker))
    start_mover(
        [partial(move_due, current.store, publish_job), dispatcher.dispatch, lost, reap, retired]
    )


@signals.worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    stop_mover()


@signals.worker_ready.connect
def _freeze_startup_heap(**_: Any) -> None:
    # Start-up's objects leave the cyclic collector's work, so that the garbage deliveries
    # leave is collected after dozens of them, not thousands (worker.heap).
    heap.freeze_startup()


# -- monitoring: Sentry (worker.sentry), metrics (worker.metrics), the canary (worker.liveness)


@signals.worker_init.connect
def _start_monitoring(sender: Any, **_: Any) -> None:
    # Connected after _build_runtime, so it runs after it.
    current = runtime()
    secrets = [c.client_secret.get_secret_value() for c in current.clients.connections.values()]
    reporter = sentry.init(current.settings, secrets)
    if reporter is not None:
        current.runner.observers.append(reporter)
    metrics.install(current)
    liveness.prepare(
        app,
        sender.hostname,
        current.settings,
        announce=partial(fleet.announce, current.store.redis, sender.hostname),
    )


@signals.task_prerun.connect
def _tag_task(task_id: str | None = None, args: Any = None, **_: Any) -> None:
    sentry.tag_task(task_id, args)


@signals.worker_ready.connect
def _start_canary(sender: Any, **_: Any) -> None:
    liveness.attach(sender)  # the Consumer: whose queues the canary reports
    liveness.start()


@signals.worker_shutting_down.connect
def _stop_canary(**_: Any) -> None:
    # From the signal handler: no canary is sent once consumers stop, and nothing waits here.
    liveness.stop(timeout_s=0)


@signals.worker_shutdown.connect
def _stop_monitoring(**_: Any) -> None:
    liveness.stop()
    sentry.flush()
