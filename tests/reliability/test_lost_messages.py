"""A message the broker loses: the job is published again, once, and only when it is lost.

Kombu's Redis transport pops a message (BRPOP) before it writes it to its unacked hash, so a
worker SIGKILLed between the two loses the message; the SIGKILL run (`test_worker_kills`) did
lose one that way. Every accepted job is tracked in `halo:unfinished` until its record exists,
and the workers' mover publishes again a job that has shown no sign of life for longer than a
stranded message and a dead worker's claim take to come back (`DeferredJobs.take_lost`).
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.audit import feed_job_ids, settle
from tests.reliability.fleet import Fleet, summary_of
from worker import handoff
from worker.deferred import DeferredJobs
from worker.keys import BACKLOG_JOBS, DEFERRED, TICKET_WAITING, UNFINISHED, ticket_hold_key
from worker.models import QUEUE

QUIET_S = 0.3


def tracked(store: DeferredJobs, job_id: str) -> None:
    payload = {"job": {"job_id": job_id}, "submitted_at": "2026-11-29T00:00:00Z"}
    handoff.track(store.redis, job_id, payload)


def lost(store: DeferredJobs) -> list[str]:
    taken = store.take_lost(
        quiet_s=QUIET_S,
        limit=100,
        waiting=(BACKLOG_JOBS, TICKET_WAITING),
        queues=(QUEUE, "halo.batch"),
    )
    return [due.job_id for due in taken]


def test_only_a_job_with_no_sign_of_life_is_taken_as_lost(fleet: Fleet) -> None:
    store = DeferredJobs(fleet.redis)
    for job_id in ("running", "retrying", "parked", "waiting-for-ticket", "gone"):
        tracked(store, job_id)
    fleet.redis.set("halo:claim:running", "token", px=60_000)
    fleet.redis.zadd(DEFERRED, {"retrying": int((time.time() + 60) * 1000)})
    fleet.redis.hset(BACKLOG_JOBS, "parked", "{}")
    fleet.redis.hset(TICKET_WAITING, "waiting-for-ticket", ticket_hold_key("acme", 1))

    assert lost(store) == [], "taken before it was quiet for long enough"
    time.sleep(QUIET_S + 0.1)
    fleet.redis.rpush(QUEUE, "a message")  # "gone" may be this one, waiting its turn
    assert lost(store) == [], "taken while the queue still held messages"
    fleet.redis.delete(QUEUE)
    assert lost(store) == ["gone"]
    assert lost(store) == [], "a job taken as lost is given another quiet period"
    time.sleep(QUIET_S + 0.1)
    assert sorted(lost(store)) == ["gone"]
    assert fleet.redis.zcard(UNFINISHED) == 5


def test_a_recorded_job_is_never_tracked_and_its_record_ends_the_tracking(
    fleet: Fleet,
) -> None:
    store = DeferredJobs(fleet.redis)
    fleet.redis.set("halo:result:done-before", "{}")
    tracked(store, "done-before")
    assert fleet.redis.zscore(UNFINISHED, "done-before") is None

    tracked(store, "done-since")
    # A record written without the record script (which forgets the job itself): the job is
    # forgotten when next looked at, not published again.
    fleet.redis.set("halo:result:done-since", "{}")
    time.sleep(QUIET_S + 0.1)
    assert lost(store) == []
    assert fleet.redis.zcard(UNFINISHED) == 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_job_whose_message_vanished_from_the_queue_still_finishes_once(
    fleet: Fleet,
) -> None:
    # Short timeouts keep the quiet period (visibility timeout + the claim's lease) short.
    settings = {"visibility_timeout_s": "3", "job_deadline_s": "1.5", "http_read_timeout_s": "1"}
    fleet.settings.update(settings)
    [job] = fleet.jobs("vanish", 1)
    job_id = fleet.producer.submit(job)
    # What a worker killed between BRPOP and its unacked write leaves: no message anywhere.
    assert fleet.redis.delete(QUEUE) == 1
    started = time.monotonic()
    worker = fleet.worker("vanish")

    record = fleet.producer.wait(job_id, timeout_s=fleet.visibility_timeout_s + fleet.lease_s + 30)
    assert record is not None, "the lost job was never published again"
    waited_s = time.monotonic() - started
    print(f"lost message republished and recorded after {waited_s:.1f} s")
    assert record["outcome"] == "succeeded"
    assert record["attempts"] == 1
    assert feed_job_ids(fleet.redis) == [job_id]
    assert len(fleet.fake.posts()) == 1
    ticket = fleet.fake.ticket(fleet.tickets[job_id])
    assert ticket is not None
    assert ticket["summary"] == summary_of(job_id)
    assert "published again" in worker.log_text()
    left, _ = settle(fleet.redis, fleet.visibility_timeout_s + 20)
    assert not any(left.values()), left
