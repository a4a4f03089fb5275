"""A run of a job as its steps hand it on: the claimed job, what became of the delivery, and
who is told how jobs end.

A run's steps live in three modules, the same for a single job and for a job of a batch:
`worker.admission` (recorded already? → validate → claim → count the run → render → its
ticket's turn), `worker.update` (read → resolve → diff → write) and `worker.endings` (record,
defer, park). `worker.runner` takes a single job through them, `worker.batch` a batch's jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from worker.claims import RunState
from worker.models import Job, ResultRecord


class RunResult(StrEnum):
    """What became of one delivery."""

    RECORDED = "recorded"  # the job ended: its record is written
    DEFERRED = "deferred"  # a retryable error: waiting to run again after a backoff
    PARKED = "parked"  # no Halo budget: waiting in its connection's backlog
    DUPLICATE = "duplicate"  # the job already had a record: nothing was done
    BUSY = "busy"  # another worker holds the job now: looked at again when its claim ends
    WAITING = "waiting"  # another job has its ticket, or comes first: waiting for its turn


@dataclass(frozen=True)
class Claimed:
    """A job this process holds the claim of, with what its earlier runs left."""

    job: Job
    job_id: str
    payload: Any
    state: RunState
    # The ticket in whose line this run has its turn (or, in a batch, a place behind another
    # of the batch's jobs): its record ends that turn in the same call.
    ticket_id: int | None = None


class JobObserver(Protocol):
    """Told what becomes of jobs (metrics, error reporting); called in the job's thread."""

    def job_finished(
        self, record: ResultRecord, *, connection: str | None, duration_s: float
    ) -> None:
        """A job's record was written (once per job); `duration_s` is its last run's."""
        ...

    def job_deferred(self, connection: str, code: str, *, due_s: float) -> None:
        """A job waits to run again after a retryable error with this code, until `due_s`
        (Unix time)."""
        ...

    def job_parked(self, connection: str) -> None:
        """A job waits in its connection's backlog for Halo budget."""
        ...


def total_requests(before: float, now: float) -> int | float:
    """A job's Halo requests over all its runs: whole when whole, else rounded to 0.001 (a
    batched job's share of shared requests is a fraction)."""
    total = before + now
    return int(total) if float(total).is_integer() else round(total, 3)
