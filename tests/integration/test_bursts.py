"""Bursts: when many jobs of one connection run in a worker at once (an email storm), they are
read and written in batches from the first moment, not one by one until the budget is gone;
a lone job still runs straight through, at a single job's cost.

The worker's parts run in this process against a fake tenant behind `httpx.MockTransport`
(`tests.integration.budget`), answering each request after 100 ms as a real Halo would; threads
stand for the worker's pool. The fake's request log is the judge of what was spent.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Final

import pytest

from fakehalo import FakeHalo
from tests.integration.budget import Fleet, Job, Record, Tenants, job, new_fake, wait_until
from worker.backlog import Dispatcher, Parked
from worker.batch import run_batch
from worker.deferrals import move_due
from worker.learned import Learned
from worker.runner import RunResult
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

BURST_JOBS: Final = 60
FIRST_TICKET: Final = 6001
# As Halo answers over the internet: long enough that a burst's jobs overlap in the pool.
LATENCY_S: Final = 0.1
EARLY: Final = "2026-12-01T08:59:00.000Z"
LATER: Final = "2026-12-01T08:59:30.000Z"


class Released:
    """A dispatcher's `publish_batch` that runs each batch as the batch task does, at once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sizes: list[int] = []

    def __call__(
        self, connection: str, parked: list[Parked], prepaid: int, reservation: str | None
    ) -> None:
        self.sizes.append(len(parked))
        assert reservation is not None
        conn = self.runtime.clients.connections[connection]
        covered = self.runtime.governor.use_reservation(conn, reservation, prepaid)
        run_batch(self.runtime.runner, connection, parked, covered)

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(
            self.runtime.backlogs,
            self.runtime.governor,
            self.runtime.clients.connections,
            self,
            batch_max=self.runtime.settings.batch_max,
            learned=Learned(self.runtime.redis),
        )


def tenant() -> FakeHalo:
    """The demo tenant, answering after `LATENCY_S`, with the burst's tickets."""
    halo = new_fake(latency_s=LATENCY_S, mock_latency=True)
    for ticket_id in range(FIRST_TICKET, FIRST_TICKET + BURST_JOBS):
        halo.add_ticket(id=ticket_id, summary=f"Alert {ticket_id}", team="Service Desk")
    return halo


def record_of(runtime: Runtime, job_id: str) -> Record:
    record = runtime.store.records.get(job_id)
    assert record is not None, f"no record for {job_id}"
    return record


def run_all(runtime: Runtime, jobs: list[Job]) -> list[RunResult]:
    """Deliver every job at once, one pool thread each, as a worker takes a burst."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(
            pool.map(lambda j: runtime.runner.run(j, task_id=j["job_id"], submitted_at=EARLY), jobs)
        )


def test_a_burst_of_jobs_on_distinct_tickets_is_read_and_written_in_batches(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    storm = [
        job(ticket_id, summary=f"Alert {ticket_id}: disk full")
        for ticket_id in range(FIRST_TICKET, FIRST_TICKET + BURST_JOBS)
    ]

    results = run_all(runtime, storm)
    released = Released(runtime)
    dispatcher = released.dispatcher()

    def drained() -> bool:
        dispatcher.dispatch()
        return all(runtime.store.records.get(j["job_id"]) is not None for j in storm)

    wait_until(drained, 60.0, "every job of the burst to have its record")

    parked = results.count(RunResult.PARKED)
    requests = halo.requests()
    print(
        f"burst: {BURST_JOBS} jobs, {parked} parked, batches {released.sizes}, "
        f"{len(requests)} Halo requests ({len(halo.posts())} POSTs)"
    )
    for sent in storm:
        record = record_of(runtime, sent["job_id"])
        ticket_id = int(sent["ticket_id"])
        assert record["outcome"] == "succeeded", record
        assert [ticket["id"] for ticket in record["result"]] == [ticket_id]
        assert record["result"][0]["summary"] == sent["summary"]
        assert record["changed_fields"] == ["summary"]
        assert record["attempts"] == 1, "waiting in the backlog was counted as an attempt"
        stored = halo.ticket(ticket_id)
        assert stored is not None
        assert stored["summary"] == sent["summary"]
    # One by one, each job costs a read and a POST: 120 requests and more.
    assert len(requests) <= BURST_JOBS // 3, (
        f"{len(requests)} Halo requests for {BURST_JOBS} jobs: the burst was not batched"
    )
    assert max(released.sizes) > 1
    assert len(halo.posts()) < BURST_JOBS // 4


def test_a_lone_job_runs_straight_through_at_a_single_jobs_cost(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    warm = job(FIRST_TICKET, summary="Warms the token and the lookups")
    assert runtime.runner.run(warm, task_id=warm["job_id"]) is RunResult.RECORDED
    before = len(halo.requests())
    lone = job(FIRST_TICKET + 1, summary="One alert, alone")

    assert runtime.runner.run(lone, task_id=lone["job_id"], submitted_at=EARLY) is (
        RunResult.RECORDED
    )

    record = record_of(runtime, lone["job_id"])
    assert record["outcome"] == "succeeded"
    assert record["attempts"] == 1
    assert record["halo_requests"] == 2
    sent = halo.requests()[before:]
    assert [(r.method, r.path_lower) for r in sent] == [
        ("GET", f"/api/tickets/{FIRST_TICKET + 1}"),
        ("POST", "/api/tickets"),
    ], "a lone job was not read and written on its own"
    assert runtime.backlogs.size("acme") == 0


def test_a_job_arriving_while_its_connection_crowds_the_worker_joins_the_backlog(
    fleet: Fleet,
) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    crowding = job(FIRST_TICKET, summary="Arrives in a burst")

    with runtime.runner.bursts.running("acme", runtime.settings.burst_threshold):
        result = runtime.runner.run(crowding, task_id=crowding["job_id"], submitted_at=EARLY)

    assert result is RunResult.PARKED
    assert halo.requests() == [], "a job of a burst went to Halo on its own"
    assert runtime.backlogs.size("acme") == 1


@pytest.mark.parametrize("parked_by", ["a burst", "a backlog"])
def test_a_later_job_for_the_same_ticket_does_not_overtake_a_parked_job(
    fleet: Fleet, parked_by: str
) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    Learned(runtime.redis).saw_list_read("acme", honoured=True, page_cap=None)
    first = job(FIRST_TICKET, summary="First alert")
    second = job(FIRST_TICKET, summary="Second alert, submitted later")
    if parked_by == "a burst":
        with runtime.runner.bursts.running("acme", runtime.settings.burst_threshold):
            parked = runtime.runner.run(first, task_id=first["job_id"], submitted_at=EARLY)
    else:
        park(runtime, job(FIRST_TICKET + 1, summary="Waits in the backlog already"))
        parked = runtime.runner.run(first, task_id=first["job_id"], submitted_at=EARLY)
    assert parked is RunResult.PARKED
    # The backlog is released: the first job's batch is on its way, not run yet.
    kept = Kept(runtime)
    assert kept.dispatcher().dispatch() > 0
    assert runtime.backlogs.size("acme") == 0

    # Nothing crowds the worker now: the second job would run straight through, but the first
    # comes first.
    assert runtime.runner.run(second, task_id=second["job_id"], submitted_at=LATER) is (
        RunResult.WAITING
    )

    kept.run()
    assert record_of(runtime, first["job_id"])["outcome"] == "succeeded"
    handed_on: list[str] = []

    def publish(job_id: str, payload: Job, submitted_at: str | None) -> None:
        handed_on.append(job_id)
        runtime.runner.run(payload, task_id=job_id, submitted_at=submitted_at)

    move_due(runtime.store, publish)
    assert handed_on == [second["job_id"]]
    assert record_of(runtime, second["job_id"])["outcome"] == "succeeded"
    stored = halo.ticket(FIRST_TICKET)
    assert stored is not None
    assert stored["summary"] == "Second alert, submitted later"


def test_a_connection_that_never_batches_runs_a_bursts_jobs_one_by_one(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"}, extra_toml='batching = "off"\n')
    crowding = job(FIRST_TICKET, summary="Arrives in a burst")

    with runtime.runner.bursts.running("acme", runtime.settings.burst_threshold):
        result = runtime.runner.run(crowding, task_id=crowding["job_id"], submitted_at=EARLY)

    assert result is RunResult.RECORDED, "parked, though its backlog is released job by job"
    assert record_of(runtime, crowding["job_id"])["outcome"] == "succeeded"


class Kept:
    """A dispatcher's `publish_batch` that keeps the batches, to run them when the test says."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.batches: list[tuple[str, list[Parked], int, str | None]] = []

    def __call__(
        self, connection: str, parked: list[Parked], prepaid: int, reservation: str | None
    ) -> None:
        self.batches.append((connection, list(parked), prepaid, reservation))

    def sizes(self) -> list[int]:
        return [len(parked) for _, parked, _, _ in self.batches]

    def run(self) -> None:
        for connection, parked, prepaid, reservation in self.batches:
            assert reservation is not None
            conn = self.runtime.clients.connections[connection]
            covered = self.runtime.governor.use_reservation(conn, reservation, prepaid)
            run_batch(self.runtime.runner, connection, parked, covered)

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(
            self.runtime.backlogs,
            self.runtime.governor,
            self.runtime.clients.connections,
            self,
            batch_max=self.runtime.settings.batch_max,
            learned=Learned(self.runtime.redis),
        )


def park(runtime: Runtime, *jobs: Job) -> None:
    for parked in jobs:
        runtime.backlogs.park(parked["connection"], parked["job_id"], parked, EARLY)


def test_a_partial_batch_waits_while_a_burst_is_still_arriving(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    Learned(runtime.redis).saw_list_read("acme", honoured=True, page_cap=None)
    kept = Kept(runtime)
    dispatcher = kept.dispatcher()
    storm = [job(ticket_id) for ticket_id in range(FIRST_TICKET, FIRST_TICKET + 30)]
    park(runtime, storm[0])
    assert dispatcher.dispatch() == 1, "a lone parked job was held back"

    park(runtime, *storm[1:26])  # the burst goes on arriving between two looks
    assert dispatcher.dispatch() == 20, "not one full batch, the partial rest held back"
    assert runtime.backlogs.waiting("acme") == 5
    park(runtime, *storm[26:])
    assert dispatcher.dispatch() == 0, "a partial batch went while jobs still arrived"

    # Nothing joined since the last look: the burst is over, what waits goes at once.
    assert dispatcher.dispatch() == 9
    assert kept.sizes() == [1, 20, 9]
    kept.run()
    assert all(record_of(runtime, j["job_id"])["outcome"] == "succeeded" for j in storm)


def test_no_second_probe_is_released_while_the_first_is_on_its_way(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), rates={"acme": "300/300s"})
    kept = Kept(runtime)
    dispatcher = kept.dispatcher()
    storm = [job(ticket_id) for ticket_id in range(FIRST_TICKET, FIRST_TICKET + 5)]
    park(runtime, *storm)

    assert dispatcher.dispatch() == 1  # the probe: the tenant has shown nothing yet
    assert dispatcher.dispatch() == 0, "another job was released alone before the probe ran"
    kept.run()  # the probe shows the tenant honours `ticketids`
    kept.batches.clear()

    assert dispatcher.dispatch() == 4
    assert kept.sizes() == [4]
    kept.run()
    assert all(record_of(runtime, j["job_id"])["outcome"] == "succeeded" for j in storm)
