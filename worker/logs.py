"""Structured logs: one JSON object per line, ids in fields, nothing secret or from the email.

`job_finished` writes the one line per job outcome that operators search and alert on.

Whoever logged a line, its message and traceback go through `worker.logscrub`: no exception
text, no task message quoted by Celery.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

from worker.logscrub import safe_message, safe_traceback
from worker.models import ResultRecord

log = logging.getLogger("halo.jobs")

# Attributes every LogRecord has; anything else was passed in `extra` and becomes a field.
_STANDARD: Final = frozenset(
    set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, and `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": safe_message(record),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it was raised, not its message: messages of
            # third-party exceptions can carry request data, a bug's can carry job text.
            line["exception"] = record.exc_info[0].__name__
            if record.exc_info[1] is not None:
                line["traceback"] = safe_traceback(record.exc_info[1])
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    """Send every log line of the process to stderr as JSON, at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def job_finished(
    record: ResultRecord, *, connection: str | None, ticket_id: str | None, duration_s: float
) -> None:
    """Log a job's outcome: ids, outcome, code, attempts, Halo requests, duration."""
    log.info(
        "job %s",
        record.outcome.value,
        extra={
            "job_id": record.job_id,
            "connection": connection,
            "ticket_id": ticket_id,
            "outcome": record.outcome.value,
            "code": record.error.code.value if record.error else None,
            "disposition": record.disposition.value if record.disposition else None,
            "attempts": record.attempts,
            "halo_requests": record.halo_requests,
            "changed_fields": record.changed_fields,
            "duration_ms": round(duration_s * 1000, 1),
        },
    )
