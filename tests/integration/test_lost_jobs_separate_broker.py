"""The lost-job scan when the result store is another Redis than the broker.

A job tracked as accepted but quiet for long enough is published again, unless a job queue
still holds messages (it may just be waiting there). With `HALO_RESULT_URL` on another server,
the queues are not in the result store: they must be looked at on the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness.processes import RedisServer
from worker.deferrals import redeliver_lost
from worker.handoff import track
from worker.keys import BACKLOG_JOBS, TICKET_WAITING
from worker.models import QUEUE
from worker.results import ResultStore


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    broker_server = RedisServer(tmp_path / "broker").start()
    results_server = RedisServer(tmp_path / "results").start()
    try:
        with (
            redis.Redis.from_url(broker_server.url) as broker,
            redis.Redis.from_url(results_server.url, decode_responses=True) as results,
        ):
            yield broker, results
    finally:
        broker_server.stop()
        results_server.stop()


def test_a_quiet_job_is_not_published_again_while_the_brokers_queue_holds_messages(
    two_servers: tuple[redis.Redis, redis.Redis],
) -> None:
    broker, results = two_servers
    store = ResultStore(results, ttl_s=3600)
    track(results, "job-1", {"job": {"job_id": "job-1"}, "submitted_at": "2026-12-07T00:00:00Z"})
    broker.lpush(QUEUE, "a message still waiting to be taken")
    published: list[str] = []

    def publish(job_id: str, job: Any, submitted_at: str | None) -> None:
        published.append(job_id)

    def scan() -> int:
        return redeliver_lost(
            store,
            publish,
            quiet_s=0,
            waiting=(BACKLOG_JOBS, TICKET_WAITING),
            queues=(QUEUE,),
            broker=broker,
        )

    assert scan() == 0
    assert published == []

    broker.delete(QUEUE)  # the queue drained, and the job has no record, run or place to wait
    assert scan() == 1
    assert published == ["job-1"]
