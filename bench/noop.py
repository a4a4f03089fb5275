"""The benchmark's baseline: a bare Celery app whose task does nothing but count itself.

`celery -A bench.noop worker` serves the same task name on the same queue as the real
worker, so the benchmark submits to it with the same `Producer.submit` and the same job
payloads. Broker, serialisation, acks, prefetch, pool, concurrency, events and logging are
those of `worker.app`, from the same `worker.celeryconfig.celery_config` (not `worker.app`
itself, which would wire its signal hooks, and with them the Halo runtime and the deferral
mover, into the baseline). The only
difference is the task body: one Redis INCR, the cheapest way to say "done" that the
benchmark can count, where the real task writes a record and its feed entry.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis
from celery import Celery, signals
from kombu import Queue

from worker import logs
from worker.celeryconfig import celery_config
from worker.models import QUEUE, TASK_NAME
from worker.settings import get_settings

DONE_KEY = "bench:noop:done"

settings = get_settings()

app = Celery("halo-bench-noop")
app.conf.update(celery_config(settings))
# The baseline serves only the main queue: it never releases backlog batches.
app.conf.update(task_queues=(Queue(QUEUE, routing_key=QUEUE),))


@signals.setup_logging.connect
def _json_logging(**_: Any) -> None:
    logs.configure(settings.log_level)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.results_redis_url, socket_timeout=10)


@app.task(name=TASK_NAME)
def noop(*args: Any, **kwargs: Any) -> None:
    """Accept a job as the real task does, and only count it."""
    del args, kwargs
    _redis().incr(DONE_KEY)
