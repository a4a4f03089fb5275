"""The wire contract in code: a job, a result record, and the limits on what a job may carry.

Everything here is observable by the upstream rule runner (CONTRACT §1-§2). It depends on
pydantic and the stdlib only, so producers can validate jobs without the worker's HTTP stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from worker.errors import ErrorCode, InvalidJob, JobError

__all__ = [
    "JOB_ID_PATTERN",
    "MAX_JOB_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_RENDERED_CHARS",
    "MAX_SHORT_TEXT_CHARS",
    "MAX_TEXT_CHARS",
    "QUEUE",
    "RESULT_TICKET_KEYS",
    "TASK_NAME",
    "ErrorCode",
    "ErrorHandling",
    "ErrorInfo",
    "Job",
    "Outcome",
    "ResultRecord",
    "encodes_as_utf8",
    "failed_record",
    "parse_job",
    "redacted_fields",
    "redacted_view",
    "succeeded_record",
    "utc_now_iso",
]

# Wire names the upstream codes against (CONTRACT §3). The record's key and the completion
# feed's stream are in `worker.keys`, with every other Redis key.
TASK_NAME: Final = "halo.update_ticket"
QUEUE: Final = "halo"


# A job is one email rule action: its texts are a ticket summary and details, not attachments.
# These bounds keep one job from exhausting a worker or the broker and are documented in the README.
MAX_JOB_BYTES: Final = 256 * 1024
MAX_TEXT_CHARS: Final = 64 * 1024  # summary and details
MAX_SHORT_TEXT_CHARS: Final = 1024  # ticket_id, status, priority, agent, team templates
MAX_NESTING_DEPTH: Final = 32  # of `variables` and `meta`; deeper JSON is refused, not parsed
# What a field may render to. A few expressions reading one large variable can ask for far more
# text than the job carries (a 5 KB job rendering to megabytes), which would be POSTed to Halo
# and stored in the record and the feed. Halo's API schema declares no length for a ticket's
# texts, so these caps are the service's own, documented in docs/templates.md.
MAX_RENDERED_CHARS: Final[Mapping[str, int]] = MappingProxyType(
    {
        # A ticket id is at most ten digits; a name or an agent's email (at most 254 characters)
        # is never longer than the longest template these fields may hold.
        "ticket_id": MAX_SHORT_TEXT_CHARS,
        "status": MAX_SHORT_TEXT_CHARS,
        "priority": MAX_SHORT_TEXT_CHARS,
        "agent": MAX_SHORT_TEXT_CHARS,
        "team": MAX_SHORT_TEXT_CHARS,
        # One line of text; 4,000 is the longest maxLength Halo's schema gives any short text.
        "summary": 4_000,
        # A whole variable (at most a whole job) with the template's own text around it, so
        # quoting an email body once always fits; quoting it many times does not.
        "details": MAX_JOB_BYTES + MAX_TEXT_CHARS,
    }
)

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


class ErrorHandling(StrEnum):
    """What the rule runner does after a failed action; the record's `disposition`."""

    EXCEPTION = "exception"
    BOUNCE = "bounce"
    CONTINUE = "continue"
    STOP = "stop"
    STOP_ALL = "stop_all"


class Outcome(StrEnum):
    """How a job ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _error_handling_from_display_name(value: object) -> object:
    # The rule editor shows "Stop All"; the wire form is "stop_all". Accept both.
    if isinstance(value, str):
        return value.strip().lower().replace(" ", "_")
    return value


def _integer_as_text(value: object) -> object:
    # A ticket id or a Halo record id sent as a JSON number means the same as its digits.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


JOB_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN.pattern)]
ShortTemplate = Annotated[
    str, BeforeValidator(_integer_as_text), StringConstraints(max_length=MAX_SHORT_TEXT_CHARS)
]
LongTemplate = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class Job(BaseModel):
    """One run of the Update Halo Ticket action (CONTRACT §1). Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: JobId | None = None
    connection: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    ticket_id: ShortTemplate
    summary: LongTemplate | None = None
    details: LongTemplate | None = None
    status: ShortTemplate | None = None
    priority: ShortTemplate | None = None
    agent: ShortTemplate | None = None
    team: ShortTemplate | None = None
    error_handling: Annotated[ErrorHandling, BeforeValidator(_error_handling_from_display_name)] = (
        ErrorHandling.EXCEPTION
    )
    result_variable: Identifier | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("variables", "meta")
    @classmethod
    def _bounded_depth(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value) > MAX_NESTING_DEPTH:
            raise ValueError(f"nested deeper than {MAX_NESTING_DEPTH} levels")
        return value


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


def parse_job(raw: bytes | str | Mapping[str, Any]) -> Job:
    """Validate a job from JSON text or an already decoded object.

    Raises:
        InvalidJob: too large, not JSON, nested too deeply, or not a valid job. The message
            names the key to fix, e.g. ``job.ticket_id: field required``.
    """
    if isinstance(raw, bytes | str):
        size = len(raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw)
        if size > MAX_JOB_BYTES:
            raise InvalidJob(f"job: {size} bytes is larger than the limit of {MAX_JOB_BYTES}")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidJob(f"job: not valid JSON ({exc})") from None
    else:
        data = raw
        try:
            size = len(json.dumps(data, default=str).encode())
        except (ValueError, RecursionError) as exc:
            # Circular, absurdly deep, or an integer too long to print: no JSON producer could
            # have sent it, and letting it through would crash the worker instead.
            raise InvalidJob(f"job: not representable as JSON ({exc})") from None
        if size > MAX_JOB_BYTES:
            raise InvalidJob(f"job: {size} bytes is larger than the limit of {MAX_JOB_BYTES}")
    if not isinstance(data, Mapping):
        raise InvalidJob(f"job: expected a JSON object, got {_json_type(data)}")
    if not encodes_as_utf8(data):
        # JSON can carry "\ud800", but no UTF-8 text can: such a job could neither be sent
        # to Halo nor have its record written. The message cannot quote the text either.
        raise InvalidJob(
            "job: holds text that is not valid Unicode (an unpaired UTF-16 surrogate such as "
            "\\ud800); fix the encoding of the text that was put in the job"
        )
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob(describe_validation_error(exc), field=_first_field(exc)) from None


def encodes_as_utf8(value: Any) -> bool:
    """Whether every string in a JSON value (keys included) can be written as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError:
        return False
    except (ValueError, RecursionError):
        return True  # not representable at all: reported by whoever serialises it
    return True


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem, each naming the key: ``job.status: ...; job.x: ...``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = _where(error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(Job.model_fields)
            parts.append(f"{where}: unknown key (allowed keys: {allowed})")
        elif error["type"] == "missing":
            parts.append(f"{where}: required key is missing")
        elif error["type"] in ("string_too_long", "too_long"):
            # Short fields report pydantic's generic "items" wording; a job author counts text.
            limit = error.get("ctx", {}).get("max_length")
            parts.append(f"{where}: longer than the limit of {limit} characters")
        elif error["type"] == "string_pattern_mismatch" and error["loc"] == ("job_id",):
            parts.append(f"{where}: must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        elif error["type"] == "string_pattern_mismatch" and error["loc"] == ("result_variable",):
            parts.append(f"{where}: must be an identifier (letters, digits, _; not a digit first)")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


# An unknown key is quoted this far in a message; the job author can find it from there.
_KEY_CHARS: Final = 60


def _where(loc: tuple[int | str, ...]) -> str:
    """A key path as a message names it: ``job.meta``, or ``job[""]`` for a key that is
    empty, not a plain name, or long (JSON-quoted, so control characters show escaped)."""
    where = "job"
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part.isidentifier() and part.isascii() and len(part) <= _KEY_CHARS:
            where += f".{part}"
        else:
            shown = part if len(part) <= _KEY_CHARS else part[: _KEY_CHARS - 1] + "…"
            where += f"[{json.dumps(shown)}]"
    return where


def redacted_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """What events, logs and Flower may show of a job: its ids and the ticket id template.

    Never `variables`, `details`, `summary` or `meta`: they carry email content. Each value
    shown is a number or a string cut to `_SHOWN_CHARS`; any other value (in a job that does
    not validate) shows only as its JSON type.
    """
    return {key: _shown(job.get(key)) for key in ("job_id", "connection", "ticket_id")}


def redacted_view(job: Mapping[str, Any]) -> str:
    """`redacted_fields` as the JSON text of Celery's `argsrepr`: ``[{...}]``."""
    return json.dumps([redacted_fields(job)])


def utc_now_iso() -> str:
    """The current time as the contract writes it: ``2026-11-27T10:00:00.412Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _first_field(exc: ValidationError) -> str | None:
    errors = exc.errors(include_url=False, include_input=False)
    return str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None


def _depth(value: Any, level: int = 0) -> int:
    """Nesting depth of a JSON value, stopping early once past the limit."""
    if level > MAX_NESTING_DEPTH:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


# Enough of a shown value to recognise a ticket id template; bounds what one job puts in an event.
_SHOWN_CHARS: Final = 200
_SHOWN_MAX_INT: Final = 2**63


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # A huge integer cannot even be printed (Python caps int-to-text at 4300 digits), and
        # NaN is not JSON.
        return value if abs(value) < _SHOWN_MAX_INT else "<a number>"
    if isinstance(value, str):
        return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"
    return "<an object>" if isinstance(value, Mapping) else f"<{_json_type(value)}>"


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"


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
