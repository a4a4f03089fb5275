"""Submit Update Halo Ticket jobs and wait for their records: the producer API.

    producer = Producer.from_settings()
    job_id = producer.submit({"connection": "acme", "ticket_id": "{{custom.ticket.id}}", ...})
    record = producer.wait(job_id, timeout_s=30)
    waited = producer.wait_many(job_ids, timeout_s=60)  # one deadline for all of them

Jobs are validated here first, so a bad job is refused with a message naming the key before
anything is enqueued. This module needs only the broker and the result store: it imports the
contract, its one job publisher (`worker.publishing`) and `worker.handoff`, neither the
worker's Celery tasks nor its HTTP client.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Self

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from producers.waiting import Progress, Waited, wait_for_records
from worker import handoff
from worker.models import QUEUE, Job, parse_job, utc_now_iso
from worker.publishing import send_job
from worker.redisconn import (
    RedisOptions,
    broker_transport_options,
    broker_use_ssl,
    connect,
    warn_if_insecure,
)
from worker.replication import NotReplicated, ReplicaAcks
from worker.settings import Settings, get_settings

log = logging.getLogger("halo.producer")


class SubmitError(Exception):
    """Raised when a job could not be enqueued. `retryable` is true when the broker was
    unreachable: the job was not accepted, and submitting it again later is safe."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Producer:
    """Enqueues jobs on the broker and reads records from the result store."""

    def __init__(
        self,
        *,
        broker_url: str,
        result_url: str | None = None,
        options: RedisOptions | None = None,
        acks: ReplicaAcks | None = None,
    ) -> None:
        """Connect to the broker and the result store (lazily: nothing is dialled yet).

        Args:
            broker_url: the broker (any form `worker.redisconn` takes).
            result_url: the result store (default: the broker).
            options: Sentinel and TLS options (default: none, and TLS that verifies).
            acks: the replicas an accepted job must reach before `submit` returns.
        """
        options = options or RedisOptions()
        url = result_url or broker_url
        warn_if_insecure(options, broker_url, url)
        self._celery = Celery("halo-producer", broker=broker_url, set_as_current=False)
        self._celery.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_default_queue=QUEUE,
            broker_connection_retry_on_startup=True,
            # Give up after a few seconds with a clear error instead of hanging a caller.
            task_publish_retry_policy={
                "max_retries": 3,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
            broker_use_ssl=broker_use_ssl(broker_url, options),
            broker_transport_options=broker_transport_options(broker_url, options),
        )
        self.redis = connect(url, options, socket_timeout_s=10, connect_timeout_s=5)
        self._acks = acks or ReplicaAcks()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """A producer for `HALO_BROKER_URL` and `HALO_RESULT_URL`."""
        settings = settings or get_settings()
        return cls(
            broker_url=settings.broker_url,
            result_url=settings.results_redis_url,
            options=RedisOptions.from_settings(settings),
            acks=ReplicaAcks(
                settings.redis_min_replicas_acked, settings.redis_replica_ack_timeout_s
            ),
        )

    def validate(self, job: Job | Mapping[str, Any] | str | bytes) -> Job:
        """Validate a job and give it a job_id (a UUID4) when it has none.

        Raises:
            InvalidJob: the message names the key to fix.
        """
        parsed = job if isinstance(job, Job) else parse_job(job)
        if parsed.job_id is None:
            parsed = parsed.model_copy(update={"job_id": str(uuid.uuid4())})
        return parsed

    def submit(self, job: Job | Mapping[str, Any] | str | bytes) -> str:
        """Validate and enqueue a job; returns its job_id.

        Submitting a job_id again is safe: the worker returns the stored record and never
        updates Halo twice.

        Raises:
            InvalidJob: the job does not validate; nothing was enqueued.
            SubmitError: the broker could not be reached, or (with
                HALO_REDIS_MIN_REPLICAS_ACKED) the job did not reach the replicas in time;
                retryable, and submitting the same job again never runs it twice.
        """
        parsed = self.validate(job)
        job_id = str(parsed.job_id)
        payload = parsed.model_dump(mode="json")
        submitted_at = utc_now_iso()
        try:
            send_job(self._celery, job_id, payload, submitted_at, retry=True)
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise SubmitError(
                f"could not enqueue job {job_id}: the broker is unreachable "
                f"({type(exc).__name__}); nothing was enqueued, submit it again later",
                retryable=True,
            ) from None
        try:
            # The safety net for a message the broker loses (see `worker.handoff`).
            handoff.track(
                self.redis, job_id, {"job": payload, "submitted_at": submitted_at}, self._acks
            )
        except NotReplicated as exc:
            # On the primary, but a failover could lose it: not "accepted" yet.
            raise SubmitError(
                f"job {job_id} reached the primary but not its replicas ({exc}); submit it "
                "again (the same job_id is never run twice)",
                retryable=True,
            ) from None
        except redis.RedisError as exc:
            # Accepted all the same: the job is on the queue, only without the net.
            log.warning(
                "job enqueued, but not tracked: the result store is unreachable (%s)",
                type(exc).__name__,
                extra={"job_id": job_id},
            )
        return job_id

    def result(self, job_id: str) -> dict[str, Any] | None:
        """A job's record, or None while it has none."""
        return handoff.read_record(self.redis, job_id)

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Block until a job's record exists (no polling), or return None after `timeout_s`."""
        return handoff.wait_for_record(self.redis, job_id, timeout_s)

    def wait_many(
        self, job_ids: Iterable[str], timeout_s: float, *, on_progress: Progress | None = None
    ) -> Waited:
        """Wait for many jobs' records under one deadline: `timeout_s` bounds the whole wait.

        Returns the records of the jobs that finished, by job id, and the ids of those that
        had none when the wait ended. Records that exist before the call are found at once.
        `on_progress(finished, total)` is called at least once a second while waiting.

        Raises:
            redis.RedisError: the result store is unreachable.
        """
        return wait_for_records(self.redis, job_ids, timeout_s, on_progress=on_progress)

    def close(self) -> None:
        """Release broker and Redis connections."""
        self.redis.close()
        self._celery.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
