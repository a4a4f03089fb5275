"""One delivery of one job: from a queue payload to exactly one record, or a deferral.

    already recorded? → validate → claim → count the run → update Halo → record
                                                      └→ retryable error → defer (or record)

The runner knows Redis and Halo but not Celery: `worker.tasks` hands it the payload and acts
on what it returns. Delivery is at-least-once (Redis transport, late acks), so every step here
is safe to repeat: a recorded job is never run again, a claimed job is not run twice at once,
and a run that crashed after its POST is finished from the write journal without a second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import redis

from worker.errors import InternalError, InvalidJob, JobError, RetryableError
from worker.halo.client import HaloClient, HaloClients
from worker.logs import job_finished
from worker.models import (
    JOB_ID_PATTERN,
    Job,
    ResultRecord,
    failed_record,
    parse_job,
    succeeded_record,
    utc_now_iso,
)
from worker.results import ResultStore
from worker.retry import RetryPolicy
from worker.update import run_update

log = logging.getLogger("halo.runner")

# A claim outlives the longest run (deadline plus one request timeout) by this margin, so a
# live worker never loses its claim, and a dead one blocks its job only briefly.
_CLAIM_MARGIN_S: Final = 30.0


class RunResult(StrEnum):
    """What became of one delivery."""

    RECORDED = "recorded"  # the job ended: its record is written
    DEFERRED = "deferred"  # a retryable error: parked to run again later
    DUPLICATE = "duplicate"  # the job already had a record: nothing was done
    BUSY = "busy"  # another worker holds the job right now: nothing was done


@dataclass(frozen=True)
class RunnerConfig:
    """The parts of the settings a runner needs."""

    job_deadline_s: float
    request_timeout_s: float
    max_deliveries: int
    policy: RetryPolicy


class JobRunner:
    """Runs deliveries of jobs; one per process, shared by all worker threads."""

    def __init__(self, store: ResultStore, clients: HaloClients, config: RunnerConfig) -> None:
        self.store = store
        self.clients = clients
        self.config = config
        self._lease_s = config.job_deadline_s + config.request_timeout_s + _CLAIM_MARGIN_S

    def run(self, payload: Any, *, task_id: str, submitted_at: str | None = None) -> RunResult:
        """Run one delivery of a job.

        Args:
            payload: the job as it came off the queue (any JSON value: it is validated here).
            task_id: the Celery task id, which is the job_id; the record's key when the
                payload carries no usable job_id.
            submitted_at: when the producer accepted the job (ISO 8601), if it said.

        Raises:
            redis.RedisError: the result store is unreachable; nothing was recorded and the
                delivery must be retried (the caller requeues the message).
        """
        started_s = time.monotonic()
        job_id = _job_id_of(payload, task_id)
        if self.store.get(job_id) is not None:
            return RunResult.DUPLICATE
        submitted_at = submitted_at or utc_now_iso()
        try:
            job = parse_job(payload)
        except InvalidJob as error:
            record = failed_record(
                job_id,
                error,
                job=None,
                attempts=1,
                halo_requests=0,
                submitted_at=submitted_at,
                meta=_meta_of(payload),
            )
            return self._finish(record, payload, started_s)
        with self.store.claim(job_id, lease_s=self._lease_s) as taken:
            if not taken:
                return RunResult.BUSY
            if self.store.get(job_id) is not None:
                return RunResult.DUPLICATE
            return self._run_claimed(job, job_id, payload, submitted_at, started_s)

    def reject_malformed(self, task_id: str, reason: str) -> RunResult:
        """Record a delivery whose task arguments are not ``(job)``: it can never run."""
        if self.store.get(task_id) is not None:
            return RunResult.DUPLICATE
        error = InvalidJob(f"task arguments: {reason}; expected one argument, the job object")
        record = failed_record(
            task_id, error, job=None, attempts=1, halo_requests=0, submitted_at=utc_now_iso()
        )
        return self._finish(record, None, time.monotonic())

    def _run_claimed(
        self, job: Job, job_id: str, payload: Any, submitted_at: str, started_s: float
    ) -> RunResult:
        state = self.store.begin_run(job_id, submitted_at)
        if state.crashes >= self.config.max_deliveries:
            crash = InternalError(
                f"the job's runs ended {state.crashes} times without finishing (the worker "
                "process died each time); it is not run again"
            )
            return self._finish(self._failed(job, job_id, crash, state, 0), payload, started_s)
        client: HaloClient | None = None
        try:
            client = self.clients.for_job(
                job.connection, deadline_s=time.monotonic() + self.config.job_deadline_s
            )
            updated = run_update(job, client, journal=self.store.journal(job_id))
            record = succeeded_record(
                job,
                job_id,
                ticket=updated.ticket,
                changed_fields=updated.changed_fields,
                warnings=updated.warnings,
                attempts=state.attempts,
                halo_requests=_total(state.halo_requests, client.requests_made),
                submitted_at=state.submitted_at,
            )
        except RetryableError as error:
            made = client.requests_made if client else 0
            delay_s = self.config.policy.next_delay_s(
                error, attempt=state.attempts, elapsed_s=time.time() - state.first_started_s
            )
            if delay_s is not None:
                self.store.defer(
                    job_id,
                    {"job": payload, "submitted_at": state.submitted_at},
                    due_s=time.time() + delay_s,
                    halo_requests=made,
                )
                log.info(
                    "job deferred",
                    extra={
                        "job_id": job_id,
                        "connection": job.connection,
                        "code": error.code.value,
                        "attempts": state.attempts,
                        "delay_s": round(delay_s, 3),
                    },
                )
                return RunResult.DEFERRED
            record = self._failed(job, job_id, error, state, made)
        except JobError as error:
            record = self._failed(job, job_id, error, state, client.requests_made if client else 0)
        except redis.RedisError:
            raise
        except Exception:
            # Unclassified: a bug. Not retried (it would fail the same way), reported loudly.
            log.exception("job failed on an internal error", extra={"job_id": job_id})
            internal = InternalError(
                "the worker hit an internal error running this job; it was reported to the "
                "operators and the job was not retried"
            )
            made = client.requests_made if client else 0
            record = self._failed(job, job_id, internal, state, made)
        return self._finish(record, payload, started_s)

    def _failed(
        self, job: Job, job_id: str, error: JobError, state: Any, made: int
    ) -> ResultRecord:
        return failed_record(
            job_id,
            error,
            job=job,
            attempts=state.attempts,
            halo_requests=_total(state.halo_requests, made),
            submitted_at=state.submitted_at,
        )

    def _finish(self, record: ResultRecord, payload: Any, started_s: float) -> RunResult:
        if not self.store.write(record):
            return RunResult.DUPLICATE
        fields = payload if isinstance(payload, Mapping) else {}
        connection, ticket_id = fields.get("connection"), fields.get("ticket_id")
        job_finished(
            record,
            connection=connection if isinstance(connection, str) else None,
            ticket_id=str(ticket_id) if isinstance(ticket_id, str | int) else None,
            duration_s=time.monotonic() - started_s,
        )
        return RunResult.RECORDED


def _job_id_of(payload: Any, task_id: str) -> str:
    """The job's own id when it carries a valid one, else the task id it was sent under."""
    if isinstance(payload, Mapping):
        candidate = payload.get("job_id")
        if isinstance(candidate, str) and JOB_ID_PATTERN.match(candidate):
            return candidate
    return task_id


def _meta_of(payload: Any) -> dict[str, Any]:
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    return meta if isinstance(meta, dict) else {}


def _total(before: float, now: int) -> int | float:
    total = before + now
    return int(total) if float(total).is_integer() else round(total, 3)
