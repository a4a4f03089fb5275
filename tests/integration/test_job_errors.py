"""Jobs that fail on their own account: each ends in one failed record, and Halo is never
written (most are never even asked)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import RedisServer
from tests.integration.harness import new_job, run_job, wait_for_record
from worker.keys import result_key
from worker.models import MAX_RENDERED_CHARS, QUEUE, TASK_NAME

# Every test runs once per tenant profile of the fake (current, legacy, strict).
pytestmark = pytest.mark.usefixtures("halo_profile", "worker")


@pytest.fixture(scope="module")
def raw_celery(redis_server: RedisServer) -> Iterator[Celery]:
    """A bare Celery client: publishes what it is given, with no producer-side validation."""
    app = Celery("raw-publisher", broker=redis_server.url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    yield app
    app.close()


def send_raw(app: Celery, *args: Any, **kwargs: Any) -> str:
    """Publish `halo.update_ticket` with these arguments under a fresh task id."""
    task_id = f"raw-{uuid.uuid4()}"
    app.send_task(TASK_NAME, args=list(args), kwargs=kwargs, task_id=task_id, queue=QUEUE)
    return task_id


def test_a_missing_ticket_is_never_posted_and_fails_with_the_jobs_disposition(
    producer: Producer, fake: FakeHalo
) -> None:
    job = new_job(ticket_id="999999", status="Closed", error_handling="Stop")

    record = run_job(producer, job)

    assert record["outcome"] == "failed"
    assert record["disposition"] == "stop"
    assert record["result"] is None
    assert record["variables"] == {}
    assert record["changed_fields"] == []
    error = record["error"]
    assert error["code"] == "ticket_not_found"
    assert error["retryable"] is False
    assert error["http_status"] == 404
    assert "999999" in error["message"]
    assert [r.status for r in fake.requests_to("GET", "/api/tickets/999999")] == [404]
    assert fake.posts() == []
    assert fake.created_tickets() == []


@pytest.mark.parametrize("ticket_id", ["0", "", "-3", "12.5", "abc"])
def test_a_ticket_id_that_is_not_a_positive_integer_fails_without_any_halo_request(
    ticket_id: str, producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id=ticket_id, status="Closed"))

    assert record["outcome"] == "failed"
    assert record["disposition"] == "exception"
    assert record["error"]["code"] == "invalid_ticket_id"
    assert record["error"]["field"] == "ticket_id"
    assert record["error"]["retryable"] is False
    assert record["halo_requests"] == 0
    assert fake.requests() == []


def test_a_ticket_id_rendered_from_a_variable_to_a_non_number_is_refused_before_halo(
    producer: Producer, fake: FakeHalo
) -> None:
    job = new_job(ticket_id="{{custom.ticket.id}}", variables={"custom": {"ticket": {"id": -3}}})

    record = run_job(producer, job)

    assert record["error"]["code"] == "invalid_ticket_id"
    assert "-3" in record["error"]["message"]
    assert fake.requests() == []


def test_an_undefined_variable_fails_with_a_template_error_naming_the_path(
    producer: Producer, fake: FakeHalo
) -> None:
    job = new_job(
        ticket_id="{{custom.ticket.id}}",
        error_handling="continue",
        variables={"custom": {"other": 1}},
    )

    record = run_job(producer, job)

    assert record["outcome"] == "failed"
    assert record["disposition"] == "continue"
    assert record["error"]["code"] == "template_error"
    # The message names the field, the whole expression, where it resolved and the missing key.
    assert record["error"]["field"] == "ticket_id"
    assert record["error"]["message"] == (
        'ticket_id: {{custom.ticket.id}}: custom has no key "ticket" (available: other)'
    )
    assert record["error"]["retryable"] is False
    assert fake.requests() == []


def test_a_template_amplified_to_megabytes_fails_naming_its_size_and_sends_and_stores_nothing_big(
    producer: Producer, fake: FakeHalo
) -> None:
    # Under 2 KB of template reading one 200,000-character variable 125 times asks for 25 MB.
    job = new_job(
        details="{{custom.big}}" * 125,
        status="Closed",
        variables={"custom": {"big": "x" * 200_000}},
    )

    record = run_job(producer, job)

    assert record["outcome"] == "failed"
    assert record["error"]["code"] == "template_error"
    assert record["error"]["field"] == "details"
    limit = MAX_RENDERED_CHARS["details"]
    assert record["error"]["message"].startswith(
        f"details: renders to 25,000,000 characters, more than the limit of {limit:,}"
    )
    assert fake.requests() == []
    # The record and its feed entry are the size of an error, not of the rendered text.
    stored = producer.redis.get(result_key(job["job_id"]))
    assert stored is not None
    assert len(str(stored)) < 10_000


def test_an_unknown_connection_fails_naming_it_without_any_halo_request(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(connection="globex", error_handling="Bounce"))

    assert record["outcome"] == "failed"
    assert record["disposition"] == "bounce"
    assert record["error"]["code"] == "unknown_connection"
    assert "globex" in record["error"]["message"]
    assert record["error"]["retryable"] is False
    assert fake.requests() == []


def test_a_name_that_matches_nothing_fails_listing_close_names_and_is_never_posted(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(status="Closd", error_handling="stop_all"))

    assert record["disposition"] == "stop_all"
    assert record["error"]["code"] == "lookup_not_found"
    assert "Closed" in record["error"]["message"]
    assert fake.posts() == []


def test_an_invalid_job_published_around_the_producer_ends_in_an_invalid_job_record(
    raw_celery: Celery, producer: Producer, fake: FakeHalo
) -> None:
    # No ticket_id, and a key the contract does not know.
    task_id = send_raw(raw_celery, {"connection": "acme", "colour": "red", "meta": {"k": 1}})

    record = wait_for_record(producer, task_id)

    assert record["job_id"] == task_id
    assert record["outcome"] == "failed"
    assert record["disposition"] == "exception"
    assert record["error"]["code"] == "invalid_job"
    assert record["error"]["retryable"] is False
    assert "ticket_id" in record["error"]["message"]
    assert "colour" in record["error"]["message"]
    assert record["meta"] == {"k": 1}
    assert fake.requests() == []


def test_an_invalid_job_carrying_its_own_job_id_is_recorded_under_that_id(
    raw_celery: Celery, producer: Producer
) -> None:
    job = new_job(ticket_id=["4711"])
    send_raw(raw_celery, job)

    record = wait_for_record(producer, job["job_id"])

    assert record["error"]["code"] == "invalid_job"
    assert "ticket_id" in record["error"]["message"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (({"connection": "acme", "ticket_id": "4711"}, "extra"), {}),
        (({"connection": "acme", "ticket_id": "4711"},), {"colour": "red"}),
        (("not an object",), {}),
    ],
    ids=["no arguments", "two arguments", "an unknown keyword", "a string job"],
)
def test_a_task_of_the_wrong_argument_shape_is_recorded_as_invalid_under_its_task_id(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    raw_celery: Celery,
    producer: Producer,
    fake: FakeHalo,
) -> None:
    task_id = send_raw(raw_celery, *args, **kwargs)

    record = wait_for_record(producer, task_id)

    assert record["job_id"] == task_id
    assert record["outcome"] == "failed"
    assert record["error"]["code"] == "invalid_job"
    assert fake.requests() == []
