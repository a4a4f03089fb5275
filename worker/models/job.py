"""The job (CONTRACT §1): its wire names, the limits on what it may carry, and its validation.

`parse_job` is the one way a job is read, by the producer before it is sent and by the worker
when it arrives; the message of a job that does not validate names the key to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
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

from worker.errors import InvalidJob
from worker.models.redaction import json_kind

# Wire names the upstream codes against (CONTRACT §3). The record's key and the completion
# feed's stream are in `worker.keys`, with every other Redis key.
TASK_NAME: Final = "halo.update_ticket"
QUEUE: Final = "halo"


# A job is one email rule action: its texts are a ticket summary and details, not attachments.
# These bounds keep one job from exhausting a worker or the broker and are documented in the README.
MAX_JOB_BYTES: Final = 256 * 1024
# A kombu message carrying one job: the job (at most MAX_JOB_BYTES), base64 adds a third, plus
# Celery's headers and the job's redacted view for events. Four times the job bound holds all
# of that with room to spare.
MAX_MESSAGE_BYTES_PER_JOB: Final = 4 * MAX_JOB_BYTES
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


class ErrorHandling(StrEnum):
    """What the rule runner does after a failed action; the record's `disposition`."""

    EXCEPTION = "exception"
    BOUNCE = "bounce"
    CONTINUE = "continue"
    STOP = "stop"
    STOP_ALL = "stop_all"


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
        raise InvalidJob(f"job: expected a JSON object, got {json_kind(data)}")
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
