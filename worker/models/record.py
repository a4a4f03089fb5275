"""The result record (CONTRACT §2): how one job ended, written once per `job_id`.

A record is built here only, by `succeeded_record` or `failed_record`; its `error` carries the
code, message and retryability of `worker.errors`, and its `disposition` the job's own
`error_handling` (`worker.models.job`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from worker.errors import ErrorCode, JobError
from worker.models.job import ErrorHandling, Job

# The keys of each ticket in a successful record's `result`, in contract order.
RESULT_TICKET_KEYS: Final = (
    "id",
    "summary",
    "details",
    "client_id",
    "client_name",
    "user_id",
    "user_name",
    "site_id",
    "site_name",
    "tickettype_id",
    "status_id",
    "status_name",
    "priority_id",
    "priority_name",
    "agent_id",
    "agent_name",
    "team_id",
    "team_name",
    "datecreated",
    "datelastupdated",
)


class Outcome(StrEnum):
    """How a job ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ErrorInfo(BaseModel):
    """The `error` object of a failed result record."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    retryable: bool
    http_status: int | None = None
    field: str | None = None


class ResultRecord(BaseModel):
    """How one job ended (CONTRACT §2); written once per `job_id`."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    outcome: Outcome
    disposition: ErrorHandling | None
    result: list[dict[str, Any]] | None
    variables: dict[str, Any]
    changed_fields: list[str]
    warnings: list[str]
    error: ErrorInfo | None
    attempts: int
    halo_requests: int | float
    submitted_at: str
    finished_at: str
    meta: dict[str, Any]


def utc_now_iso() -> str:
    """The current time as the contract writes it: ``2026-11-27T10:00:00.412Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def succeeded_record(
    job: Job,
    job_id: str,
    *,
    ticket: dict[str, Any],
    changed_fields: list[str],
    warnings: list[str],
    attempts: int,
    halo_requests: int | float,
    submitted_at: str,
) -> ResultRecord:
    """The record of a job that updated (or found already up to date) its ticket."""
    result = [ticket]
    return ResultRecord(
        job_id=job_id,
        outcome=Outcome.SUCCEEDED,
        disposition=None,
        result=result,
        variables={"custom": {job.result_variable: result}} if job.result_variable else {},
        changed_fields=changed_fields,
        warnings=warnings,
        error=None,
        attempts=attempts,
        halo_requests=halo_requests,
        submitted_at=submitted_at,
        finished_at=utc_now_iso(),
        meta=job.meta,
    )


def failed_record(
    job_id: str,
    error: JobError,
    *,
    job: Job | None,
    attempts: int,
    halo_requests: int | float,
    submitted_at: str,
    warnings: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> ResultRecord:
    """The record of a failed job. `job` is None when the job itself did not validate; the
    disposition is then the default, `exception`, since the job's own choice is unreadable."""
    return ResultRecord(
        job_id=job_id,
        outcome=Outcome.FAILED,
        disposition=job.error_handling if job else ErrorHandling.EXCEPTION,
        result=None,
        variables={},
        changed_fields=[],
        warnings=warnings or [],
        error=ErrorInfo.model_validate(error.to_dict()),
        attempts=attempts,
        halo_requests=halo_requests,
        submitted_at=submitted_at,
        finished_at=utc_now_iso(),
        meta=job.meta if job else (meta or {}),
    )
