"""How a run of a job ends: the one place where an outcome becomes a record, a deferral or a
park, for a single job and for every job of a batch alike.

    outcome of the update (`attempt`) ─┬─ `Updated`              → success record
                                       ├─ `BudgetExhausted`      → park in the backlog
                                       ├─ other `RetryableError` → defer, inside the retry
                                       │                           budget; past it, a failure
                                       │                           record
                                       └─ `PermanentError`       → failure record
    an unclassified exception (a bug): `Endings.internal_error` → an `internal_error` failure
    record, never retried, for every job still open in the run it broke

`Endings.end` takes that decision. A failure record carries the job's own `error_handling` as
its disposition (exception, bounce, continue, stop, stop_all; `exception` for a job that did
not validate: `worker.models.failed_record`). Admission ends runs here too: an invalid or
unrenderable job is recorded, a job of a connection with a backlog is parked.

Writing a record ends the job's turn on its ticket in the same atomic call; a deferral or a
park ends the turn but keeps the job's place in the line. A `redis.RedisError` is no ending:
the result store is unreachable, nothing is recorded, and the delivery is handed back to the
broker. (A queue item that is no task message never starts a run: `worker.consumer` moves it
to the dead letters.)

A batch changes only what `made` counts: a batched job's share of the batch's requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from worker.backlog import Backlogs
from worker.errors import BudgetExhausted, InternalError, JobError, RetryableError
from worker.logs import job_finished
from worker.models import ResultRecord, failed_record, succeeded_record
from worker.results import ResultStore
from worker.retry import RetryPolicy
from worker.runs import Claimed, JobObserver, RunResult, total_requests
from worker.tickets import TicketLines
from worker.update import Updated

T = TypeVar("T")
log = logging.getLogger("halo.runner")


def attempt(work: Callable[[], T]) -> T | JobError:
    """Run steps of a job's update; a `JobError` they raise is returned as their outcome, for
    `Endings.end`. Anything else propagates: a `redis.RedisError` (the store is down) and a
    bug, which the run that was broken ends through `Endings.internal_error`."""
    try:
        return work()
    except JobError as error:
        return error


class Endings:
    """Ends runs: writes records, defers and parks jobs, and tells the observers."""

    def __init__(
        self,
        store: ResultStore,
        policy: RetryPolicy,
        *,
        backlogs: Backlogs | None,
        tickets: TicketLines | None,
        observers: list[JobObserver],
    ) -> None:
        """`observers` is the runner's list: observers added to it later are told too."""
        self.store = store
        self.policy = policy
        self.backlogs = backlogs
        self.tickets = tickets
        self.observers = observers

    def end(
        self, claimed: Claimed, outcome: Updated | JobError, made: float, started_s: float
    ) -> RunResult:
        """End the run of a claimed job whose update came to `outcome`, after `made` Halo
        requests in this run (see the module docstring)."""
        if isinstance(outcome, RetryableError):
            return self._retry_or_fail(claimed, outcome, made, started_s)
        if isinstance(outcome, JobError):
            record = self.failure(claimed, outcome, made)
        else:
            record = self._success(claimed, outcome, made)
        return self.write(record, claimed.payload, started_s, claimed=claimed)

    def failure(self, claimed: Claimed, error: JobError, made: float) -> ResultRecord:
        """The record of a claimed job that failed, after `made` Halo requests in this run."""
        return failed_record(
            claimed.job_id,
            error,
            job=claimed.job,
            attempts=claimed.state.attempts,
            halo_requests=total_requests(claimed.state.halo_requests, made),
            submitted_at=claimed.state.submitted_at,
        )

    def internal_error(self, job_id: str, exc: Exception) -> InternalError:
        """Log an unclassified exception (a bug) and describe it for the record."""
        log.error(
            "job failed on an internal error",
            extra={"job_id": job_id, "code": "internal_error"},
            exc_info=exc,
        )
        return InternalError(
            "the worker hit an internal error running this job; it was reported to the "
            "operators and the job was not retried"
        )

    def park(self, claimed: Claimed, *, halo_requests: float) -> RunResult:
        """End this run and put the job in its connection's backlog.

        A run that made no Halo request does not count as an attempt: waiting in line is
        not a retry.
        """
        assert self.backlogs is not None
        self.store.claims.end_run(
            claimed.job_id, halo_requests=halo_requests, counted=halo_requests > 0
        )
        self.backlogs.park(
            claimed.job.connection, claimed.job_id, claimed.payload, claimed.state.submitted_at
        )
        self._leave_turn(claimed)
        for observer in self.observers:
            observer.job_parked(claimed.job.connection)
        return RunResult.PARKED

    def write(
        self,
        record: ResultRecord,
        payload: Any,
        started_s: float,
        *,
        claimed: Claimed | None = None,
    ) -> RunResult:
        """Write a record (once), keeping a failed job's payload for replay, and log the
        outcome. A `claimed` job's turn on its ticket ends in the same call."""
        if self.tickets is not None and claimed is not None and claimed.ticket_id is not None:
            written = self.tickets.write_and_leave(
                self.store.records, record, payload, claimed.job.connection, claimed.ticket_id
            )
        else:
            written = self.store.records.write(record, payload)
        if not written:
            return RunResult.DUPLICATE
        fields = payload if isinstance(payload, Mapping) else {}
        connection, ticket_id = fields.get("connection"), fields.get("ticket_id")
        connection = connection if isinstance(connection, str) else None
        duration_s = time.monotonic() - started_s
        job_finished(
            record,
            connection=connection,
            ticket_id=str(ticket_id) if isinstance(ticket_id, str | int) else None,
            duration_s=duration_s,
        )
        for observer in self.observers:
            observer.job_finished(record, connection=connection, duration_s=duration_s)
        return RunResult.RECORDED

    def _success(self, claimed: Claimed, updated: Updated, made: float) -> ResultRecord:
        return succeeded_record(
            claimed.job,
            claimed.job_id,
            ticket=updated.ticket,
            changed_fields=updated.changed_fields,
            warnings=updated.warnings,
            attempts=claimed.state.attempts,
            halo_requests=total_requests(claimed.state.halo_requests, made),
            submitted_at=claimed.state.submitted_at,
        )

    def _retry_or_fail(
        self, claimed: Claimed, error: RetryableError, made: float, started_s: float
    ) -> RunResult:
        """Park (no budget), defer (inside the retry budget), or record the failure."""
        if isinstance(error, BudgetExhausted) and self.backlogs is not None:
            return self.park(claimed, halo_requests=made)
        delay_s = self.policy.next_delay_s(
            error,
            attempt=claimed.state.attempts,
            elapsed_s=time.time() - claimed.state.first_started_s,
        )
        if delay_s is None:
            record = self.failure(claimed, error, made)
            return self.write(record, claimed.payload, started_s, claimed=claimed)
        due_s = time.time() + delay_s
        self.store.deferred.defer(
            claimed.job_id,
            {"job": claimed.payload, "submitted_at": claimed.state.submitted_at},
            due_s=due_s,
            halo_requests=made,
        )
        # It keeps its place in its ticket's line while it waits: no later job overtakes it.
        self._leave_turn(claimed)
        log.info(
            "job deferred",
            extra={
                "job_id": claimed.job_id,
                "connection": claimed.job.connection,
                "code": error.code.value,
                "attempts": claimed.state.attempts,
                "delay_s": round(delay_s, 3),
            },
        )
        for observer in self.observers:
            observer.job_deferred(claimed.job.connection, error.code.value, due_s=due_s)
        return RunResult.DEFERRED

    def _leave_turn(self, claimed: Claimed) -> None:
        """End the turn of a job that will run again, keeping its place in the line."""
        if self.tickets is not None and claimed.ticket_id is not None:
            self.tickets.leave(
                claimed.job.connection, claimed.ticket_id, claimed.job_id, finished=False
            )
