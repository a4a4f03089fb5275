"""Jobs of one ticket take turns (`worker.tickets`), in batches, across retries and crashes.

These run the worker's parts in the test process (a `Runtime` stands for one worker process)
against fake Halo tenants behind `httpx.MockTransport`, so each step is driven by the test:
a deferred job is published by `move_due` into a list, then run as the task would run it.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import pytest
import redis

from fakehalo import FakeHalo
from fakehalo.seeds import plain_ticket
from tests.integration.budget import Fleet, Job, Tenants, job, new_fake, wait_until
from worker.backlog import Parked
from worker.batch import run_batch
from worker.deferrals import move_due
from worker.keys import (
    DEFERRED,
    DEFERRED_JOBS,
    TICKET_LINES,
    TICKET_WAITING,
    ticket_hold_key,
    ticket_line_key,
)
from worker.runner import RunResult
from worker.runtime import Runtime
from worker.tickets import TicketLines, Turn

pytest_plugins = ["tests.integration.fixtures_budget"]

EARLIER: Final = "2026-12-01T08:59:00.000Z"
LATER: Final = "2026-12-01T08:59:00.150Z"
NEW, CLOSED = 1, 9
TICKETS: Final = (5001, 5002, 5003, 5004, 5005)


class Published:
    """A mover's `publish` that keeps the jobs instead of queueing them."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Any, str | None]] = []

    def __call__(self, job_id: str, job: Any, submitted_at: str | None) -> None:
        self.jobs.append((job_id, job, submitted_at))


def _tenant(**options: Any) -> FakeHalo:
    halo = new_fake(**options)
    for ticket_id in TICKETS:
        halo.add_ticket(**{**plain_ticket(ticket_id), "status_id": NEW})
    return halo


def _closing(ticket_id: int) -> Job:
    return job(ticket_id, job_id=f"close-{ticket_id}", summary="closed", status="Closed")


def _reopening(ticket_id: int) -> Job:
    return job(ticket_id, job_id=f"reopen-{ticket_id}", summary="reopened", status="New")


def _run_published(runtime: Runtime, wanted: int) -> list[RunResult]:
    """Publish due deferred jobs until `wanted` were, and run each as the task would."""
    published = Published()
    wait_until(
        lambda: move_due(runtime.store, published) >= 0 and len(published.jobs) >= wanted,
        10,
        f"{wanted} jobs due",
    )
    return [
        runtime.runner.run(payload, task_id=job_id, submitted_at=submitted_at)
        for job_id, payload, submitted_at in published.jobs
    ]


def _state(halo: FakeHalo, ticket_id: int) -> dict[str, Any]:
    ticket = halo.ticket(ticket_id) or {}
    return {"summary": ticket.get("summary"), "status_id": ticket.get("status_id")}


def test_a_batch_leaves_the_tickets_another_batch_holds_and_its_jobs_run_after_theirs(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    # Every answer takes 200 ms: the closing batch reads, looks the status up, then POSTs,
    # while the reopening batch starts as soon as the closing batch's list read is answered.
    halo = _tenant(latency_s=0.2, mock_latency=True)
    first, second = fleet(Tenants(acme=halo)), fleet(Tenants(acme=halo))
    closing = [Parked(f"close-{t}", _closing(t), EARLIER) for t in TICKETS]
    reopening = [Parked(f"reopen-{t}", _reopening(t), LATER) for t in TICKETS]
    recorded: list[int] = []
    closer = threading.Thread(
        target=lambda: recorded.append(run_batch(first.runner, "acme", closing, 0))
    )
    closer.start()
    wait_until(lambda: bool(halo.requests_to("GET", "/api/tickets")), 10, "the list read")

    recorded.append(run_batch(second.runner, "acme", reopening, 0))
    closer.join(30)

    # The reopening jobs waited for their tickets instead of diffing a stale read.
    assert recorded == [0, len(TICKETS)]
    assert budget_redis.hlen(TICKET_WAITING) == 0
    results = _run_published(second, wanted=len(TICKETS))
    assert results == [RunResult.RECORDED] * len(TICKETS)
    for ticket_id in TICKETS:
        assert _state(halo, ticket_id) == {"summary": "reopened", "status_id": NEW}
        reopened = second.store.records.get(f"reopen-{ticket_id}")
        assert reopened is not None
        assert reopened["changed_fields"] == ["summary", "status_id"]
        assert reopened["attempts"] == 1  # waiting for a turn is not an attempt
    posted = [e["summary"] for p in halo.posts() for e in (p.json or []) if isinstance(e, dict)]
    assert posted == ["closed"] * len(TICKETS) + ["reopened"] * len(TICKETS)


# A producer that is not this library (plain Celery, celery-node) sends no `submitted_at`: the
# time a worker first saw the job stands in.
@pytest.mark.parametrize("submitted", [(EARLIER, LATER), (None, None)], ids=["sent", "first-seen"])
def test_a_job_waiting_out_a_429_keeps_its_place_ahead_of_a_later_job_for_its_ticket(
    fleet: Fleet, budget_redis: redis.Redis, submitted: tuple[str | None, str | None]
) -> None:
    halo = _tenant()
    runtime = fleet(Tenants(acme=halo))
    halo.fail_next(status=429, method="GET", path="/api/tickets/5001", retry_after=0)
    closing, reopening = _closing(5001), _reopening(5001)

    first = runtime.runner.run(closing, task_id=closing["job_id"], submitted_at=submitted[0])
    later = runtime.runner.run(reopening, task_id=reopening["job_id"], submitted_at=submitted[1])

    assert (first, later) == (RunResult.DEFERRED, RunResult.WAITING)
    assert halo.posts() == []
    # The closing job runs again when due, then hands the ticket to the reopening job.
    assert _run_published(runtime, wanted=1) == [RunResult.RECORDED]
    assert _run_published(runtime, wanted=1) == [RunResult.RECORDED]
    assert _state(halo, 5001) == {"summary": "reopened", "status_id": NEW}
    assert [p.json[0]["summary"] for p in halo.posts() if isinstance(p.json, list)] == [
        "closed",
        "reopened",
    ]
    for job_id in ("close-5001", "reopen-5001"):
        record = runtime.store.records.get(job_id)
        assert record is not None
        assert record["changed_fields"] == ["summary", "status_id"], job_id
    assert not any(budget_redis.scan_iter("halo:ticket:*")), "a ticket kept a hold or a line"


def _enter(lines: TicketLines, job_id: str, submitted_at: str, *, hold_s: float = 30) -> Turn:
    payload = {"job": {"job_id": job_id}, "submitted_at": submitted_at}
    return lines.enter("acme", 5001, job_id, payload, hold_s=hold_s, check_backlog=False).turn


def test_a_holder_that_died_and_comes_back_before_the_bound_keeps_its_turn(
    budget_redis: redis.Redis,
) -> None:
    lines = TicketLines(budget_redis, quiet_s=30)
    assert _enter(lines, "died", EARLIER, hold_s=0.2) is Turn.GO
    assert _enter(lines, "waiter", LATER) is Turn.WAIT
    wait_until(
        lambda: not budget_redis.exists(ticket_hold_key("acme", 5001)), 5, "the hold to lapse"
    )

    # Its hold is gone but its place is not: the waiter stays parked, and the job that
    # died runs again first when its message comes back.
    assert lines.reap() == 0
    assert _enter(lines, "died", EARLIER) is Turn.GO
    assert budget_redis.hexists(TICKET_WAITING, "waiter")

    assert lines.leave("acme", 5001, "died", finished=True)
    assert budget_redis.zscore(DEFERRED, "waiter") is not None
    assert budget_redis.hexists(DEFERRED_JOBS, "waiter")
    assert _enter(lines, "waiter", LATER) is Turn.GO


def test_a_ticket_whose_holder_never_comes_back_passes_to_the_next_job_after_the_bound(
    budget_redis: redis.Redis,
) -> None:
    lines = TicketLines(budget_redis, quiet_s=1.0)
    assert _enter(lines, "lost", EARLIER, hold_s=0.2) is Turn.GO
    assert _enter(lines, "waiter", LATER) is Turn.WAIT
    assert lines.reap() == 0, "handed on while the holder could still come back"

    wait_until(lambda: lines.reap() == 1, 10, "the mover to hand the ticket on")

    assert budget_redis.zscore(DEFERRED, "waiter") is not None
    assert budget_redis.hlen(TICKET_WAITING) == 0
    assert budget_redis.scard(TICKET_LINES) == 0
    assert budget_redis.zrange(ticket_line_key("acme", 5001), 0, -1) == ["waiter"]
