"""What a task tells Flower about its job: the texts of `worker.outcomes`, from the runner's
answer and what the runner reported, naming codes and fields and never job content."""

from __future__ import annotations

from typing import Any

import pytest

from worker.errors import HaloRejected, TicketNotFound
from worker.models import failed_record, parse_job, succeeded_record
from worker.outcomes import (
    DeliveryNotes,
    JobFailed,
    JobWaiting,
    Notes,
    announce_batch_jobs,
    batch_summary,
    conclude,
)
from worker.runner import RunResult

SECRET_TEXT = "VARIABLE-do-not-show"


def job(**fields: Any) -> dict[str, Any]:
    return {
        "job_id": "j-1",
        "connection": "acme",
        "ticket_id": "{{custom.id}}",
        "summary": SECRET_TEXT,
        "variables": {"custom": {"id": 7, "note": SECRET_TEXT}},
        **fields,
    }


def failed(error: Exception, **fields: Any) -> Notes:
    parsed = parse_job(job(**fields))
    assert isinstance(error, TicketNotFound | HaloRejected)
    record = failed_record(
        "j-1", error, job=parsed, attempts=1, halo_requests=1, submitted_at="2026-12-07T10:00:00Z"
    )
    return Notes(records=[record])


def succeeded(changed: list[str], attempts: int = 1) -> Notes:
    record = succeeded_record(
        parse_job(job()),
        "j-1",
        ticket={"id": 7},
        changed_fields=changed,
        warnings=[],
        attempts=attempts,
        halo_requests=2,
        submitted_at="2026-12-07T10:00:00Z",
    )
    return Notes(records=[record])


def test_a_failed_job_raises_an_error_naming_its_code_status_field_and_disposition() -> None:
    error = TicketNotFound(f"no ticket {SECRET_TEXT}", field="ticket_id", http_status=404)
    notes = failed(error, error_handling="Stop All")

    with pytest.raises(JobFailed) as raised:
        conclude(RunResult.RECORDED, notes, None)

    text = str(raised.value)
    assert text == (
        "recorded: failed ticket_not_found (HTTP 404, field ticket_id), disposition stop_all"
    )
    assert SECRET_TEXT not in repr(raised.value)


def test_a_succeeded_job_returns_what_changed_and_how_many_attempts_it_took() -> None:
    assert conclude(RunResult.RECORDED, succeeded(["status_id", "agent_id"]), None) == (
        "recorded: succeeded; changed status_id, agent_id"
    )
    assert conclude(RunResult.RECORDED, succeeded([], attempts=3), None) == (
        "recorded: succeeded; no change needed, after 3 attempts"
    )


def test_a_duplicate_delivery_repeats_the_stored_outcome_failure_included() -> None:
    stored = failed(HaloRejected("refused", http_status=400), error_handling="bounce")
    record = stored.records[0].model_dump(mode="json")

    with pytest.raises(JobFailed, match=r"^duplicate: failed halo_rejected \(HTTP 400\), "):
        conclude(RunResult.DUPLICATE, Notes(), record)


def test_a_deferred_job_raises_a_retry_naming_its_code_and_next_try_in_utc() -> None:
    notes = Notes(deferrals=[("halo_rate_limited", 1_796_640_003.4)])

    with pytest.raises(JobWaiting) as raised:
        conclude(RunResult.DEFERRED, notes, None)

    expected = "deferred: halo_rate_limited, next try at 2026-12-07T10:40:03Z"
    assert str(raised.value) == expected
    # Celery's task-retried event carries repr() of the Retry itself: Flower shows this.
    assert repr(raised.value) == f"JobWaiting({expected!r})"
    # Rebuilt from its reduction as pickle would (a prefork pool sends it between processes).
    rebuild, args = raised.value.__reduce__()
    assert str(rebuild(*args)) == expected


def test_parked_busy_and_ticket_waiting_deliveries_say_why_they_wait() -> None:
    with pytest.raises(JobWaiting, match=r"^parked: .* connection 'acme'.*halo\.update_batch"):
        conclude(RunResult.PARKED, Notes(parked=["acme"]), None)
    with pytest.raises(JobWaiting, match=r"^busy: another worker holds this job"):
        conclude(RunResult.BUSY, Notes(), None)
    with pytest.raises(JobWaiting, match=r"^waiting: an earlier job on the same ticket"):
        conclude(RunResult.WAITING, Notes(), None)


def test_a_batch_counts_its_jobs_by_outcome_with_codes() -> None:
    notes = succeeded(["status_id"])
    notes.records += succeeded([]).records
    notes.records += failed(TicketNotFound("x", http_status=404), error_handling="stop").records
    notes.deferrals.append(("halo_unavailable", 0.0))

    assert batch_summary(5, notes) == (
        "5 jobs: 2 succeeded, 1 failed (ticket_not_found/stop: 1), "
        "1 deferred (halo_unavailable: 1), 1 not run here (recorded already or held by "
        "another worker)"
    )


def test_notes_are_kept_per_thread_and_only_while_watched() -> None:
    observer = DeliveryNotes()
    observer.job_parked("before")  # outside a task: ignored
    with observer.watch() as notes:
        observer.job_parked("acme")
        observer.job_deferred("acme", "halo_unavailable", due_s=1.0)
    observer.job_parked("after")

    assert notes.parked == ["acme"]
    assert notes.deferrals == [("halo_unavailable", 1.0)]


def test_a_batch_tells_each_recorded_jobs_own_task_how_it_ended() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    records = succeeded(["status_id"]).records
    records += failed(TicketNotFound("x", http_status=404), error_handling="stop").records

    announce_batch_jobs(lambda kind, **fields: sent.append((kind, fields)), "b-9", records)

    won = "'recorded in batch b-9: succeeded; changed status_id'"
    lost = (
        "JobFailed('recorded in batch b-9: failed ticket_not_found (HTTP 404), disposition stop')"
    )
    assert sent == [
        ("task-succeeded", {"uuid": "j-1", "result": won}),
        ("task-failed", {"uuid": "j-1", "exception": lost}),
    ]
