"""The completion feed read with consumer groups: nothing a reader took is lost when it dies."""

from __future__ import annotations

import json
import time

import pytest
import redis

from producers.feed import CompletionFeed
from producers.jobs import Producer
from tests.integration.harness import feed_entries, new_job, run_job
from worker.keys import RESULTS_STREAM

pytestmark = pytest.mark.usefixtures("worker")


def test_each_finished_job_appears_once_with_its_record(
    producer: Producer, redis_client: redis.Redis
) -> None:
    succeeded = run_job(producer, new_job(status="Closed"))
    failed = run_job(producer, new_job(ticket_id="999999"))
    feed = CompletionFeed(redis_client, group="runner", consumer="runner-1")

    entries = feed.read(block_s=1)
    feed.ack(*entries)

    assert [(e.job_id, e.outcome) for e in entries] == [
        (succeeded["job_id"], "succeeded"),
        (failed["job_id"], "failed"),
    ]
    assert [e.record for e in entries] == [succeeded, failed]
    assert feed.read(block_s=0.1) == []


def test_a_reader_that_crashes_before_acking_gets_the_entry_again_under_its_name(
    producer: Producer, redis_client: redis.Redis
) -> None:
    record = run_job(producer, new_job(status="Closed"))
    crashed = CompletionFeed(redis_client, group="runner", consumer="runner-1")
    [taken] = crashed.read(block_s=1)
    del crashed  # dies before XACK

    restarted = CompletionFeed(redis_client, group="runner", consumer="runner-1")
    [again] = restarted.read(block_s=1)
    restarted.ack(again)

    assert again.entry_id == taken.entry_id
    assert again.record == record
    assert redis_client.xpending(RESULTS_STREAM, "runner")["pending"] == 0
    after_ack = CompletionFeed(redis_client, group="runner", consumer="runner-1")
    assert after_ack.read(block_s=0.1) == []


def test_another_reader_takes_over_the_entries_of_one_that_never_comes_back(
    producer: Producer, redis_client: redis.Redis
) -> None:
    record = run_job(producer, new_job(status="Closed"))
    gone = CompletionFeed(redis_client, group="runner", consumer="runner-1")
    [taken] = gone.read(block_s=1)
    survivor = CompletionFeed(redis_client, group="runner", consumer="runner-2", claim_idle_s=1.0)

    assert survivor.read(block_s=0.1) == []  # not idle long enough to be taken over yet
    time.sleep(1.1)
    [claimed] = survivor.read(block_s=0.1)
    survivor.ack(claimed)

    assert claimed.entry_id == taken.entry_id
    assert claimed.record == record
    consumers = {
        c["name"]: c["pending"] for c in redis_client.xinfo_consumers(RESULTS_STREAM, "runner")
    }
    assert consumers == {"runner-1": 0, "runner-2": 0}


def test_a_group_started_at_the_end_sees_only_jobs_finished_after_it_joined(
    producer: Producer, redis_client: redis.Redis
) -> None:
    before = run_job(producer, new_job(status="Closed"))
    feed = CompletionFeed(redis_client, group="late", consumer="late-1", start_id="$")
    after = run_job(producer, new_job(ticket_id="4712", status="Closed"))

    entries = feed.read(block_s=1)

    assert [e.job_id for e in entries] == [after["job_id"]]
    assert before["job_id"] != after["job_id"]
    assert json.loads(feed_entries(redis_client)[-1][1]["record"]) == after
