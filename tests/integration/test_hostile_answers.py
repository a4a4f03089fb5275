"""Answers from Halo (or whatever answers in its place) that could leak a token or lose a record.

- Halo's token endpoint can answer 200 with a body that still holds a live access token but
  does not parse (a null `expires_in`, a truncated body). The job's record and its feed entry
  are read by every producer for the record's lifetime, so the failure describes the answer's
  shape and never quotes it; the worker's log does not carry it either.
- A ticket answer nested hundreds of levels deep, or holding text that is not valid Unicode,
  still ends the job in a record, with those values replaced.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from tests.integration.harness import feed_entries, new_job, run_job
from worker.writable import CUT, WRITTEN_CUT

pytestmark = pytest.mark.usefixtures("worker")

# The answers, each built around a token; `{token}` is replaced by a fresh one per test.
BROKEN_ANSWERS = {
    "expires_in null": (
        '{{"access_token": "{token}", "token_type": "Bearer", "expires_in": null}}',
        "expires_in is null",
    ),
    "no access_token key": (
        '{{"token": "{token}", "token_type": "Bearer", "expires_in": 3600}}',
        "access_token is missing",
    ),
    "truncated JSON": ('{{"access_token": "{token}", "expires_in": 36', "not JSON"),
    "a form, not JSON": ("access_token={token}&expires_in=3600", "not JSON"),
}


@pytest.mark.parametrize("shape", sorted(BROKEN_ANSWERS))
def test_a_token_answer_that_does_not_parse_fails_the_job_without_quoting_the_token(
    shape: str,
    producer: Producer,
    fake: FakeHalo,
    worker: WorkerProcess,
    redis_client: redis.Redis,
) -> None:
    token = f"live-token-{uuid.uuid4().hex}"
    template, says = BROKEN_ANSWERS[shape]
    # The worker's token is refused from now on, so the job must ask for a new one.
    fake.expire_tokens()
    fake.fail_next(1, 200, template.format(token=token), path="/auth/token", method="POST")

    record = run_job(producer, new_job(status="Closed"))

    assert token not in json.dumps(record)
    [entry] = [
        fields for _, fields in feed_entries(redis_client) if record["job_id"] in str(fields)
    ]
    assert token not in json.dumps(entry)
    assert token not in worker.log_text()
    assert record["outcome"] == "failed"
    error = record["error"]
    assert error["code"] == "halo_unexpected_response", error
    assert error["retryable"] is False
    assert says in error["message"]
    assert "connection 'acme'" in error["message"]
    assert fake.posts() == [], "nothing is written to Halo without a token"


def test_a_ticket_answer_too_deep_or_not_unicode_still_ends_the_job_in_a_record(
    producer: Producer, fake: FakeHalo
) -> None:
    ticket = fake.ticket(4711)
    assert ticket is not None
    deep: dict[str, object] = {"a": "leaf"}
    for _ in range(299):
        deep = {"a": deep}
    # json.dumps writes the lone surrogate as the escape "\udce9", as a broken encoder would.
    answer = {**ticket, "client_name": deep, "summary": "caf\udce9 printer"}
    fake.fail_next(1, 200, json.dumps(answer), path="/api/tickets/4711", method="GET")

    # No field to change: the record's result is the ticket as that answer gave it.
    record = run_job(producer, new_job())

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == []
    [result] = record["result"]
    assert result["summary"] == "caf\ufffd printer"
    assert CUT in json.dumps(result["client_name"])
    assert record["warnings"] == [WRITTEN_CUT]
    assert fake.posts() == []
