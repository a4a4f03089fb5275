"""What a job costs Redis, and the merged steps that keep it low.

A warm job that reads its ticket and POSTs one change makes five round trips to Redis:

    claim          whether it has a record, the claim, and the count of its run
    enter          its ticket's turn
    grant          budget for the read
    grant + note   budget for the POST, with the write journal's note in the same call
    record         the record, its feed entry, the end of its turn and of its claim

Each merged step keeps the atomicity of the steps it replaced, or gains some: these tests check
what each one does beside counting the trips.
"""

from __future__ import annotations

import threading
import traceback
from collections import Counter
from typing import Any, Final, cast

import pytest
import redis
from redis.connection import AbstractConnection

from fakehalo.seeds import plain_ticket
from tests.integration.budget import Fleet, Tenants, job, new_fake
from worker.claims import Claims
from worker.errors import BudgetExhausted
from worker.keys import claim_key, job_state_key, result_key
from worker.models import Outcome, ResultRecord, utc_now_iso
from worker.records import Records
from worker.runner import RunResult

pytest_plugins = ["tests.integration.fixtures_budget"]

NEW: Final = 1
TICKETS: Final = (6001, 6002)
# The steps of a warm, single job that reads its ticket and POSTs one change.
HAPPY_PATH_TRIPS: Final = 5


class Trips:
    """Counts this thread's Redis round trips (one per command or pipeline sent), by the
    project's function that sent each."""

    def __init__(self) -> None:
        self.sites: Counter[str] = Counter()
        self._thread = threading.get_ident()

    def sent(self) -> None:
        if threading.get_ident() != self._thread:
            return
        frames = [f for f in traceback.extract_stack()[:-2] if "/worker/" in f.filename]
        site = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].name}" if frames else "?"
        self.sites[site] += 1

    @property
    def total(self) -> int:
        return sum(self.sites.values())


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    counted = Trips()
    send = AbstractConnection.send_packed_command

    def sending(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counted.sent()
        cast(Any, send)(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", sending)
    return counted


def _record(job_id: str) -> ResultRecord:
    now = utc_now_iso()
    return ResultRecord(
        job_id=job_id, outcome=Outcome.SUCCEEDED, disposition=None, result=[], variables={},
        changed_fields=[], warnings=[], error=None, attempts=1, halo_requests=0,
        submitted_at=now, finished_at=now, meta={},
    )  # fmt: skip


def test_a_warm_job_that_reads_and_posts_makes_five_round_trips(fleet: Fleet, trips: Trips) -> None:
    halo = new_fake()
    for ticket_id in TICKETS:
        halo.add_ticket(**{**plain_ticket(ticket_id), "status_id": NEW})
    runtime = fleet(Tenants(acme=halo))
    warm = job(TICKETS[0], summary="warm", status="Closed")
    assert runtime.runner.run(warm, task_id=str(warm["job_id"])) is RunResult.RECORDED

    before = trips.sites.copy()
    measured = job(TICKETS[1], summary="measured", status="Closed")
    assert runtime.runner.run(measured, task_id=str(measured["job_id"])) is RunResult.RECORDED
    sites = trips.sites - before

    assert sum(sites.values()) == HAPPY_PATH_TRIPS, dict(sites)
    assert len(halo.posts()) == 2
    record = runtime.store.records.get(str(measured["job_id"]))
    assert record is not None
    assert record["outcome"] == "succeeded"
    assert record["changed_fields"] == ["summary", "status_id"]
    # Nothing of the run is left behind: its claim went with the record.
    assert runtime.redis.exists(claim_key(str(measured["job_id"]))) == 0
    assert runtime.redis.exists(job_state_key(str(measured["job_id"]))) == 0


def test_a_claim_counts_its_run_and_the_record_write_releases_it(
    budget_redis: redis.Redis, trips: Trips
) -> None:
    claims = Claims(budget_redis, ttl_s=60)
    records = Records(budget_redis, ttl_s=60, claims=claims)
    with claims.claim("j1", lease_s=30, submitted_at="2026-12-01T09:00:00Z") as taken:
        assert taken
        assert budget_redis.hget(job_state_key("j1"), "attempts") == "1"
        before = trips.total
        state = claims.begin_run("j1", "2026-12-01T09:00:00Z")
        assert trips.total == before, "the claim's call counted the run already"
        assert state is not None
        assert (state.attempts, state.crashes) == (1, 0)
        assert records.write(_record("j1"))
        assert budget_redis.exists(claim_key("j1")) == 0
        after_record = trips.total
    assert trips.total == after_record, "a claim its record released is not released again"
    # A claim taken again by now (the lease ran out, another worker took it) is not touched.
    with claims.claim("j2", lease_s=30, submitted_at="2026-12-01T09:00:00Z") as taken:
        assert taken
        budget_redis.set(claim_key("j2"), "another worker's token")
        assert records.write(_record("j2"))
        assert budget_redis.get(claim_key("j2")) == "another worker's token"
    assert budget_redis.get(claim_key("j2")) == "another worker's token"


def test_a_job_with_a_record_is_neither_claimed_nor_counted(budget_redis: redis.Redis) -> None:
    claims = Claims(budget_redis, ttl_s=60)
    budget_redis.set(result_key("j1"), "{}")
    with claims.claim("j1", lease_s=30, submitted_at="2026-12-01T09:00:00Z") as go_on:
        assert go_on
        assert budget_redis.exists(claim_key("j1")) == 0
        assert claims.begin_run("j1", "2026-12-01T09:00:00Z") is None
    assert budget_redis.exists(job_state_key("j1")) == 0


def test_a_job_held_elsewhere_is_not_counted(budget_redis: redis.Redis) -> None:
    claims = Claims(budget_redis, ttl_s=60)
    budget_redis.set(claim_key("j1"), "another worker's token")
    with claims.claim("j1", lease_s=30, submitted_at="2026-12-01T09:00:00Z") as taken:
        assert not taken
    assert budget_redis.exists(job_state_key("j1")) == 0
    assert budget_redis.get(claim_key("j1")) == "another worker's token"


def test_a_journal_note_is_written_with_its_grant_and_never_on_a_refusal(
    fleet: Fleet, budget_redis: redis.Redis, trips: Trips
) -> None:
    runtime = fleet(Tenants(), rates={"acme": "2/60s"})
    acme = runtime.clients.connections["acme"]
    governor = runtime.governor
    # The first call connects and loads the script.
    assert governor.acquire(acme, [runtime.store.claims.journal("j0").rider(["details"])])
    journal = runtime.store.claims.journal("j1")
    before = trips.total
    assert governor.acquire(acme, [journal.rider(["summary"])]) is not None
    assert trips.total == before + 1, "the note went in the grant's call"
    assert journal.recall() == ["summary"]

    other = runtime.store.claims.journal("j2")
    with pytest.raises(BudgetExhausted):
        governor.acquire(acme, [other.rider(["status_id"])])
    assert other.recall() is None, "a note was written for a request that was never sent"
    assert budget_redis.exists(job_state_key("j2")) == 0
