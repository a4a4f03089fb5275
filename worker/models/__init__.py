"""The wire contract in code: a job, a result record, and the limits on what a job may carry.

Everything here is observable by the upstream rule runner (CONTRACT §1-§2). It depends on
pydantic and the stdlib only, so producers can validate jobs without the worker's HTTP stack.

The job and its limits are `worker.models.job`, the record `worker.models.record`, and what may
be shown of a job `worker.models.redaction`; importers take them from here.
"""

from __future__ import annotations

from worker.errors import ErrorCode
from worker.models.job import (
    JOB_ID_PATTERN,
    MAX_JOB_BYTES,
    MAX_MESSAGE_BYTES_PER_JOB,
    MAX_NESTING_DEPTH,
    MAX_RENDERED_CHARS,
    MAX_SHORT_TEXT_CHARS,
    MAX_TEXT_CHARS,
    QUEUE,
    TASK_NAME,
    ErrorHandling,
    Job,
    describe_validation_error,
    encodes_as_utf8,
    parse_job,
)
from worker.models.record import (
    RESULT_TICKET_KEYS,
    ErrorInfo,
    Outcome,
    ResultRecord,
    failed_record,
    succeeded_record,
    utc_now_iso,
)
from worker.models.redaction import json_kind, redacted_fields, redacted_view

__all__ = [
    "JOB_ID_PATTERN",
    "MAX_JOB_BYTES",
    "MAX_MESSAGE_BYTES_PER_JOB",
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
    "describe_validation_error",
    "encodes_as_utf8",
    "failed_record",
    "json_kind",
    "parse_job",
    "redacted_fields",
    "redacted_view",
    "succeeded_record",
    "utc_now_iso",
]
