"""Delivery as the producer sees it: idempotent job ids, the record's lifetime, and waiting."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from tests.integration.harness import (
    RECORD_WAIT_S,
    TEST_SETTINGS,
    feed_entries,
    new_job,
    run_job,
    wait_for_deliveries,
    wait_for_record,
)
from worker.keys import result_key

pytestmark = pytest.mark.usefixtures("worker")


def feed_job_ids(client: redis.Redis) -> list[str]:
    return [fields["job_id"] for _, fields in feed_entries(client)]


def test_the_same_job_id_submitted_twice_at_once_posts_once_and_has_one_record(
    producer: Producer, fake: FakeHalo, redis_client: redis.Redis, worker: WorkerProcess
) -> None:
    # Slow Halo, so the second delivery arrives while the first still runs.
    fake.configure(latency_s=0.3)
    job = new_job(status="Closed")
    producer.submit(job)
    producer.submit(job)

    record = wait_for_record(producer, job["job_id"])
    finished = wait_for_deliveries(worker, job["job_id"], 2)

    assert finished.count("recorded") == 1

    assert record["outcome"] == "succeeded", record["error"]
    assert len(fake.posts()) == 1
    assert feed_job_ids(redis_client) == [job["job_id"]]
    assert producer.result(job["job_id"]) == record


def test_a_finished_job_submitted_again_returns_the_stored_record_and_never_runs_again(
    producer: Producer, fake: FakeHalo, redis_client: redis.Redis, worker: WorkerProcess
) -> None:
    job = new_job(status="Closed")
    first = run_job(producer, job)
    requests_before = len(fake.requests())

    # Even with other content, the job_id decides: the stored record stands.
    producer.submit({**job, "status": "In Progress"})

    assert wait_for_deliveries(worker, job["job_id"], 2) == ["recorded", "duplicate"]

    assert producer.wait(job["job_id"], 1) == first
    assert len(fake.requests()) == requests_before
    assert len(fake.posts()) == 1
    stored = fake.ticket(4711)
    assert stored is not None
    assert stored["status_id"] == 9
    assert feed_job_ids(redis_client) == [job["job_id"]]


def test_a_record_and_its_feed_entry_are_written_once_with_the_configured_ttl(
    producer: Producer, redis_client: redis.Redis
) -> None:
    record = run_job(producer, new_job(status="Closed"))

    ttl_s = redis_client.ttl(result_key(record["job_id"]))
    configured_s = int(TEST_SETTINGS["result_ttl_s"])
    assert configured_s - 60 < ttl_s <= configured_s
    [(_, fields)] = feed_entries(redis_client)
    assert fields["job_id"] == record["job_id"]
    assert fields["outcome"] == "succeeded"
    assert fields["record"] == redis_client.get(result_key(record["job_id"]))


def test_wait_returns_as_soon_as_the_record_exists_not_at_its_timeout(
    producer: Producer,
) -> None:
    job = new_job(status="Closed")
    waited: dict[str, Any] = {}

    def wait() -> None:
        started_s = time.monotonic()
        waited["record"] = producer.wait(job["job_id"], timeout_s=100)
        waited["after_s"] = time.monotonic() - started_s

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.2)  # the waiter is blocked before the job exists
    producer.submit(job)
    waiter.join(RECORD_WAIT_S)

    assert not waiter.is_alive(), "wait() did not return once the record was written"
    assert waited["record"] is not None
    assert waited["record"]["job_id"] == job["job_id"]
    assert waited["after_s"] < 100


def test_two_waiters_on_the_same_job_are_both_woken(producer: Producer) -> None:
    job = new_job(status="Closed")
    records: list[dict[str, Any] | None] = []

    def wait() -> None:
        records.append(producer.wait(job["job_id"], timeout_s=100))

    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)
    producer.submit(job)
    for waiter in waiters:
        waiter.join(RECORD_WAIT_S)

    assert [waiter.is_alive() for waiter in waiters] == [False, False]
    assert len(records) == 2
    assert records[0] == records[1]
    assert records[0] is not None


def test_wait_for_a_job_that_never_finishes_returns_none_after_its_timeout(
    producer: Producer,
) -> None:
    assert producer.wait("it-no-such-job", timeout_s=0.3) is None
    assert producer.result("it-no-such-job") is None
