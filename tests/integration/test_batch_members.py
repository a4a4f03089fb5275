"""A batch message runs only jobs of its own connection against that connection's Halo.

Batches are published by the workers' dispatchers, one connection's backlog each. A batch
message whose members name another connection (malformed, or forged by someone who can write
the queue) must not run them with the batch connection's credentials on its tickets: such a
member is sent on as a single job, which runs against the connection it names.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess
from tests.integration.harness import new_job, wait_for_record
from worker.publishing import send_batch

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def celery_app(redis_server: RedisServer) -> Iterator[Celery]:
    made = Celery("halo-test", broker=redis_server.url, set_as_current=False)
    made.conf.update(task_serializer="json", accept_content=["json"])
    yield made
    made.close()


def test_a_batch_member_naming_another_connection_never_runs_against_the_batchs_halo(
    celery_app: Celery, producer: Producer, fake: FakeHalo, worker: WorkerProcess
) -> None:
    own = new_job(ticket_id="4712", summary="own connection")
    # `beta` is configured on no worker: run against its own connection, it cannot reach Halo.
    foreign = new_job(connection="beta", ticket_id="4711", status="Closed")
    entries = [
        {"job_id": job["job_id"], "job": job, "submitted_at": "2026-12-07T10:00:00.000Z"}
        for job in (own, foreign)
    ]
    send_batch(celery_app, "acme", entries, prepaid=0, reservation=None)

    assert wait_for_record(producer, own["job_id"], worker=worker)["outcome"] == "succeeded"
    record = wait_for_record(producer, foreign["job_id"], worker=worker)
    assert record["outcome"] == "failed"
    assert record["error"]["code"] == "unknown_connection"
    # acme's Halo saw the own job's write only: nothing for ticket 4711.
    assert [post.json[0]["id"] for post in fake.posts()] == [4712]
    assert fake.requests_to("GET", "/api/Tickets/4711") == []
