"""A lookup list written into Redis by anyone but the workers is never used on a real ticket."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from tests.integration.harness import new_job, run_job

# The statuses ticket 4711's type (1) allows: the list a job on it reads.
STATUS_KEY = "halo:lookup:acme:status:type-1"
CLOSED_ID = 9  # the fake's "Closed"
# What someone with write access to Redis, but without the connection's secret, would store:
# "Closed" resolving to "In Progress" on every ticket the fleet closes.
FORGED = json.dumps([{"id": 2, "name": "Closed"}, {"id": 9, "name": "In Progress"}])


def test_a_forged_status_list_in_redis_is_ignored_and_the_real_status_is_written(
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    producer: Producer,
    fake: FakeHalo,
) -> None:
    # A worker of its own, so no copy of the real list is in its memory already.
    worker = start_worker("forged-lookups")
    redis_client.set(STATUS_KEY, FORGED, px=300_000)

    record = run_job(producer, new_job(status="Closed"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["result"][0]["status_id"] == CLOSED_ID
    (post,) = fake.posts()
    assert post.json == [{"id": 4711, "status_id": CLOSED_ID}]
    # The real list, fetched from Halo, replaced the forged one.
    assert len(fake.requests_to("GET", "/api/Status")) == 1
    stored = redis_client.get(STATUS_KEY)
    assert stored is not None
    assert FORGED not in str(stored)
    assert worker.log_text().count("failed its signature check") == 1
