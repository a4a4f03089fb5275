"""The Celery configuration of the worker, as a function with no side effects.

`worker.app` applies it; the benchmark's no-op baseline (`bench.noop`) applies the same
configuration without wiring the worker's signal hooks.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from worker.models import MAX_MESSAGE_BYTES_PER_JOB, QUEUE, TASK_NAME
from worker.redisconn import RedisOptions, broker_transport_options, broker_use_ssl
from worker.settings import Settings

BATCH_TASK_NAME = "halo.update_batch"
# Earlier releases put released backlog batches on a queue of their own. A worker started for
# the contract's queue alone (`-Q halo`, as Celery users do) never consumed it, and parked jobs
# waited there for ever. Everything the fleet publishes now goes to `halo`; a worker moves what
# is left on the old queue back to it (`worker.fleet.drain_retired_queue`).
RETIRED_BATCH_QUEUE = "halo.batch"


def broker_connection(settings: Settings) -> dict[str, Any]:
    """How Celery reaches the broker (`worker.redisconn`): TLS that verifies, and for a
    Sentinel URL the primary's name and the sentinels' options. Workers, Flower and producers
    share it; the transport options merge into the worker's own."""
    options = RedisOptions.from_settings(settings)
    return {
        "broker_url": settings.broker_url,
        "broker_use_ssl": broker_use_ssl(settings.broker_url, options),
        "broker_transport_options": broker_transport_options(settings.broker_url, options),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for a worker or Flower (see `worker.app` for why each is chosen)."""
    broker = broker_connection(settings)
    return {
        "broker_url": broker["broker_url"],
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_keepalive": True,
            "health_check_interval": 10,
            # Dead letters can hold email content: kept as long as result records are.
            "dead_letter_ttl_s": settings.result_ttl_s,
            # A batch of HALO_BATCH_MAX jobs, each at most a one-job message's size, and one
            # more for framing: a longer item is dead-lettered before it is decoded.
            "max_message_bytes": (settings.batch_max + 1) * MAX_MESSAGE_BYTES_PER_JOB,
            **broker["broker_transport_options"],
        },
        # kombu turns certificate checks off for a rediss:// broker given no SSL options.
        "broker_use_ssl": broker["broker_use_ssl"],
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_default_queue": QUEUE,
        # One queue for everything: jobs, retries, rechecks and released batches. A worker that
        # consumes it can run every message the fleet publishes, however it was started
        # (`worker.fleet.require_home_queue` refuses a worker that would not consume it).
        "task_queues": (Queue(QUEUE, routing_key=QUEUE),),
        "task_routes": {TASK_NAME: {"queue": QUEUE}, BATCH_TASK_NAME: {"queue": QUEUE}},
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # SIGTERM is Celery's warm shutdown: the worker stops taking messages, puts reserved ones
        # back at the head of the queue, and waits for running jobs, each bounded by its deadline.
        # Soft shutdown (worker_soft_shutdown_timeout) applies only to SIGQUIT and cannot stop a
        # thread, so it is left off. Orchestrators must wait at least job_deadline_s plus one
        # request timeout before killing (compose stop_grace_period, Kubernetes
        # terminationGracePeriodSeconds).
        # Halo calls are I/O: threads keep hundreds of requests in flight in one process.
        "worker_pool": "threads",
        # Celery's consumer, keeping the messages it deletes in the dead-letter list.
        "worker_consumer": "worker.consumer:Consumer",
        "worker_concurrency": settings.worker_concurrency,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }
