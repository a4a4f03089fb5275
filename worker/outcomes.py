"""What Flower shows of a job: each delivery's Celery state and result tell what became of it.

Celery's task state is what Flower, `celery events` and Flower's `/metrics` show. Every
delivery of `halo.update_ticket` ends in the state that matches its job (the record itself
stays in the result store, the source of truth):

    runner's answer       Celery state   result / exception text (ids and codes, no job content)
    recorded, succeeded   SUCCESS        recorded: succeeded; changed status, agent
    recorded, failed      FAILURE        JobFailed('recorded: failed ticket_not_found (HTTP
                                         404, field ticket_id), disposition stop_all')
    deferred              RETRY          JobWaiting('deferred: halo_unavailable, next try at
                                         2026-12-07T16:50:03Z')
    parked                RETRY          JobWaiting('parked: waiting for Halo budget ...')
    busy                  RETRY          JobWaiting('busy: another worker holds this job ...')
    waiting               RETRY          JobWaiting('waiting: an earlier job on the ticket ...')
    duplicate             the record's   duplicate: succeeded; ... (or FAILURE, as recorded)

A deferred or busy job comes back from `halo:deferred` under the same task id, so Flower's
RETRY turns into the next delivery's state. A parked job ends inside a `halo.update_batch`
task, whose result counts its jobs by outcome; the batch also sends, for each job it
recorded, a task-succeeded or task-failed event under the job's id, so the job's own line
in Flower ends as it did (``recorded in batch <id>: ...``).

Why none of this changes delivery (read in celery 5.7.0 and sentry-sdk 2.75.0):

- FAILURE comes from raising `JobFailed` after the record is written. It is listed in the
  task's `throws`, so `celery/app/trace.py` (`get_log_policy`) logs it as "raised expected",
  at INFO and without `exc_info`, and `sentry_sdk/integrations/celery/__init__.py`
  (`_capture_exception`) skips exceptions in `task.throws`: no Sentry event. In
  `celery/worker/request.py` `Request.on_failure`, a late-acked task that failed is acked when
  `task_acks_on_failure_or_timeout` is set; it is requeued only for `WorkerLostError` (with
  `task_reject_on_worker_lost`) or a time limit, never for an exception the task raised. The
  task has no `autoretry_for` and never calls `Task.retry`, so nothing is published again.
- RETRY comes from raising `JobWaiting`, a `celery.exceptions.Retry`, without calling
  `Task.retry()`: that method is what publishes a new message before raising `Retry`; raising
  it alone publishes nothing. The tracer's `handle_retry` logs "retry: <message>" at INFO
  (results are ignored, so no backend write) and `Request.on_retry` acks the message (late
  acks) and sends `task-retried`. Sentry's integration ignores `Retry` (its
  `CELERY_CONTROL_FLOW_EXCEPTIONS`).
- `on_retry` sends `safe_repr` of the `Retry` object itself (billiard's `ExceptionInfo` wraps
  it), so `JobWaiting.__repr__` is what Flower's exception column shows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery.exceptions import Retry

from worker.models import ResultRecord
from worker.runner import RunResult

# Sends one Celery event: `send("task-failed", uuid=..., exception=...)`.
Send = Callable[..., object]


class JobFailed(Exception):
    """Raised by a task after its job's failure record is written: Flower shows FAILURE.

    Its text names the error code and disposition, never the error's message (Halo's answer,
    quoted there, can echo ticket text).
    """


class JobWaiting(Retry):
    """Raised by a task whose job waits (deferred, parked, busy): Flower shows RETRY.

    Nothing is published by raising it; the job comes back through the worker's own mover.
    """

    def __init__(self, message: str, when: datetime | None = None) -> None:
        super().__init__(message, None, when)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.when)


@dataclass
class Notes:
    """What the runner reported during one task: records written, deferrals, parks."""

    records: list[ResultRecord] = field(default_factory=list)
    deferrals: list[tuple[str, float]] = field(default_factory=list)  # (code, due_s)
    parked: list[str] = field(default_factory=list)  # connection names


class DeliveryNotes:
    """A `worker.runner.JobObserver` that notes, per worker thread, what the current task's
    jobs became; the runner calls observers in the job's own thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def watch(self) -> Iterator[Notes]:
        """Note what the runner reports in this thread until the block ends."""
        notes = Notes()
        self._local.notes = notes
        try:
            yield notes
        finally:
            self._local.notes = None

    def _current(self) -> Notes | None:
        notes: Notes | None = getattr(self._local, "notes", None)
        return notes

    def job_finished(
        self, record: ResultRecord, *, connection: str | None, duration_s: float
    ) -> None:
        del connection, duration_s
        if (notes := self._current()) is not None:
            notes.records.append(record)

    def job_deferred(self, connection: str, code: str, *, due_s: float) -> None:
        del connection
        if (notes := self._current()) is not None:
            notes.deferrals.append((code, due_s))

    def job_parked(self, connection: str) -> None:
        if (notes := self._current()) is not None:
            notes.parked.append(connection)


def conclude(result: RunResult, notes: Notes, stored: Mapping[str, Any] | None) -> str:
    """The task's return value for one delivery, or the exception that shows its state.

    Args:
        result: what the runner returned.
        notes: what the runner reported during the delivery.
        stored: the job's record as stored, read by the caller for a duplicate delivery.

    Raises:
        JobFailed: the job's record says it failed.
        JobWaiting: the job waits to run again (deferred, parked, busy).
    """
    if result is RunResult.RECORDED and notes.records:
        return _shown_record("recorded", notes.records[-1].model_dump(mode="json"))
    if result is RunResult.DUPLICATE and stored is not None:
        return _shown_record("duplicate", stored)
    if result is RunResult.DEFERRED and notes.deferrals:
        code, due_s = notes.deferrals[-1]
        due = datetime.fromtimestamp(due_s, UTC)
        raise JobWaiting(f"deferred: {code}, next try at {_iso(due)}", due)
    if result is RunResult.PARKED:
        where = f" of connection {notes.parked[-1]!r}" if notes.parked else ""
        raise JobWaiting(
            f"parked: waiting for Halo budget in the backlog{where}; it runs in a "
            "halo.update_batch task"
        )
    if result is RunResult.BUSY:
        raise JobWaiting(
            "busy: another worker holds this job; this delivery comes back when that "
            "worker's claim ends"
        )
    if result is RunResult.WAITING:
        raise JobWaiting(
            "waiting: an earlier job on the same ticket runs first; this job is published "
            "again when its turn comes"
        )
    return str(result.value)


def batch_summary(jobs: int, notes: Notes) -> str:
    """A batch task's result: its jobs counted by what became of them, codes included."""
    succeeded = sum(1 for r in notes.records if r.error is None)
    failed = Counter(
        f"{r.error.code.value}/{r.disposition.value if r.disposition else 'none'}"
        for r in notes.records
        if r.error is not None
    )
    deferred = Counter(code for code, _ in notes.deferrals)
    parts = [f"{succeeded} succeeded"]
    if failed:
        parts.append(f"{failed.total()} failed ({_counted(failed)})")
    if deferred:
        parts.append(f"{deferred.total()} deferred ({_counted(deferred)})")
    if notes.parked:
        parts.append(f"{len(notes.parked)} parked")
    untouched = jobs - len(notes.records) - len(notes.deferrals) - len(notes.parked)
    if untouched > 0:
        parts.append(f"{untouched} not run here (recorded already or held by another worker)")
    return f"{jobs} jobs: " + ", ".join(parts)


def announce_batch_jobs(send: Send, batch_id: str, records: list[ResultRecord]) -> None:
    """Tell Flower how each job a batch recorded ended, on the job's own task line.

    A parked job's own task ended RETRY ("parked: ..."), and its run happens inside the batch
    task: without this its line would say "waiting" for ever. The events carry the job's id
    as their task id and the same texts a single delivery would show; they change nothing
    but Flower's (and `celery events`') view.
    """
    for record in records:
        failed, text = outcome_text(f"recorded in batch {batch_id}", record.model_dump(mode="json"))
        if failed:
            send("task-failed", uuid=record.job_id, exception=repr(JobFailed(text)))
        else:
            send("task-succeeded", uuid=record.job_id, result=repr(text))


def outcome_text(delivery: str, record: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a stored record says failed, and the text that shows it (codes and field
    names, never the error's message)."""
    error = record.get("error")
    attempts = record.get("attempts")
    after = f", after {attempts} attempts" if isinstance(attempts, int) and attempts > 1 else ""
    if not isinstance(error, Mapping):
        changed = record.get("changed_fields") or []
        what = "changed " + ", ".join(map(str, changed)) if changed else "no change needed"
        return False, f"{delivery}: succeeded; {what}{after}"
    details = [f"HTTP {error['http_status']}"] if error.get("http_status") else []
    details += [f"field {error['field']}"] if error.get("field") else []
    code = str(error.get("code")) + (f" ({', '.join(details)})" if details else "")
    return True, f"{delivery}: failed {code}, disposition {record.get('disposition')}{after}"


def _shown_record(delivery: str, record: Mapping[str, Any]) -> str:
    failed, text = outcome_text(delivery, record)
    if failed:
        raise JobFailed(text)
    return text


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in counts.most_common())


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
