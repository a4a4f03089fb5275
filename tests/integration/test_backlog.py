"""Backlogs and batches: jobs that find no Halo budget wait in their connection's backlog, and
are released in batches of one list read and one POST as the budget allows.

Behaviour only: parking loses no job and costs no attempt, connections do not hold each other
up, the dispatcher spends no more than the budget grants, and a batched job's record is the
record the same job gets when it runs alone.
"""

from __future__ import annotations

import time
from typing import Any, Final

import pytest
import redis

from fakehalo import FakeHalo
from tests.integration.budget import (
    Fleet,
    Job,
    Record,
    Tenants,
    job,
    new_fake,
    stream_job_ids,
    wait_until,
)
from worker.backlog import BATCH_COST, Backlogs, Dispatcher, Parked
from worker.batch import run_batch
from worker.deferrals import move_due
from worker.errors import HaloRateLimited
from worker.learned import Learned
from worker.runner import RunResult
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

SUBMITTED_AT: Final = "2026-12-01T08:59:00.000Z"
# Record fields that depend on how Halo's work was shared out or on the moment a job ended.
UNSHARED: Final = ("halo_requests", "finished_at")


class Published:
    """A dispatcher's `publish_batch` that keeps the batches instead of queueing them."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Parked]]] = []
        self.budgets: list[tuple[int, str | None]] = []

    def __call__(
        self, connection: str, parked: list[Parked], prepaid: int, reservation: str | None
    ) -> None:
        self.batches.append((connection, list(parked)))
        self.budgets.append((prepaid, reservation))

    def job_ids(self) -> list[str]:
        return [p.job_id for _, parked in self.batches for p in parked]


class DispatcherDied(Exception):
    """Raised by a publisher that stands for a worker killed while releasing a batch."""


def _dispatcher(
    runtime: Runtime, publish: Any, *, batch_max: int = 20, backlogs: Backlogs | None = None
) -> Dispatcher:
    return Dispatcher(
        backlogs or runtime.backlogs,
        runtime.governor,
        runtime.clients.connections,
        publish,
        batch_max=batch_max,
        learned=Learned(runtime.redis),
    )


def _honours_ticketids(runtime: Runtime, *connections: str) -> None:
    """The tenants have shown that their list reads honour `ticketids`, as a probe shows it:
    their backlogs are released in batches."""
    for connection in connections or ("acme",):
        Learned(runtime.redis).saw_list_read(connection, honoured=True, page_cap=None)


def _run_batches(runtime: Runtime, published: Published) -> int:
    """Run the published batches as the batch task does: spending each one's reservation."""
    recorded = 0
    for (connection, parked), (prepaid, reservation) in zip(
        published.batches, published.budgets, strict=True
    ):
        assert reservation is not None
        conn = runtime.clients.connections[connection]
        covered = runtime.governor.use_reservation(conn, reservation, prepaid)
        recorded += run_batch(runtime.runner, connection, parked, covered)
    return recorded


def _park(runtime: Runtime, *jobs: Job) -> None:
    for parked in jobs:
        runtime.backlogs.park(parked["connection"], parked["job_id"], parked, SUBMITTED_AT)


def _spend_budget(runtime: Runtime, connection: str) -> None:
    conn = runtime.clients.connections[connection]
    assert runtime.governor.try_acquire(conn, conn.rate_limit.requests).granted


def _record(runtime: Runtime, job_id: str) -> Record:
    record = runtime.store.records.get(job_id)
    assert record is not None, f"no record for {job_id}"
    return record


# -- parking ---------------------------------------------------------------------------------


def test_a_job_that_finds_no_budget_is_parked_without_a_record_or_an_attempt(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    halo = new_fake()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "4/1s"})
    _spend_budget(runtime, "acme")
    waiting = job(4711, summary="Parked until there is budget")

    assert runtime.runner.run(waiting, task_id=waiting["job_id"]) is RunResult.PARKED

    assert runtime.store.records.get(waiting["job_id"]) is None
    assert stream_job_ids(budget_redis) == []
    assert runtime.backlogs.size("acme") == 1
    assert halo.requests() == []

    published = Published()
    dispatcher = _dispatcher(runtime, published)
    wait_until(lambda: dispatcher.dispatch() > 0, 5.0, "budget for the parked job")
    assert _run_batches(runtime, published) == 1
    record = _record(runtime, waiting["job_id"])
    assert record["outcome"] == "succeeded"
    assert record["changed_fields"] == ["summary"]
    assert record["attempts"] == 1, "waiting for budget was counted as an attempt"


def test_a_job_arriving_while_its_connection_has_a_backlog_is_parked_behind_it(
    fleet: Fleet,
) -> None:
    halo = new_fake()
    runtime = fleet(Tenants(acme=halo))
    _honours_ticketids(runtime)
    first, second = job(4711, summary="First in line"), job(4712, summary="Second in line")
    _park(runtime, first)

    assert runtime.runner.run(second, task_id=second["job_id"]) is RunResult.PARKED

    assert halo.requests() == [], "a job overtook its connection's backlog"
    published = Published()
    assert _dispatcher(runtime, published).dispatch() == 2
    assert published.job_ids() == [first["job_id"], second["job_id"]]
    assert _run_batches(runtime, published) == 2
    assert [_record(runtime, j["job_id"])["outcome"] for j in (first, second)] == [
        "succeeded",
        "succeeded",
    ]


def test_another_connections_job_runs_at_once_while_a_backlog_waits(fleet: Fleet) -> None:
    acme_halo, globex_halo = new_fake(), new_fake()
    runtime = fleet(
        Tenants(acme=acme_halo, globex=globex_halo),
        rates={"acme": "2/60s", "globex": "300/300s"},
    )
    _spend_budget(runtime, "acme")
    stuck = job(4711, summary="Waits for acme's budget")
    free = job(4711, connection="globex", summary="Runs on globex's budget")

    assert runtime.runner.run(stuck, task_id=stuck["job_id"]) is RunResult.PARKED
    assert runtime.runner.run(free, task_id=free["job_id"]) is RunResult.RECORDED

    assert _record(runtime, free["job_id"])["outcome"] == "succeeded"
    assert acme_halo.requests() == []
    assert globex_halo.posts()


def test_no_parked_job_is_lost_when_a_dispatcher_dies_mid_release(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    halo = new_fake()
    runtime = fleet(Tenants(acme=halo), batch_max=5)
    _honours_ticketids(runtime)
    acme = runtime.clients.connections["acme"]
    # Halo asked everyone to wait: the first job parks for want of budget, the rest behind it.
    runtime.governor.observe_rate_limited(acme, HaloRateLimited("429", retry_after_s=0.3))
    storm = [job(4711 + i % 6, summary=f"Storm {i}") for i in range(30)]
    for waiting in storm:
        assert runtime.runner.run(waiting, task_id=waiting["job_id"]) is RunResult.PARKED
    wait_until(lambda: runtime.governor.try_acquire(acme, 0).granted, 5.0, "the pause to end")

    # Dies after publishing its second batch but before forgetting it, and while taking its
    # third: two batches' jobs stay leased to a dispatcher that will never come back.
    survived = Published()

    def dying(connection: str, parked: list[Parked], prepaid: int, reservation: str | None) -> None:
        if len(survived.batches) == 2:
            raise DispatcherDied
        survived(connection, parked, prepaid, reservation)
        if len(survived.batches) == 2:
            raise DispatcherDied

    short_lease = Backlogs(runtime.redis, take_lease_ms=300)
    with pytest.raises(DispatcherDied):
        _dispatcher(runtime, dying, batch_max=5, backlogs=short_lease).dispatch()
    with pytest.raises(DispatcherDied):
        _dispatcher(runtime, dying, batch_max=5, backlogs=short_lease).dispatch()

    published = Published()
    published.batches.extend(survived.batches)
    published.budgets.extend(survived.budgets)
    dispatcher = _dispatcher(runtime, published, batch_max=5)
    wait_until(
        lambda: dispatcher.dispatch() >= 0 and runtime.backlogs.size("acme") == 0,
        5.0,
        "the dead dispatcher's lease to end and its jobs to be released again",
    )
    _run_batches(runtime, published)

    # The dead dispatcher's jobs were released after later jobs of their tickets, which waited
    # for their turn (each keeps its place in its ticket's line from when it was parked): the
    # mover hands them on, as a worker's does.
    def publish(job_id: str, payload: Any, submitted_at: str | None) -> None:
        runtime.runner.run(payload, task_id=job_id, submitted_at=submitted_at)

    wait_until(
        lambda: (
            move_due(runtime.store, publish) >= 0
            and all(runtime.store.records.get(waiting["job_id"]) for waiting in storm)
        ),
        5.0,
        "the jobs that waited for their ticket to run",
    )
    records = [_record(runtime, waiting["job_id"]) for waiting in storm]
    assert [r["outcome"] for r in records] == ["succeeded"] * len(storm)
    # Jobs of one ticket ran in the order they were submitted: the last one's change stands.
    for last in storm[-6:]:
        stored = halo.ticket(int(last["ticket_id"]))
        assert stored is not None
        assert stored["summary"] == last["summary"]
    feed = stream_job_ids(budget_redis)
    assert sorted(feed) == sorted(waiting["job_id"] for waiting in storm)
    assert set(published.job_ids()) == {waiting["job_id"] for waiting in storm}


def test_jobs_leased_to_a_dead_dispatcher_cost_no_budget_while_the_lease_runs(
    fleet: Fleet,
) -> None:
    runtime = fleet(Tenants(acme=new_fake()), rates={"acme": "10/60s"})
    _honours_ticketids(runtime)
    acme = runtime.clients.connections["acme"]
    _park(runtime, *(job(4711, summary=f"Leased {i}") for i in range(3)))

    def dead(connection: str, parked: list[Parked], prepaid: int, reservation: str | None) -> None:
        raise DispatcherDied

    with pytest.raises(DispatcherDied):
        _dispatcher(runtime, dead).dispatch()
    for _ in range(5):
        assert _dispatcher(runtime, Published()).dispatch() == 0

    assert runtime.backlogs.size("acme") == 3
    spent_by_the_dead_one = BATCH_COST
    assert runtime.governor.try_acquire(acme, 10 - spent_by_the_dead_one).granted


# -- the dispatcher --------------------------------------------------------------------------


def test_the_dispatcher_releases_no_more_than_the_budget_grants(fleet: Fleet) -> None:
    runtime = fleet(Tenants(acme=new_fake()), rates={"acme": "6/60s"})
    _honours_ticketids(runtime)
    acme = runtime.clients.connections["acme"]
    _park(runtime, *(job(4711, summary=f"Queued {i}") for i in range(10)))
    published = Published()

    assert _dispatcher(runtime, published, batch_max=2).dispatch() == 6
    assert _dispatcher(runtime, published, batch_max=2).dispatch() == 0

    assert [len(parked) for _, parked in published.batches] == [2, 2, 2]
    assert len(published.batches) * BATCH_COST == 6
    assert not runtime.governor.try_acquire(acme).granted
    assert runtime.backlogs.size("acme") == 4


def test_connections_with_equal_backlogs_take_turns(fleet: Fleet) -> None:
    runtime = fleet(Tenants(), rates={"acme": "300/300s", "globex": "300/300s"})
    _honours_ticketids(runtime, "acme", "globex")
    for connection in ("acme", "globex"):
        _park(runtime, *(job(4711, connection=connection) for _ in range(6)))
    published = Published()

    assert _dispatcher(runtime, published, batch_max=2).dispatch() == 12

    assert [connection for connection, _ in published.batches] == ["acme", "globex"] * 3


def test_a_connection_without_budget_does_not_hold_up_another_ones_backlog(
    fleet: Fleet,
) -> None:
    runtime = fleet(Tenants(), rates={"acme": "2/60s", "globex": "300/300s"})
    _honours_ticketids(runtime, "acme", "globex")
    _spend_budget(runtime, "acme")
    for connection in ("acme", "globex"):
        _park(runtime, *(job(4711, connection=connection) for _ in range(6)))
    published = Published()

    assert _dispatcher(runtime, published, batch_max=2).dispatch() == 6

    assert {connection for connection, _ in published.batches} == {"globex"}
    assert runtime.backlogs.size("acme") == 6


# -- batches ---------------------------------------------------------------------------------


def _tenant() -> FakeHalo:
    """The demo tenant plus tickets 5001-5005, identical on every call."""
    halo = new_fake()
    for ticket_id in range(5001, 5006):
        halo.add_ticket(
            id=ticket_id,
            summary=f"Seeded ticket {ticket_id}",
            details="Seeded for the batch tests",
            client_id=12,
            site_id=31,
            user_id=101,
            agent_id=2,
            team="Service Desk",
        )
    return halo


VARIABLES: Final = {
    "custom": {"ticket": {"id": 4711, "name": "abc"}, "blank": ""},
    "email": {"subject": "Still broken after the reboot"},
}


def _comparison_jobs() -> list[Job]:
    """One job of every kind: each field changed, all at once, nothing to change, warnings,
    every error before and after reading Halo, and two jobs on one ticket."""

    def make(job_id: str, ticket_id: str, **fields: Any) -> Job:
        made: Job = {"job_id": job_id, "connection": "acme", "ticket_id": ticket_id}
        return made | {"variables": VARIABLES, "meta": {"case": job_id}} | fields

    return [
        make(
            "cmp-summary",
            "{{custom.ticket.id}}",
            summary="[Escalated] {{email.subject}}",
            result_variable="myVariable",
        ),
        make("cmp-details", "4712", details="Customer wrote: {{ email.subject }}"),
        make("cmp-status", "4713", status=" resolved ", error_handling="bounce"),
        make("cmp-priority", "4715", priority="Critical"),
        make("cmp-agent", "4716", agent="PRIYA.PATEL@msp.example"),
        make("cmp-team", "5001", team="Projects"),
        make(
            "cmp-everything",
            "5002",
            summary="All at once",
            details="Every field",
            status="2",
            priority="High",
            agent="5",
            team="Escalations",
        ),
        make("cmp-unchanged", "4714", status="Closed", priority="Low", result_variable="same"),
        make("cmp-empty", "5003", summary="{{custom.blank}}", team="Escalations"),
        make("cmp-not-found", "999999", status="Closed", error_handling="continue"),
        make("cmp-template", "4711", summary="{{custom.missing.path}}", error_handling="stop"),
        make("cmp-invalid-id", "{{custom.ticket.name}}", error_handling="stop_all"),
        make("cmp-lookup", "5004", status="Resolvd"),
        make("cmp-ambiguous", "5004", agent="Sam Lee"),
        {"job_id": "cmp-invalid-job", "connection": "acme", "ticket_id": "1", "colour": "red"},
        make("cmp-same-first", "5005", status="Closed"),
        make("cmp-same-second", "5005", status="New", summary="Reopened by a second email"),
    ]


def _comparable(record: Record) -> Record:
    return {key: value for key, value in record.items() if key not in UNSHARED}


def test_batched_and_single_runs_give_identical_records(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    jobs = _comparison_jobs()
    job_ids = [j["job_id"] for j in jobs]

    single_halo = _tenant()
    single = fleet(Tenants(acme=single_halo))
    for alone in jobs:
        result = single.runner.run(alone, task_id=alone["job_id"], submitted_at=SUBMITTED_AT)
        assert result is RunResult.RECORDED, alone["job_id"]
    singles = {job_id: _comparable(_record(single, job_id)) for job_id in job_ids}
    assert sorted(stream_job_ids(budget_redis)) == sorted(job_ids)

    budget_redis.flushdb()
    batched_halo = _tenant()
    batched = fleet(Tenants(acme=batched_halo))
    _honours_ticketids(batched)
    _park(batched, *jobs)
    published = Published()
    assert _dispatcher(batched, published, batch_max=len(jobs)).dispatch() == len(jobs)
    assert len(published.batches) == 1

    assert _run_batches(batched, published) == len(jobs)

    for job_id in job_ids:
        assert _comparable(_record(batched, job_id)) == singles[job_id], job_id
    assert sorted(stream_job_ids(budget_redis)) == sorted(job_ids)
    for ticket_id in (4711, 4712, 4713, 4714, 4715, 4716, 5001, 5002, 5003, 5004, 5005):
        assert batched_halo.ticket(ticket_id) == single_halo.ticket(ticket_id), ticket_id
    assert batched_halo.created_tickets() == []
    assert len(batched_halo.posts()) < len(single_halo.posts())


def test_batched_records_share_out_exactly_the_requests_the_batch_made(fleet: Fleet) -> None:
    halo = _tenant()
    runtime = fleet(Tenants(acme=halo))
    _honours_ticketids(runtime)
    jobs = [
        job(4711, summary="Shared out"),
        job(4712, status="Closed"),
        job(4713, agent="John Smith"),
        job(4714, status="Closed"),  # nothing to change: a read of its own
        job(999999, status="Closed"),  # fails once the list read is in
        job(5004, status="Resolvd"),  # fails after a lookup and its reload
        job("{{custom.nothing}}"),  # fails before any request
    ]
    _park(runtime, *jobs)
    published = Published()
    _dispatcher(runtime, published).dispatch()

    assert _run_batches(runtime, published) == len(jobs)

    shares = [_record(runtime, j["job_id"])["halo_requests"] for j in jobs]
    assert shares[-1] == 0
    assert any(isinstance(share, float) for share in shares)
    assert sum(shares) == pytest.approx(len(halo.requests()), abs=0.001 * len(jobs))


def test_a_batch_post_halo_rejects_falls_back_to_one_post_per_job(fleet: Fleet) -> None:
    halo = _tenant()
    runtime = fleet(Tenants(acme=halo))
    _honours_ticketids(runtime)
    # The fleet's cached status list (for ticket 4713's type, Service Request) still offers
    # "Resolved", which Halo no longer accepts.
    runtime.clients.for_job("acme").lookup("status", tickettype_id=3)
    halo.set_lookup("status", [s for s in halo.lookup("status") if s["name"] != "Resolved"])
    good = [job(4711, summary="Good one"), job(4712, status="Closed")]
    bad = job(4713, status="Resolved", error_handling="continue")
    _park(runtime, good[0], bad, good[1])
    published = Published()
    _dispatcher(runtime, published).dispatch()
    before = len(halo.requests())

    assert _run_batches(runtime, published) == 3

    for ok in good:
        assert _record(runtime, ok["job_id"])["outcome"] == "succeeded"
    refused = _record(runtime, bad["job_id"])
    assert refused["outcome"] == "failed"
    assert refused["disposition"] == "continue"
    assert refused["error"]["code"] == "halo_rejected"
    assert "status_id 8" in refused["error"]["message"]
    assert [(len(p.json or []), p.status) for p in halo.posts()] == [
        (3, 400),
        (1, 201),
        (1, 400),
        (1, 201),
    ]
    saved = halo.ticket(4711)
    assert saved is not None
    assert saved["summary"] == "Good one"
    shares = [_record(runtime, j["job_id"])["halo_requests"] for j in (*good, bad)]
    assert sum(shares) == pytest.approx(len(halo.requests()) - before, abs=0.01)


def test_a_retryable_error_on_the_batch_read_defers_every_job_until_it_succeeds(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    halo = _tenant()
    runtime = fleet(Tenants(acme=halo))
    _honours_ticketids(runtime)
    jobs = [job(4711, summary="Deferred"), job(4712, status="Closed"), job(4713, team="Projects")]
    _park(runtime, *jobs)
    published = Published()
    _dispatcher(runtime, published).dispatch()
    halo.fail_next(1, 503, path="/api/tickets", method="GET")

    assert _run_batches(runtime, published) == 0

    assert [runtime.store.records.get(j["job_id"]) for j in jobs] == [None, None, None]
    assert stream_job_ids(budget_redis) == []
    assert halo.posts() == []

    def publish(job_id: str, payload: Any, submitted_at: str | None) -> None:
        runtime.runner.run(payload, task_id=job_id, submitted_at=submitted_at)

    deadline = time.monotonic() + 5.0
    while any(runtime.store.records.get(j["job_id"]) is None for j in jobs):
        assert time.monotonic() < deadline, "deferred jobs were never run again"
        move_due(runtime.store, publish)
        time.sleep(0.02)

    records = [_record(runtime, j["job_id"]) for j in jobs]
    assert [r["outcome"] for r in records] == ["succeeded"] * 3
    assert [r["attempts"] for r in records] == [2, 2, 2]
    assert sorted(stream_job_ids(budget_redis)) == sorted(j["job_id"] for j in jobs)
