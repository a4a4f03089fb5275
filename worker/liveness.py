"""Liveness: proof that this worker still takes messages from the broker, not only that it runs.

Workers have been seen alive but no longer consuming after a Redis reconnect (celery#10205,
#10302; kombu 5.7.0 recovers, and `tests/integration/test_liveness.py` keeps it so). A process
check cannot see that. So every ``HALO_CANARY_INTERVAL_S`` the worker sends itself a canary
task on its own direct queue, ``<nodename>.dq2`` (the queue Celery's `worker_direct` setting
adds, `celery/worker/worker.py` `setup_queues`), and the canary's run stamps the heartbeat
file (`worker.heartbeat`). The stamp's age covers the path a job takes: the broker, the
consumer and a pool thread. `halo-jobs health --worker` reads it.

Each canary run also writes into the heartbeat the queues this worker consumes at that moment
and the age of its mover's last round (`worker.deferrals`), and announces the queues in Redis
for the fleet's health check (`worker.fleet`): a worker whose `halo` consumer was cancelled at
run time still runs canaries, but is not healthy.

The direct queue keeps other workers from taking this one's canary. No canary is sent while
one is outstanding, unless it is three intervals old (lost with a Redis that kept no AOF), so
a worker that stops consuming leaves at most a few in its queue. A canary that waited past its
`expires` is dropped by Celery unrun; the next one proves consumption.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct
from kombu.exceptions import OperationalError

from worker import deferrals, heartbeat
from worker.settings import Settings

log = logging.getLogger("halo.liveness")

CANARY_TASK_NAME: Final = "halo.canary"
# An outstanding canary is sent again after this many intervals: it was lost, not late.
_RESEND_AFTER_INTERVALS: Final = 3


class Canary:
    """Sends canaries from a daemon thread, and stamps the heartbeat when one runs."""

    def __init__(
        self,
        publish: Callable[[float], None],
        *,
        interval_s: float,
        heartbeat_file: Path,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.heartbeat_file = heartbeat_file
        self._publish = publish
        self._announce = announce
        self._outstanding_s: float | None = None  # time.monotonic() of the unanswered send
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="halo-canary", daemon=True)

    def start(self) -> None:
        """Start sending canaries."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sending canaries; wait up to `timeout_s` for the thread to end."""
        self._stop.set()
        if timeout_s > 0 and self._thread.is_alive():
            self._thread.join(timeout_s)

    def tick(self) -> bool:
        """Send a canary unless one is outstanding; returns whether one was sent."""
        now_s = time.monotonic()
        with self._lock:
            outstanding = self._outstanding_s
        resend_s = _RESEND_AFTER_INTERVALS * self.interval_s
        if outstanding is not None and now_s - outstanding < resend_s:
            return False
        try:
            self._publish(time.time())
        except (OperationalError, redis.RedisError, OSError) as exc:
            log.warning("canary not sent: broker unreachable (%s)", type(exc).__name__)
            return False
        with self._lock:
            self._outstanding_s = now_s
        return True

    def ran(self) -> None:
        """A canary ran: this worker consumes. Stamp the heartbeat with what it consumes and
        how its mover fares, and announce its queues to the fleet."""
        with self._lock:
            self._outstanding_s = None
        queues = consumed_queues()
        detail = heartbeat.Detail(queues, deferrals.mover_age_s())
        stamp_heartbeat(self.heartbeat_file, detail)
        if self._announce is not None:
            try:
                self._announce(queues)
            except redis.RedisError as exc:
                log.warning("queues not announced: Redis unreachable (%s)", type(exc).__name__)

    def _loop(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.interval_s):
                return


def stamp_heartbeat(path: Path, detail: heartbeat.Detail | None = None) -> None:
    """Stamp the heartbeat file; a failure is logged (the health check will then fail)."""
    try:
        heartbeat.stamp(path, detail=detail)
    except OSError as exc:
        # Not log.exception: the reason is the whole story, a traceback adds nothing.
        log.error("cannot write the heartbeat file %s: %s", path, exc.strerror or exc)  # noqa: TRY400


class _QuietCanaries(logging.Filter):
    """Drops Celery's per-task lines ("received", "succeeded") about canaries: a pair every
    few seconds from every worker would drown the job lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        return not (isinstance(data, dict) and data.get("name") == CANARY_TASK_NAME)


_canary: Canary | None = None
# The worker's consumer (Celery's `Consumer` blueprint), once it is ready.
_consumer: Any = None


def attach(consumer: Any) -> None:
    """At worker ready: remember the consumer, whose queues the canary reports."""
    global _consumer  # noqa: PLW0603 - one consumer per worker process.
    _consumer = consumer


def consumed_queues() -> list[str]:
    """The queues this worker consumes now (add_consumer / cancel_consumer included)."""
    task_consumer = getattr(_consumer, "task_consumer", None)
    if task_consumer is None:
        return []
    # Read from a pool thread while the consumer thread may change it: a copy of a list of
    # names, at worst one update behind, and the next canary reads it again.
    return sorted({str(queue.name) for queue in list(task_consumer.queues)})


def prepare(
    app: Celery,
    hostname: str,
    settings: Settings,
    announce: Callable[[Sequence[str]], None] | None = None,
) -> None:
    """At worker start: consume this worker's direct queue, and stamp the heartbeat once
    (a starting worker gets one maximum age of grace)."""
    global _canary  # noqa: PLW0603 - one canary per worker process.
    queue = worker_direct(hostname)
    app.amqp.queues.select_add(queue)
    # Expired canaries are dropped unrun, so a backlog of them never runs in a burst.
    expires_s = _RESEND_AFTER_INTERVALS * settings.canary_interval_s

    def publish(sent_at: float) -> None:
        app.send_task(
            CANARY_TASK_NAME,
            args=[sent_at],
            queue=queue.name,  # declared by select_add above: routed to exchange C.dq2
            expires=expires_s,
            ignore_result=True,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    _canary = Canary(
        publish,
        interval_s=settings.canary_interval_s,
        heartbeat_file=settings.heartbeat_file,
        announce=announce,
    )
    stamp_heartbeat(settings.heartbeat_file)
    for logger in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(logger).addFilter(_QuietCanaries())


def start() -> None:
    """Start sending canaries (once the worker consumes)."""
    if _canary is not None:
        _canary.start()


def stop(timeout_s: float = 5.0) -> None:
    """Stop sending canaries (at worker shutdown); idempotent."""
    if _canary is not None:
        _canary.stop(timeout_s)


def canary_ran(sent_at: Any) -> None:
    """The canary task's body."""
    del sent_at  # kept in the message for whoever reads it in Flower
    if _canary is not None:
        _canary.ran()
