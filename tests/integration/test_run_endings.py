"""A job ends the same way run alone or inside a batch: the same error gives the same record,
with the same error and disposition, or the same deferral (`worker.endings`).

The worker's parts run in this process against a fake tenant behind `httpx.MockTransport`
(`tests.integration.budget`). Each case runs one job on its own, and a copy of it in a batch
beside a job that succeeds; only what a batch may change (the job id, times, the share of
requests) is left out of the comparison.
"""

from __future__ import annotations

from typing import Any, Final

import pytest

from fakehalo import FakeHalo
from tests.integration.budget import Fleet, Job, Record, Tenants, job, new_fake
from worker.backlog import Parked
from worker.batch import run_batch
from worker.keys import DEFERRED
from worker.learned import Learned
from worker.runner import RunResult
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

SUBMITTED_AT: Final = "2026-12-01T08:59:00.000Z"
COMPANION_TICKET: Final = 5001
# What a batch may change in a record: the rest must be the single run's.
_BATCH_MAY_CHANGE: Final = ("job_id", "finished_at", "halo_requests")


def _tenant() -> FakeHalo:
    halo = new_fake()
    for ticket_id in (COMPANION_TICKET, 5002, 5003):
        halo.add_ticket(id=ticket_id, summary=f"Seeded ticket {ticket_id}", team="Service Desk")
    return halo


def _runtime(fleet: Fleet, halo: FakeHalo, **settings: Any) -> Runtime:
    runtime = fleet(Tenants(acme=halo), **settings)
    # The tenant has shown that it honours `ticketids`: its batches share one list read.
    Learned(runtime.redis).saw_list_read("acme", honoured=True, page_cap=None)
    return runtime


def _comparable(record: Record | None) -> dict[str, Any]:
    assert record is not None, "the job has no record"
    return {key: value for key, value in record.items() if key not in _BATCH_MAY_CHANGE}


def _run_alone(runtime: Runtime, alone: Job) -> RunResult:
    return runtime.runner.run(alone, task_id=alone["job_id"], submitted_at=SUBMITTED_AT)


def _run_in_batch(runtime: Runtime, member: Job) -> None:
    companion = job(COMPANION_TICKET, summary="the batch's other job")
    parked = [Parked(j["job_id"], j, SUBMITTED_AT) for j in (member, companion)]
    run_batch(runtime.runner, "acme", parked, 0)


# The fields of a job that fails on its own account, by the error code it fails with.
CASES: Final[dict[str, dict[str, str]]] = {
    # Left out of the batch's list read, read on its own: a 404 there.
    "ticket_not_found": {"ticket_id": "999999", "status": "Closed", "error_handling": "Stop All"},
    # Planned against the batch's list read.
    "lookup_not_found": {"ticket_id": "5002", "status": "Closd", "error_handling": "bounce"},
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_a_permanent_error_ends_a_batched_job_in_the_record_it_ends_a_single_job_in(
    fleet: Fleet, code: str
) -> None:
    halo = _tenant()
    runtime = _runtime(fleet, halo)
    fields = CASES[code]
    alone, member = job(**fields), job(**fields)

    assert _run_alone(runtime, alone) is RunResult.RECORDED
    _run_in_batch(runtime, member)

    single = runtime.store.records.get(alone["job_id"])
    batched = runtime.store.records.get(member["job_id"])
    assert _comparable(batched) == _comparable(single)
    assert _comparable(single)["error"]["code"] == code
    assert halo.created_tickets() == []


def test_a_retryable_error_past_the_retry_budget_ends_both_in_the_same_failure_record(
    fleet: Fleet,
) -> None:
    halo = _tenant()
    runtime = _runtime(fleet, halo, retry_max_attempts=1)
    fields = {"ticket_id": "5002", "summary": "never written", "error_handling": "continue"}
    alone, member = job(**fields), job(**fields)

    halo.fail_next(status=503, method="GET", path="/api/tickets/5002")
    assert _run_alone(runtime, alone) is RunResult.RECORDED
    # In the batch, the shared list read fails: every job of the batch ends on it.
    halo.fail_next(status=503, method="GET", path="/api/tickets")
    _run_in_batch(runtime, member)

    single = _comparable(runtime.store.records.get(alone["job_id"]))
    batched = _comparable(runtime.store.records.get(member["job_id"]))
    # The message names the request Halo refused: the ticket's own read, or the list read.
    assert single["error"].pop("message").startswith("Halo answered 503 to GET /api/Tickets/")
    assert batched["error"].pop("message").startswith("Halo answered 503 to GET /api/Tickets:")
    assert batched == single
    assert single["error"]["code"] == "halo_unavailable"
    assert single["disposition"] == "continue"


def test_a_retryable_error_inside_the_retry_budget_defers_both_without_a_record(
    fleet: Fleet,
) -> None:
    halo = _tenant()
    runtime = _runtime(fleet, halo)
    # Tickets of their own: a deferred job keeps its place in its ticket's line, and a later
    # job of that ticket would wait behind it instead of running.
    alone, member = job(5002, summary="written later"), job(5003, summary="written later")

    halo.fail_next(status=503, method="GET", path="/api/tickets/5002")
    assert _run_alone(runtime, alone) is RunResult.DEFERRED
    halo.fail_next(status=503, method="GET", path="/api/tickets")
    _run_in_batch(runtime, member)

    for deferred in (alone, member):
        assert runtime.store.records.get(deferred["job_id"]) is None
        assert runtime.redis.zscore(DEFERRED, deferred["job_id"]) is not None
