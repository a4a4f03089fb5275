"""A worker killed between its ticket POST and its record: the job finishes once, from the
write journal, without a second POST.

The window is made deterministic by the fake Halo: it saves each POST at once and holds the
answer (`hang_next(applied=True)`). One job's answer is still held when the worker dies (the
POST is in flight); the other's has been written to the socket of the worker, frozen with
SIGSTOP, which never reads it (the POST was answered). Both updates are in Halo; neither
record is. The restarted worker reads each ticket, finds the job's values already there,
sends nothing, and records the fields the journal says the dead run POSTed.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from fakehalo import RecordedRequest
from tests.reliability.audit import feed_job_ids, settle
from tests.reliability.fleet import Fleet, summary_of

# The in-flight POST's answer is held far past the test; the answered one's briefly.
HELD_S = 120.0
ANSWERED_AFTER_S = 1.5


def wait_until_posted(fleet: Fleet, count: int, timeout_s: float) -> list[RecordedRequest]:
    deadline = time.monotonic() + timeout_s
    while len(posts := fleet.fake.posts()) < count:
        assert time.monotonic() < deadline, f"only {len(posts)} of {count} POSTs reached Halo"
        time.sleep(0.005)
    return posts


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_killed_after_its_post_finishes_the_job_once_without_posting_again(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = fleet.jobs("window", 2)
    worker = fleet.worker("window")
    fleet.fake.hang_next(1, seconds=HELD_S, method="POST", path="/api/tickets", applied=True)
    fleet.fake.hang_next(
        1, seconds=ANSWERED_AFTER_S, method="POST", path="/api/tickets", applied=True
    )
    job_ids = [fleet.producer.submit(job) for job in jobs]

    wait_until_posted(fleet, 2, timeout_s=30)
    worker.signal(signal.SIGSTOP)
    for job_id in job_ids:
        ticket = fleet.fake.ticket(fleet.tickets[job_id])
        assert ticket is not None
        assert ticket["summary"] == summary_of(job_id), "Halo did not save the update"
    time.sleep(ANSWERED_AFTER_S + 1.0)  # the second answer now sits in the frozen socket
    assert fleet.records(job_ids) == {}, "a record was written before the kill"
    worker.kill()
    killed = time.monotonic()
    worker.restart()

    records = {}
    for job_id in job_ids:
        record = fleet.producer.wait(job_id, fleet.visibility_timeout_s + fleet.lease_s + 30)
        assert record is not None, f"{job_id} has no record after the kill"
        records[job_id] = record
    recovery_s = time.monotonic() - killed

    posts = fleet.fake.posts()
    per_ticket = {
        job_id: sum(1 for p in posts if p.json == [{"id": ticket, "summary": summary_of(job_id)}])
        for job_id, ticket in fleet.tickets.items()
    }
    with capsys.disabled():
        figures = {
            "jobs": len(job_ids),
            "posts_per_job": per_ticket,
            "recovery_s": round(recovery_s, 1),
            "attempts": {j: r["attempts"] for j, r in records.items()},
        }
        print(f"\n[kill between POST and record] {json.dumps(figures)}")

    for job_id, record in records.items():
        assert record["outcome"] == "succeeded", record["error"]
        assert record["attempts"] == 2, "the record did not come from the second run"
        assert record["changed_fields"] == ["summary"], "the journal's fields were not reported"
        assert record["result"][0]["summary"] == summary_of(job_id)
        ticket = fleet.fake.ticket(fleet.tickets[job_id])
        assert ticket is not None
        assert ticket["summary"] == summary_of(job_id)
    assert per_ticket == dict.fromkeys(job_ids, 1), "a ticket was POSTed more than once"
    assert len(posts) == 2
    assert sorted(feed_job_ids(fleet.redis)) == sorted(job_ids)
    assert fleet.fake.created_tickets() == []
    # A copy of a message restored while its job ran may still be on its way: it must end.
    left, _ = settle(fleet.redis, fleet.visibility_timeout_s + 20)
    assert not any(left.values()), left
