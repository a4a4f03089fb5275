"""A worker killed with SIGKILL mid-job: the job still finishes, exactly once.

This module starts its own workers (no shared `worker`): a second consumer would take the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.harness.processes import WorkerProcess
from tests.integration.harness import feed_entries, new_job, wait_for_record, wait_until


def test_a_job_whose_worker_was_killed_finishes_once_after_a_restart(
    producer: Producer,
    fake: FakeHalo,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = start_worker("crash-first")
    # Every Halo answer takes 0.5 s, so the job is certainly mid-run when its worker dies:
    # it has read the ticket and waits on its next request (a lookup), not yet the POST.
    fake.configure(latency_s=0.5)
    job = new_job(status="Closed")
    job_id = producer.submit(job)
    wait_until(
        lambda: bool(fake.requests_to("GET", "/api/tickets/4711")),
        60,
        "the ticket read",
        worker=first,
    )
    first.kill()
    killed_s = time.monotonic()
    fake.configure(latency_s=0)

    second = start_worker("crash-second")
    record = wait_for_record(producer, job_id, timeout_s=100, worker=second)
    recovery_s = time.monotonic() - killed_s
    with capsys.disabled():
        print(f"\n[SIGKILL recovery] record {recovery_s:.1f} s after the kill")

    assert record["outcome"] == "succeeded"
    assert record["changed_fields"] == ["status_id"]
    assert record["result"][0]["status_name"] == "Closed"
    assert record["attempts"] == 2
    assert [fields["job_id"] for _, fields in feed_entries(redis_client)] == [job_id]
    assert len(fake.posts()) == 1
    assert redis_client.zcard("halo:deferred") == 0  # nothing left to run again
    assert fake.created_tickets() == []
    ticket = fake.ticket(4711)
    assert ticket is not None
    assert ticket["status_id"] == 9
