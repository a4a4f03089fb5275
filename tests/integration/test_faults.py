"""Halo misbehaving: retryable faults are retried inside the job's budget, permanent ones are
not, and an update is never applied twice.

The worker runs with `retry_max_attempts=4` and backoffs of at most 0.5 s (see conftest).
"""

from __future__ import annotations

import threading

import pytest

from fakehalo import FakeHalo, RecordedRequest
from producers.jobs import Producer
from tests.integration.harness import new_job, run_job, wait_until

pytestmark = pytest.mark.usefixtures("worker")

TICKET = "/api/tickets/4711"


def statuses(requests: list[RecordedRequest]) -> list[int | None]:
    return [request.status for request in requests]


def token_requests(fake: FakeHalo) -> list[RecordedRequest]:
    return fake.requests_to("POST", "/auth/token")


@pytest.mark.parametrize("retry_after", [1, None], ids=["with Retry-After", "without"])
def test_a_rate_limited_update_is_retried_and_then_succeeds(
    retry_after: int | None, producer: Producer, fake: FakeHalo
) -> None:
    fake.fail_next(1, 429, path="/api/tickets", method="POST", retry_after=retry_after)

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] > 1
    assert record["changed_fields"] == ["status_id"]
    refused, saved = fake.posts()
    assert (refused.status, saved.status) == (429, 201)
    if retry_after is not None:
        # Retry-After is a floor under the backoff: nothing was sent to Halo before it passed.
        after = [r for r in fake.requests() if r.seq > refused.seq]
        assert after[0].time_s - refused.time_s >= retry_after - 0.01
    assert record["halo_requests"] == len(fake.requests())
    assert fake.created_tickets() == []


def test_server_errors_are_retried_until_halo_answers(producer: Producer, fake: FakeHalo) -> None:
    fake.fail_next(2, 503, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] == 3
    assert statuses(fake.requests_to("GET", TICKET)) == [503, 503, 200]
    assert statuses(fake.posts()) == [201]
    assert record["halo_requests"] == len(fake.requests())


def test_a_read_timeout_is_retried_and_then_succeeds(producer: Producer, fake: FakeHalo) -> None:
    # Longer than the worker's 2 s read timeout.
    fake.hang_next(1, seconds=3.0, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] == 2
    assert [r.fault for r in fake.requests_to("GET", TICKET)] == ["hang", None]
    assert statuses(fake.posts()) == [201]


def test_a_dropped_connection_is_retried_and_then_succeeds(
    producer: Producer, fake: FakeHalo
) -> None:
    fake.connect_error_next(1, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] == 2
    assert statuses(fake.requests_to("GET", TICKET)) == [None, 200]


def test_an_update_saved_but_answered_too_late_is_not_posted_again(
    producer: Producer, fake: FakeHalo
) -> None:
    # Halo saves the update, then the answer outlasts the read timeout.
    fake.hang_next(1, seconds=3.0, path="/api/tickets", method="POST", applied=True)

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] == 2
    # The retry read the ticket, found it Closed, and reported what the first run changed.
    assert record["changed_fields"] == ["status_id"]
    assert len(fake.posts()) == 1
    assert record["result"][0]["status_name"] == "Closed"


def test_a_token_that_expires_mid_run_and_is_answered_400_is_refreshed_once(
    producer: Producer, fake: FakeHalo
) -> None:
    fake.configure(expired_token_status=400)
    # The ticket read is answered a second late; the token expires while the job waits on it.
    fake.hang_next(1, seconds=1.0, path=TICKET, method="GET", applied=True)
    job = new_job(status="Closed")
    expired = threading.Event()

    def expire_once_the_ticket_is_read() -> None:
        wait_until(lambda: bool(fake.requests_to("GET", TICKET)), 20, "the ticket read")
        fake.expire_tokens()
        expired.set()

    expirer = threading.Thread(target=expire_once_the_ticket_is_read, daemon=True)
    expirer.start()
    record = run_job(producer, job)
    expirer.join(5)

    assert expired.is_set()
    assert record["outcome"] == "succeeded", record["error"]
    assert record["attempts"] == 1
    refused = [r for r in fake.requests() if r.status == 400]
    assert len(refused) == 1
    # The worker may hold a token from an earlier job; either way, every token request
    # succeeds and exactly one follows the refusal.
    assert set(statuses(token_requests(fake))) == {200}
    [refresh] = [r for r in token_requests(fake) if r.seq > refused[0].seq]
    # The refused request is sent again with the new token, and succeeds.
    retried = [r for r in fake.requests() if r.seq > refresh.seq and r.path == refused[0].path]
    assert retried[0].status in (200, 201)
    # One update took effect; a POST refused for its token (if that was the refused request)
    # changed nothing.
    assert statuses([p for p in fake.posts() if p.seq != refused[0].seq]) == [201]
    assert record["halo_requests"] == len(fake.requests())


def test_server_errors_past_the_retry_budget_fail_with_halo_unavailable(
    producer: Producer, fake: FakeHalo
) -> None:
    fake.fail_next(50, 503, path=TICKET, method="GET")

    record = run_job(producer, new_job(status="Closed", error_handling="bounce"))

    assert record["outcome"] == "failed"
    assert record["disposition"] == "bounce"
    assert record["attempts"] == 4
    assert record["error"]["code"] == "halo_unavailable"
    assert record["error"]["retryable"] is True
    assert statuses(fake.requests_to("GET", TICKET)) == [503] * 4
    assert fake.posts() == []


def test_rate_limiting_past_the_retry_budget_fails_with_halo_rate_limited(
    producer: Producer, fake: FakeHalo
) -> None:
    # Halo limits the tenant, not one path: every ticket read is refused, whether the job reads
    # its ticket alone or, parked behind the rate limit, in a released batch's list read.
    fake.fail_next(50, 429, path="/api/tickets", method="GET")

    record = run_job(producer, new_job(status="Closed"))

    reads = [r for r in fake.requests() if r.method == "GET" and "/api/tickets" in r.path.lower()]
    assert record["outcome"] == "failed", [(r.path, r.status) for r in reads]
    assert record["error"]["code"] == "halo_rate_limited"
    assert record["error"]["retryable"] is True
    assert record["attempts"] == 4
    assert statuses(reads) == [429] * 4
    assert fake.posts() == []


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "halo_rejected"), (422, "halo_rejected"), (403, "halo_forbidden")],
)
def test_a_refused_update_fails_at_once_without_a_retry(
    status: int, code: str, producer: Producer, fake: FakeHalo
) -> None:
    fake.fail_next(
        1,
        status,
        body="Status is not valid for this ticket type.",
        path="/api/tickets",
        method="POST",
    )

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "failed"
    assert record["error"]["code"] == code
    assert record["error"]["http_status"] == status
    assert record["error"]["retryable"] is False
    assert record["attempts"] == 1
    assert statuses(fake.posts()) == [status]


def test_an_update_answered_for_another_ticket_fails_as_an_unexpected_response(
    producer: Producer, fake: FakeHalo
) -> None:
    fake.answer_for_other_id_next(1)

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "failed"
    assert record["error"]["code"] == "halo_unexpected_response"
    assert len(fake.posts()) == 1
