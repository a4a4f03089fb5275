"""The one publishing path: what a job message on the broker holds and shows.

No worker runs in this module, so each message published stays on the queue and is read back
as the broker holds it. The job carries a marker in its email-derived fields; a message's
headers (what Celery events, Flower and `celery inspect` show) must never hold it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from celery import Celery

from producers.jobs import Producer
from tests.harness.processes import RedisServer
from tests.integration.harness import new_job
from worker.celeryconfig import BATCH_TASK_NAME
from worker.models import QUEUE, TASK_NAME
from worker.publishing import send_batch, send_job

MARKER = "MARKER-email-body-7f3a"


@pytest.fixture
def celery_app(redis_server: RedisServer) -> Iterator[Celery]:
    """A Celery app on the private Redis, as the worker's republishing uses one."""
    made = Celery("halo-test", broker=redis_server.url, set_as_current=False)
    made.conf.update(task_serializer="json", accept_content=["json"])
    yield made
    made.close()


def secret_job() -> dict[str, Any]:
    return new_job(
        summary=f"[Escalated] {MARKER}",
        details=f"<p>{MARKER}</p>",
        variables={"custom": {"body": MARKER}},
        meta={"rule": MARKER},
    )


def take_message(client: redis.Redis, task_id_or_task: str) -> dict[str, Any]:
    """Remove and return the one queued message whose task id (or task name) is given."""
    for raw in cast(list[str], client.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        headers = message["headers"]
        if task_id_or_task in (headers.get("id"), headers.get("task")):
            client.lrem(QUEUE, 1, raw)
            return dict(message)
    raise AssertionError(f"no message of {task_id_or_task} on {QUEUE}")


def body_of(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))


def test_a_job_published_again_by_the_worker_is_the_message_the_producer_sent(
    producer: Producer, celery_app: Celery, redis_client: redis.Redis
) -> None:
    job = secret_job()
    job_id = producer.submit(job)
    submitted = take_message(redis_client, job_id)
    args, kwargs, _ = body_of(submitted)

    send_job(celery_app, job_id, args[0], kwargs["submitted_at"])
    republished = take_message(redis_client, job_id)

    assert body_of(republished) == body_of(submitted)
    for header in ("task", "id", "argsrepr", "kwargsrepr"):
        assert republished["headers"][header] == submitted["headers"][header], header
    assert submitted["headers"]["task"] == TASK_NAME
    shown = {k: job[k] for k in ("job_id", "connection", "ticket_id")}
    assert json.loads(submitted["headers"]["argsrepr"]) == [shown]
    assert json.loads(submitted["headers"]["kwargsrepr"]) == {
        "submitted_at": kwargs["submitted_at"]
    }
    assert MARKER not in json.dumps(submitted["headers"])
    assert MARKER in json.dumps(body_of(submitted))  # the job itself travels whole


def test_a_job_without_a_submission_time_is_published_without_keywords(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    job = secret_job()
    send_job(celery_app, job["job_id"], job, None)
    message = take_message(redis_client, job["job_id"])
    assert body_of(message)[1] == {}
    assert message["headers"]["kwargsrepr"] == "{}"


def test_a_batch_message_shows_each_jobs_ids_and_its_budget_but_no_content(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    jobs = [secret_job() for _ in range(3)]
    entries = [
        {"job_id": j["job_id"], "job": j, "submitted_at": "2026-12-07T10:00:00.000Z"} for j in jobs
    ]
    send_batch(celery_app, "acme", entries, prepaid=4, reservation="r:1")
    message = take_message(redis_client, BATCH_TASK_NAME)
    headers = message["headers"]
    shown = [{k: j[k] for k in ("job_id", "connection", "ticket_id")} for j in jobs]
    assert json.loads(headers["argsrepr"]) == ["acme", shown]
    assert json.loads(headers["kwargsrepr"]) == {"prepaid": 4, "reservation": "r:1"}
    assert MARKER not in json.dumps(headers)
    assert body_of(message)[:2] == [["acme", entries], {"prepaid": 4, "reservation": "r:1"}]
