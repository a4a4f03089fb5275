"""Every way an Update Halo Ticket job can fail, and the contract code each one carries.

The tree splits at the top on one question: may the same job succeed if it runs again later?

    JobError                       a job failed; carries a contract `ErrorCode`
    ├── RetryableError             the same job may succeed later: retried inside its budget
    │   ├── HaloUnavailable        timeouts, connection errors, 408, 5xx (halo_unavailable)
    │   ├── HaloRateLimited        Halo answered 429 (halo_rate_limited)
    │   └── BudgetExhausted        the fleet's shared budget has no room now: wait, not fail
    └── PermanentError             it cannot succeed as sent: fails at once, never retried
        ├── InvalidJob             the job does not validate (invalid_job)
        ├── TemplateError          a {{ expression }} is malformed or undefined (template_error)
        ├── InvalidTicketId        the rendered ticket id is not a positive integer
        ├── UnknownConnection      no Halo connection of that name (unknown_connection)
        ├── TicketNotFound         Halo has no ticket with that id (ticket_not_found)
        ├── LookupNotFound         a status/priority/agent/team name matches nothing
        ├── LookupAmbiguous        a name matches more than one record
        ├── HaloRejected           Halo answered 400/422 to the update (halo_rejected)
        ├── HaloAuthFailed         token request failed, or 401 after a refresh
        ├── HaloForbidden          Halo answered 403 (halo_forbidden)
        ├── HaloUnexpectedResponse Halo broke an invariant of its API
        │   └── NoHaloApi          the connection's url does not lead to Halo's API (404s)
        └── InternalError          the worker failed, not Halo or the job (internal_error)

This module is stdlib-only so that producers can import the codes without pulling in httpx.
The mapping from an HTTP answer to this tree lives in `worker.halo.errors`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    """The `error.code` values of a result record (CONTRACT §2, plus `internal_error`)."""

    INVALID_JOB = "invalid_job"
    TEMPLATE_ERROR = "template_error"
    INVALID_TICKET_ID = "invalid_ticket_id"
    UNKNOWN_CONNECTION = "unknown_connection"
    TICKET_NOT_FOUND = "ticket_not_found"
    LOOKUP_NOT_FOUND = "lookup_not_found"
    LOOKUP_AMBIGUOUS = "lookup_ambiguous"
    HALO_REJECTED = "halo_rejected"
    HALO_AUTH_FAILED = "halo_auth_failed"
    HALO_FORBIDDEN = "halo_forbidden"
    HALO_RATE_LIMITED = "halo_rate_limited"
    HALO_UNAVAILABLE = "halo_unavailable"
    HALO_UNEXPECTED_RESPONSE = "halo_unexpected_response"
    # Not in the contract's table: the worker, not Halo or the job, failed. Either the job's
    # executions killed their worker process `max_deliveries` times (without a cap such a job
    # would be redelivered forever), or the code hit an unclassified error, which is a bug and
    # is reported to Sentry. Neither is retried.
    INTERNAL_ERROR = "internal_error"


class JobError(Exception):
    """Base of every failure that ends a job with a contract error code."""

    code: ClassVar[ErrorCode]
    retryable: ClassVar[bool]

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        """The `error` object of a result record."""
        return {
            "code": self.code.value,
            "message": self.message,
            "retryable": self.retryable,
            "http_status": self.http_status,
            "field": self.field,
        }


class RetryableError(JobError):
    """The same job may succeed if it runs again later."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, field=field, http_status=http_status)
        self.retry_after_s = retry_after_s


class PermanentError(JobError):
    """The job cannot succeed as sent; running it again changes nothing."""

    retryable = False


class HaloUnavailable(RetryableError):
    """Raised on a timeout, a connection error, 408 or 5xx, or when the job's deadline passed."""

    code = ErrorCode.HALO_UNAVAILABLE


class HaloRateLimited(RetryableError):
    """Raised when Halo answers 429.

    `learned_limit` holds `(requests, window_s)` when Halo's text stated its limit.
    """

    code = ErrorCode.HALO_RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        learned_limit: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, retry_after_s=retry_after_s)
        self.learned_limit = learned_limit


class BudgetExhausted(RetryableError):
    """Raised before a request when the connection's shared budget has no room now.

    Not an error of Halo's: the job waits for room without spending its retry budget.
    """

    code = ErrorCode.HALO_RATE_LIMITED


class InvalidJob(PermanentError):
    """Raised when a job does not validate against the contract (missing/unknown key, type)."""

    code = ErrorCode.INVALID_JOB


class TemplateError(PermanentError):
    """Raised when a {{ expression }} is malformed or reads an undefined path."""

    code = ErrorCode.TEMPLATE_ERROR


class InvalidTicketId(PermanentError):
    """Raised when the rendered ticket id is not a positive integer; Halo is never called."""

    code = ErrorCode.INVALID_TICKET_ID


class UnknownConnection(PermanentError):
    """Raised when the job names a connection the workers do not have configured."""

    code = ErrorCode.UNKNOWN_CONNECTION


class TicketNotFound(PermanentError):
    """Raised when Halo has no ticket with the id; the update is then never POSTed."""

    code = ErrorCode.TICKET_NOT_FOUND


class LookupNotFound(PermanentError):
    """Raised when a status, priority, agent or team name or id matches no Halo record."""

    code = ErrorCode.LOOKUP_NOT_FOUND


class LookupAmbiguous(PermanentError):
    """Raised when a name matches more than one Halo record."""

    code = ErrorCode.LOOKUP_AMBIGUOUS


class HaloRejected(PermanentError):
    """Raised when Halo answers 400 or 422 (validation or business rule) to a request."""

    code = ErrorCode.HALO_REJECTED


class HaloAuthFailed(PermanentError):
    """Raised when the token request fails, or a 401 persists after one token refresh."""

    code = ErrorCode.HALO_AUTH_FAILED


class HaloForbidden(PermanentError):
    """Raised when Halo answers 403: the API application or its agent lacks a permission."""

    code = ErrorCode.HALO_FORBIDDEN


class HaloUnexpectedResponse(PermanentError):
    """Raised when Halo answers in a way that breaks an invariant of its API."""

    code = ErrorCode.HALO_UNEXPECTED_RESPONSE


class NoHaloApi(HaloUnexpectedResponse):
    """Raised when Halo's API is not at the connection's url: `GET /api/Status` answered 404.

    Every path then answers 404, so a 404 on a ticket read does not mean the ticket is missing:
    the connection's url is wrong, and every job on it fails with this until it is fixed.
    """


class InternalError(PermanentError):
    """Raised when a job kept killing its worker, or the worker hit an unclassified error."""

    code = ErrorCode.INTERNAL_ERROR
