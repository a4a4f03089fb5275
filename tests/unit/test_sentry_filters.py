"""What the Sentry hooks let out, and which failures they report (no SDK, no network)."""

from __future__ import annotations

from typing import Any

import pytest

from worker import errors
from worker.errors import ErrorCode
from worker.models import ResultRecord, failed_record
from worker.sentry import FILTERED, REPORTED_CODES, Scrubber, SentryReporter

SECRET = "s3cr3t-client-value"


def record_for(code: ErrorCode, job_id: str = "job-1") -> ResultRecord:
    """A failed record with this code."""
    error_class = next(
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.JobError)
        and getattr(cls, "code", None) is code
    )
    return failed_record(
        job_id,
        error_class("message"),
        job=None,
        attempts=1,
        halo_requests=0,
        submitted_at="2026-11-27T10:00:00.000Z",
    )


def test_keys_that_hold_secrets_or_job_text_are_filtered_at_any_depth() -> None:
    scrub = Scrubber([SECRET])
    event: dict[str, Any] = {
        "request": {"headers": {"Authorization": "Bearer abc", "Accept": "json"}},
        "extra": {
            "job": {"variables": {"x": 1}, "summary": "s", "details": "d", "status": "Closed"},
            "form": [{"client_secret": "x", "access_token": "y", "password": "z"}],
        },
        "tags": {"job_id": "j-1", "connection": "acme"},
    }

    scrubbed = scrub(event)

    assert scrubbed["request"]["headers"] == {"Authorization": FILTERED, "Accept": "json"}
    assert scrubbed["extra"]["job"] == {
        "variables": FILTERED,
        "summary": FILTERED,
        "details": FILTERED,
        "status": "Closed",
    }
    assert scrubbed["extra"]["form"] == [
        {"client_secret": FILTERED, "access_token": FILTERED, "password": FILTERED}
    ]
    assert scrubbed["tags"] == {"job_id": "j-1", "connection": "acme"}
    assert event["extra"]["job"]["summary"] == "s"  # the original is left alone


def test_bearer_tokens_and_known_secrets_are_masked_inside_text() -> None:
    scrub = Scrubber([SECRET, "short"])

    text = scrub.text(f"sent Authorization: Bearer eyJabc.def-123 with {SECRET}; short is ok")

    assert "eyJabc" not in text
    assert SECRET not in text
    assert "short is ok" in text  # too short to mask without mangling ordinary words


def test_before_send_tags_an_event_from_its_log_fields_and_scrubs_it() -> None:
    reporter = SentryReporter(Scrubber([SECRET]))
    event: Any = {
        "logger": "halo.runner",
        "extra": {"job_id": "j-9", "code": "internal_error", "note": SECRET},
        "exception": {"values": [{"type": "KeyError", "value": f"'{SECRET}'"}]},
    }

    sent = reporter.before_send(event, {})

    assert sent is not None
    assert sent["tags"] == {"job_id": "j-9", "code": "internal_error"}
    assert SECRET not in repr(sent)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_only_failures_an_operator_acts_on_are_reported(code: ErrorCode) -> None:
    reporter = SentryReporter(Scrubber())
    operators = {
        "internal_error",
        "halo_auth_failed",
        "halo_forbidden",
        "halo_rejected",
        "halo_unexpected_response",
        "unknown_connection",
    }

    assert reporter.should_report(record_for(code)) is (code.value in operators)
    assert (code in REPORTED_CODES) is (code.value in operators)


def test_an_internal_error_already_reported_with_its_traceback_is_not_reported_again() -> None:
    reporter = SentryReporter(Scrubber())
    log_event: Any = {
        "extra": {"job_id": "j-7", "code": "internal_error"},
        "exception": {"values": [{"type": "TypeError", "value": "boom"}]},
    }

    reporter.before_send(log_event, {})

    assert not reporter.should_report(record_for(ErrorCode.INTERNAL_ERROR, "j-7"))
    assert reporter.should_report(record_for(ErrorCode.INTERNAL_ERROR, "j-8"))
