"""Batching never costs correctness: a backlog batch on a tenant that pages its list reads,
ignores `ticketids`, or answers a POST of several tickets with the first one only ends every
job exactly as a single run would, and never POSTs a change twice.

The worker's parts run in this process against fake tenants behind `httpx.MockTransport`
(`tests.integration.budget`); the fake's request log is the judge of what was sent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from fakehalo import FakeHalo
from tests.integration.budget import Fleet, Job, Record, Tenants, job, new_fake
from worker.backlog import BATCH_COST, Dispatcher, Parked
from worker.batch import run_batch
from worker.learned import Learned
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

SUBMITTED_AT: Final = "2026-12-01T08:59:00.000Z"
TICKETS: Final = tuple(range(5001, 5011))


class Published:
    """A dispatcher's `publish_batch` that keeps the batches instead of queueing them."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Parked], int, str | None]] = []

    def __call__(
        self, connection: str, parked: list[Parked], prepaid: int, reservation: str | None
    ) -> None:
        self.batches.append((connection, list(parked), prepaid, reservation))

    def sizes(self) -> list[int]:
        return [len(parked) for _, parked, _, _ in self.batches]

    def run(self, runtime: Runtime) -> int:
        """Run the batches published so far, as the batch task does, and forget them."""
        recorded = 0
        batches, self.batches = self.batches, []
        for connection, parked, prepaid, reservation in batches:
            assert reservation is not None
            conn = runtime.clients.connections[connection]
            covered = runtime.governor.use_reservation(conn, reservation, prepaid)
            recorded += run_batch(runtime.runner, connection, parked, covered)
        return recorded


def tenant(**options: Any) -> FakeHalo:
    """The demo tenant plus tickets 5001-5010; `options` configure the fake."""
    halo = new_fake(**options)
    for ticket_id in TICKETS:
        halo.add_ticket(id=ticket_id, summary=f"Seeded ticket {ticket_id}", team="Service Desk")
    return halo


def park(runtime: Runtime, *jobs: Job) -> None:
    for parked in jobs:
        runtime.backlogs.park(parked["connection"], parked["job_id"], parked, SUBMITTED_AT)


def dispatch(runtime: Runtime, published: Published, *, batch_max: int = 20) -> int:
    dispatcher = Dispatcher(
        runtime.backlogs,
        runtime.governor,
        runtime.clients.connections,
        published,
        batch_max=batch_max,
        learned=Learned(runtime.redis),
    )
    return dispatcher.dispatch()


def honours_ticketids(runtime: Runtime) -> None:
    """The tenant has shown that its list reads honour `ticketids`: it is batched."""
    Learned(runtime.redis).saw_list_read("acme", honoured=True, page_cap=None)


def record(runtime: Runtime, job_id: str) -> Record:
    found = runtime.store.records.get(job_id)
    assert found is not None, f"no record for {job_id}"
    return found


def summary_jobs(tickets: tuple[int, ...], tag: str) -> list[Job]:
    return [job(t, summary=f"{tag}: summary of {t}") for t in tickets]


def list_reads(halo: FakeHalo) -> list[dict[str, str]]:
    return [
        r.query for r in halo.requests() if r.path_lower == "/api/tickets" and r.method == "GET"
    ]


def single_reads(halo: FakeHalo) -> list[str]:
    return [r.path_lower for r in halo.requests() if r.path_lower.startswith("/api/tickets/")]


def posted_elements(halo: FakeHalo) -> list[dict[str, Any]]:
    """Every element of every ticket POST Halo accepted, in order."""
    accepted = [p for p in halo.posts() if p.status is not None and 200 <= p.status < 300]
    return [element for p in accepted for element in (p.json or [])]


# -- the batch read ---------------------------------------------------------------------------


def test_a_batch_read_pages_through_a_tenant_that_cuts_its_pages_short(fleet: Fleet) -> None:
    halo = tenant(list_page_cap=2)
    runtime = fleet(Tenants(acme=halo))
    honours_ticketids(runtime)
    jobs = summary_jobs(TICKETS[:5], "paged")
    park(runtime, *jobs)
    published = Published()
    assert dispatch(runtime, published) == 5
    assert published.sizes() == [5]

    assert published.run(runtime) == 5

    assert [record(runtime, j["job_id"])["outcome"] for j in jobs] == ["succeeded"] * 5
    pages = list_reads(halo)
    assert [(q["pageinate"], q["page_no"]) for q in pages] == [
        ("true", "1"),
        ("true", "2"),
        ("true", "3"),
    ]
    assert single_reads(halo) == [], "a ticket the pages listed was read again"
    # Learned: batches of this tenant hold no more jobs than one of its pages.
    assert Learned(runtime.redis).facts("acme").page_cap == 2
    park(runtime, *summary_jobs(TICKETS[5:], "second"))
    assert dispatch(runtime, published) == 5
    assert published.sizes() == [2, 2, 1]


def test_a_ticket_the_list_read_left_out_is_read_alone_and_only_a_404_there_fails_its_job(
    fleet: Fleet,
) -> None:
    # This tenant does not filter on `ticketids`: its list pages hold other tickets.
    halo = tenant(ticketids_ignored=True, list_page_cap=2)
    runtime = fleet(Tenants(acme=halo))
    honours_ticketids(runtime)  # as it seemed to once: the batch read checks it again
    found = summary_jobs(TICKETS[:3], "left out")
    missing = job(999999, summary="No such ticket")
    park(runtime, *found, missing)
    published = Published()
    assert dispatch(runtime, published) == 4

    assert published.run(runtime) == 4

    assert [record(runtime, j["job_id"])["outcome"] for j in found] == ["succeeded"] * 3
    for done in found:
        ticket = halo.ticket(int(done["ticket_id"]))
        assert ticket is not None
        assert ticket["summary"] == done["summary"]
    failed = record(runtime, missing["job_id"])
    assert failed["error"]["code"] == "ticket_not_found"
    # One list page (paging on would read the whole tenant), then one read per ticket.
    assert len(list_reads(halo)) == 1
    assert sorted(single_reads(halo)) == sorted(f"/api/tickets/{t}" for t in (*TICKETS[:3], 999999))
    assert halo.created_tickets() == []
    # Learned: this tenant ignores `ticketids`, so its backlog is no longer batched.
    assert Learned(runtime.redis).facts("acme").ticketids == "ignored"
    park(runtime, *summary_jobs(TICKETS[3:6], "after"))
    assert dispatch(runtime, published) == 3
    assert published.sizes() == [1, 1, 1]


# -- the batch POST ---------------------------------------------------------------------------


def test_a_post_answered_with_the_first_ticket_only_is_settled_from_halo_without_a_second_post(
    fleet: Fleet,
) -> None:
    halo = tenant(update_answer_shape="first")
    runtime = fleet(Tenants(acme=halo))
    honours_ticketids(runtime)
    jobs = [*summary_jobs(TICKETS[:3], "first only"), job(TICKETS[3], status="Closed")]
    park(runtime, *jobs)
    published = Published()
    dispatch(runtime, published)

    assert published.run(runtime) == 4

    records = [record(runtime, j["job_id"]) for j in jobs]
    assert [r["outcome"] for r in records] == ["succeeded"] * 4
    assert [r["changed_fields"] for r in records] == [["summary"]] * 3 + [["status_id"]]
    assert records[3]["result"][0]["status_name"] == "Closed"
    assert [len(p.json or []) for p in halo.posts()] == [4], "a change was POSTed twice"
    # The three the answer left out were read back, each alone.
    assert sorted(single_reads(halo)) == sorted(f"/api/tickets/{t}" for t in TICKETS[1:4])
    assert Learned(runtime.redis).facts("acme").post_answer == "partial"

    # From now on this tenant's batches POST job by job: those answers are conclusive.
    more = summary_jobs(TICKETS[4:7], "job by job")
    park(runtime, *more)
    dispatch(runtime, published)
    assert published.run(runtime) == 3
    assert [len(p.json or []) for p in halo.posts()] == [4, 1, 1, 1]
    assert all(record(runtime, j["job_id"])["outcome"] == "succeeded" for j in more)


def test_a_job_whose_read_back_fails_finishes_from_its_journal_without_a_second_post(
    fleet: Fleet,
) -> None:
    halo = tenant(update_answer_shape="first")
    runtime = fleet(Tenants(acme=halo))
    honours_ticketids(runtime)
    jobs = summary_jobs(TICKETS[:2], "journal")
    park(runtime, *jobs)
    published = Published()
    dispatch(runtime, published)
    # The second ticket's read-back fails: as if the worker died between POST and record.
    halo.fail_next(1, 503, path=f"/api/tickets/{TICKETS[1]}", method="GET")

    assert published.run(runtime) == 1
    assert runtime.store.records.get(jobs[1]["job_id"]) is None  # deferred, not failed

    rerun = runtime.runner.run(jobs[1], task_id=jobs[1]["job_id"], submitted_at=SUBMITTED_AT)
    assert rerun.value == "recorded"
    again = record(runtime, jobs[1]["job_id"])
    assert again["outcome"] == "succeeded"
    assert again["changed_fields"] == ["summary"], "the journal's fields were not reported"
    assert [len(p.json or []) for p in halo.posts()] == [2]


# -- which tenants are batched ----------------------------------------------------------------


def test_a_tenant_not_yet_seen_to_honour_ticketids_is_released_job_by_job_until_a_probe_shows_it(
    fleet: Fleet,
) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo))
    first = summary_jobs(TICKETS[:6], "unknown tenant")
    park(runtime, *first)
    published = Published()

    # One job and one budget grant per release, in backlog order, and while the tenant is
    # not known one release per round, so the budget waits for what the probe shows.
    assert dispatch(runtime, published) == 1
    assert dispatch(runtime, published) == 1
    assert published.sizes() == [1, 1]
    assert [b[1][0].job_id for b in published.batches] == [j["job_id"] for j in first[:2]]
    assert {prepaid for _, _, prepaid, _ in published.batches} == {BATCH_COST}
    assert published.run(runtime) == 2
    assert all(record(runtime, j["job_id"])["outcome"] == "succeeded" for j in first[:2])
    # The first release's read was the probe: a checked list read of its one ticket, in
    # place of its single read. Once it showed the filter honoured, no more probes.
    probes = list_reads(halo)
    assert [q["ticketids"] for q in probes] == [str(TICKETS[0])]
    assert Learned(runtime.redis).facts("acme").ticketids == "honoured"

    assert dispatch(runtime, published) == 4
    assert published.sizes() == [4]
    assert published.run(runtime) == 4
    assert all(record(runtime, j["job_id"])["outcome"] == "succeeded" for j in first)


def test_a_connection_with_batching_off_is_never_batched_nor_probed(fleet: Fleet) -> None:
    halo = tenant()
    runtime = fleet(Tenants(acme=halo), extra_toml='batching = "off"\n')
    honours_ticketids(runtime)  # even a tenant known to honour it
    jobs = summary_jobs(TICKETS[:3], "off")
    park(runtime, *jobs)
    published = Published()

    assert dispatch(runtime, published) == 3
    assert published.sizes() == [1, 1, 1]
    assert published.run(runtime) == 3
    # A batch published before the switch was turned off runs its jobs one by one too.
    late = summary_jobs(TICKETS[3:6], "published before")
    parked = [Parked(j["job_id"], j, SUBMITTED_AT) for j in late]
    assert run_batch(runtime.runner, "acme", parked, 0) == 3

    assert all(record(runtime, j["job_id"])["outcome"] == "succeeded" for j in jobs + late)
    assert list_reads(halo) == []
    assert [len(p.json or []) for p in halo.posts()] == [1] * 6
    assert Counter(e["id"] for e in posted_elements(halo)) == Counter(TICKETS[:6])
