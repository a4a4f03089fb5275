"""Error reporting to Sentry: on when ``SENTRY_DSN`` is set, initialised at worker start.

What is reported:

- A job that failed for a reason an operator must act on, once per job (when its record is
  written; a record is written once fleet-wide), tagged `job_id`, `connection` and `code`:

      internal_error            a bug in the worker, or a job whose runs kept killing it
      halo_auth_failed          the connection's credentials or scope are wrong
      halo_forbidden            the API application's agent lacks a Halo permission
      halo_rejected             Halo refused an update the worker built (400/422)
      halo_unexpected_response  Halo broke an invariant of its API
      unknown_connection        a job names a connection this fleet does not have

- Anything logged at ERROR in the worker (the logging integration), e.g. a failed mover round.
  An internal error's own log line is its job's event, carrying the traceback; no second event
  is sent for that job.

Not reported: failures the rule's author fixes (invalid_job, template_error, invalid_ticket_id,
ticket_not_found, lookup_not_found, lookup_ambiguous): the result record tells the rule runner.
Nor halo_rate_limited / halo_unavailable after the retry budget: an outage would send one event
per job; the metrics show it (`halo_requests_total` by status, `halo_jobs_total` by code).
Retries are never reported: a deferral is not an error, and Celery's integration ignores
Retry and Reject.

What leaves the worker:

- ``send_default_pii=False`` and ``include_local_variables=False``: no task arguments, no frame
  locals (sentry-sdk 2.75 sends locals by default, with the job in them).
- A failed job's event carries its code, HTTP status, field and counts, never its error
  message: Halo's answer, quoted there, can echo ticket text. The full message is in the
  record (``halo-jobs result JOB_ID``).
- No exception's message, in an event's exception or its log message, nor what Celery's and
  kombu's multi-line log messages quote of a task message: the same rules as the logs
  (`worker.logscrub`). The exception's type and stack frames are sent.
- `Scrubber` runs on every event and breadcrumb: any key that looks secret or holds job text
  (secret, token, password, authorization, cookie, variables, details, summary...) is replaced,
  at any depth, and ``Bearer ...`` and the connections' client secrets are masked in any string.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Final

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.types import Event, Hint

from worker.errors import ErrorCode
from worker.logscrub import WITHHELD, safe_message
from worker.models import ResultRecord
from worker.settings import Settings

log = logging.getLogger("halo.sentry")

FILTERED: Final = "[Filtered]"
REPORTED_CODES: Final = frozenset(
    {
        ErrorCode.INTERNAL_ERROR,
        ErrorCode.HALO_AUTH_FAILED,
        ErrorCode.HALO_FORBIDDEN,
        ErrorCode.HALO_REJECTED,
        ErrorCode.HALO_UNEXPECTED_RESPONSE,
        ErrorCode.UNKNOWN_CONNECTION,
    }
)
_SENSITIVE_KEY: Final = re.compile(
    r"secret|token|passw|authori[sz]ation|cookie|api_?key|credential|dsn|"
    r"variables|details|summary",
    re.IGNORECASE,
)
_BEARER: Final = re.compile(r"bearer\s+[^\s\"',;]+", re.IGNORECASE)
# Secrets shorter than this are not masked inside strings: it would mangle ordinary words.
_MIN_SECRET_CHARS: Final = 6
# Job ids whose failure was already reported by an error event; enough for a burst of bugs.
_REMEMBERED: Final = 10_000


class Scrubber:
    """Removes secrets and job text from anything bound for Sentry."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        usable = {s for s in secrets if len(s) >= _MIN_SECRET_CHARS}
        self._secrets = sorted(usable, key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        """A scrubbed copy of `value` (dicts, lists and strings, at any depth)."""
        if isinstance(value, Mapping):
            return {
                key: FILTERED if isinstance(key, str) and _SENSITIVE_KEY.search(key) else self(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, text: str) -> str:
        """`text` with bearer tokens and known secrets masked."""
        text = _BEARER.sub(f"Bearer {FILTERED}", text)
        for secret in self._secrets:
            text = text.replace(secret, FILTERED)
        return text


class SentryReporter:
    """The Sentry hooks: event filters, job scope tags, and one event per failed job."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrub = scrubber
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def before_send(self, event: Event, hint: Hint) -> Event | None:
        scrubbed: Event = self.scrub(_without_exception_text(event, hint))
        tags = scrubbed.get("tags")
        tags = dict(tags) if isinstance(tags, Mapping) else {}
        extra = scrubbed.get("extra")
        for key in ("job_id", "connection", "code"):
            value = extra.get(key) if isinstance(extra, Mapping) else None
            if key not in tags and isinstance(value, str):
                tags[key] = value
        scrubbed["tags"] = tags
        if scrubbed.get("exception") and isinstance(tags.get("job_id"), str):
            self._remember(tags["job_id"])
        return scrubbed

    def before_breadcrumb(self, crumb: dict[str, Any], hint: Hint) -> dict[str, Any] | None:
        record = hint.get("log_record") if isinstance(hint, Mapping) else None
        if isinstance(record, logging.LogRecord):
            crumb = {**crumb, "message": safe_message(record)}
        scrubbed: dict[str, Any] = self.scrub(crumb)
        return scrubbed

    # -- worker.runner.JobObserver -----------------------------------------------------------

    def job_finished(
        self, record: ResultRecord, *, connection: str | None, duration_s: float
    ) -> None:
        del duration_s
        error = record.error
        if error is None or not self.should_report(record):
            return
        code = error.code.value
        status = f" (HTTP {error.http_status})" if error.http_status else ""
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("job_id", record.job_id)
            scope.set_tag("connection", connection or "none")
            scope.set_tag("code", code)
            scope.set_context(
                "job",
                {
                    "code": code,
                    "http_status": error.http_status,
                    "field": error.field,
                    "retryable": error.retryable,
                    "disposition": record.disposition.value if record.disposition else None,
                    "attempts": record.attempts,
                    "halo_requests": record.halo_requests,
                },
            )
            # One issue per cause and connection, not one per job.
            scope.fingerprint = ["halo-job-failed", code, connection or ""]
            sentry_sdk.capture_message(f"Update Halo Ticket job failed: {code}{status}", "error")

    def should_report(self, record: ResultRecord) -> bool:
        """Whether a job's record deserves an event: a code in `REPORTED_CODES`, and no error
        event about the job sent already (an internal error's log line, with its traceback)."""
        if record.error is None or record.error.code not in REPORTED_CODES:
            return False
        with self._lock:
            return record.job_id not in self._reported

    def job_deferred(self, connection: str, code: str, *, due_s: float) -> None:
        del connection, code, due_s  # a retry is not an error

    def job_parked(self, connection: str) -> None:
        del connection

    def _remember(self, job_id: str) -> None:
        with self._lock:
            self._reported[job_id] = None
            while len(self._reported) > _REMEMBERED:
                self._reported.popitem(last=False)


def _without_exception_text(event: Event, hint: Hint) -> Event:
    """A copy of `event` with no exception message: not in its exceptions, nor in the log
    message it was made from."""
    record = hint.get("log_record") if isinstance(hint, Mapping) else None
    made: dict[str, Any] = dict(event)
    if isinstance(record, logging.LogRecord):
        message = safe_message(record)
        made["logentry"] = {"message": message, "formatted": message, "params": []}
    exceptions = made.get("exception")
    if isinstance(exceptions, Mapping) and isinstance(exceptions.get("values"), list):
        values = [_no_text(value) for value in exceptions["values"]]
        made["exception"] = {**exceptions, "values": values}
    return made  # type: ignore[return-value]  # Event is a TypedDict; this is one, copied


def _no_text(value: Any) -> Any:
    return {**value, "value": WITHHELD} if isinstance(value, Mapping) else value


def init(settings: Settings, secrets: Iterable[str]) -> SentryReporter | None:
    """Start the Sentry SDK when a DSN is configured (at worker start, never at import).

    Args:
        settings: the worker's settings (`SENTRY_DSN`, `HALO_SENTRY_ENVIRONMENT`).
        secrets: strings to mask wherever they appear (the connections' client secrets).

    Returns:
        The reporter to register as a job observer, or None when Sentry is off.
    """
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    if not dsn:
        return None
    reporter = SentryReporter(Scrubber(secrets))
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.sentry_environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        # No breadcrumbs: in a threads pool they are not one job's story. A pool thread starts
        # with a copy of the consumer thread's breadcrumbs ("Task <id> received" of whichever
        # jobs arrived meanwhile), so an event about one job would carry other jobs' ids and
        # lines. Events carry the job's own tags and context instead.
        max_breadcrumbs=0,
        # Only what is listed: no automatic httpx or Redis breadcrumbs of URLs and keys.
        auto_enabling_integrations=False,
        integrations=[
            # Trace headers would be added to every task message; tracing is not used.
            CeleryIntegration(propagate_traces=False),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        before_send=reporter.before_send,
        before_breadcrumb=reporter.before_breadcrumb,
    )
    log.info("sentry reporting on", extra={"environment": settings.sentry_environment})
    return reporter


def tag_task(task_id: str | None, args: Any) -> None:
    """Tag the running task's Sentry scope with its job_id and connection (task_prerun)."""
    if not sentry_sdk.is_initialized():
        return
    first = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(first, Mapping) and task_id:  # a single job: its task id is its job_id
        sentry_sdk.set_tag("job_id", task_id)
    connection = first.get("connection") if isinstance(first, Mapping) else first
    if isinstance(connection, str):
        sentry_sdk.set_tag("connection", connection)


def flush(timeout_s: float = 2.0) -> None:
    """Send what is queued (at worker shutdown)."""
    if sentry_sdk.is_initialized():
        sentry_sdk.flush(timeout=timeout_s)
