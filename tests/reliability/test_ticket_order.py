"""Jobs for one ticket take turns, in the order they were submitted.

Two rules matching one email, or a rule run twice on a thread, update one ticket with jobs a
moment apart. Each job reads the ticket, diffs and writes: if two interleave, the later one
diffs against what it read before the earlier one wrote, so it skips a change it should make
(or writes back a stale value) and its record reports changes Halo never needed, or misses
ones it did. Here each ticket gets two conflicting pairs (close it, set it back to New, close,
New), 150 ms apart, on a Halo that takes 200 ms per answer, run by 2 workers x 16 threads:
once as single jobs (burst batching off), once as they come (a worker crowded with one
connection's jobs batches the next ones, `worker.burst`), once with a Halo budget so small
that most jobs run in backlog batches.
The fake Halo's request log is the judge: per ticket, the POSTs are replayed in order.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Final

import pytest

from fakehalo.seeds import plain_ticket
from tests.integration.harness import wait_until
from tests.reliability.audit import UNACKED, settle, wait_for_records
from tests.reliability.fleet import FIRST_TICKET, UNLIMITED, Fleet, Record
from worker.keys import TICKET_WAITING, UNFINISHED, UNFINISHED_JOBS, ticket_hold_key
from worker.settings import Settings

HALO_LATENCY_S: Final = 0.2
TICKETS: Final = 10
# Per ticket: close, set back to New, close, set back to New: two conflicting pairs.
ROUNDS: Final = 4
# Between one round of submissions and the next, as two rules firing on one email would be.
GAP_S: Final = 0.15
WORKERS: Final = 2
THREADS: Final = "16"
# Demo status ids (fakehalo.seeds).
STATUS_IDS: Final = {"New": 1, "Closed": 9}
# A budget of about a quarter of the requests the jobs need, spread over the run: most jobs
# find it spent, wait in the backlog and run in released batches.
BATCHING_LIMIT: Final = "12/2s"


def conflicting_job(ticket_id: int, round_: int) -> dict[str, Any]:
    """A job that writes a summary of its own and closes the ticket or sets it back to New."""
    job_id = f"order-{ticket_id}-{round_}"
    return {
        "job_id": job_id,
        "connection": "acme",
        "ticket_id": str(ticket_id),
        "summary": f"written by {job_id}",
        "status": "Closed" if round_ % 2 == 0 else "New",
    }


def wanted(job: dict[str, Any]) -> dict[str, Any]:
    """The ticket fields a job sets, as Halo stores them."""
    return {"summary": job["summary"], "status_id": STATUS_IDS[job["status"]]}


def replay(
    fleet: Fleet, jobs: dict[str, dict[str, Any]], records: dict[str, Record]
) -> tuple[dict[int, list[str]], list[str]]:
    """Walk each ticket's successful POSTs in the order Halo saw them.

    Returns the job ids in POST order per ticket, and every way a record disagrees with what
    Halo saw: its `changed_fields` must be the fields its POST carried, and those must be
    exactly the fields whose value on the ticket, just before that POST, differed from the
    job's.
    """
    by_summary = {job["summary"]: job_id for job_id, job in jobs.items()}
    state = {
        int(job["ticket_id"]): {"summary": f"ticket {job['ticket_id']}", "status_id": 1}
        for job in jobs.values()
    }
    order: dict[int, list[str]] = {ticket_id: [] for ticket_id in state}
    untrue: list[str] = []
    for request in fleet.fake.posts():
        if request.status is None or not 200 <= request.status < 300:
            continue
        elements = request.json if isinstance(request.json, list) else [request.json]
        for element in elements:
            job_id = by_summary.get(str(element.get("summary")))
            if job_id is None:
                untrue.append(f"a POST no job explains: {sorted(element)}")
                continue
            ticket_id = int(element["id"])
            before = state[ticket_id]
            needed = sorted(k for k, v in wanted(jobs[job_id]).items() if before[k] != v)
            sent = sorted(k for k in element if k != "id")
            reported = sorted(records[job_id]["changed_fields"]) if job_id in records else None
            if not sent == needed == reported:
                untrue.append(f"{job_id}: needed {needed}, sent {sent}, reported {reported}")
            before.update({k: element[k] for k in sent})
            order[ticket_id].append(job_id)
    return order, untrue


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["single", "burst", "batched"])
def test_conflicting_jobs_on_one_ticket_take_effect_one_at_a_time_in_submission_order(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    if mode == "batched":
        text = fleet.connections_file.read_text()
        fleet.connections_file.write_text(text.replace(UNLIMITED, BATCHING_LIMIT))
    tickets = [FIRST_TICKET + n for n in range(TICKETS)]
    for ticket_id in tickets:
        fleet.fake.add_ticket(**{**plain_ticket(ticket_id), "status_id": STATUS_IDS["New"]})
    # "single": every job on its own, as when no worker is crowded.
    default = Settings.model_fields["burst_threshold"].default
    threshold = "0" if mode == "single" else str(default)
    workers = [
        fleet.worker(f"order{n}", worker_concurrency=THREADS, burst_threshold=threshold)
        for n in range(WORKERS)
    ]
    fleet.fake.configure(latency_s=HALO_LATENCY_S)

    jobs: dict[str, dict[str, Any]] = {}
    submitted: dict[int, list[str]] = {ticket_id: [] for ticket_id in tickets}
    started = time.monotonic()
    for round_ in range(ROUNDS):
        if round_:
            time.sleep(GAP_S)
        for ticket_id in tickets:
            job = conflicting_job(ticket_id, round_)
            jobs[job["job_id"]] = job
            submitted[ticket_id].append(fleet.producer.submit(job))
    drain_s = wait_for_records(fleet, jobs, timeout_s=120)
    records = fleet.records(jobs)
    order, untrue = replay(fleet, jobs, records)
    logs = "".join(worker.log_text() for worker in workers)
    waits = logs.count("job waits for its ticket")
    batches = len(re.findall(r"Task halo.update_batch\[[^]]+\] succeeded", logs))

    figures = {
        "mode": mode,
        "jobs": len(jobs),
        "tickets": TICKETS,
        "records": len(records),
        "outcomes": sorted({str(r["outcome"]) for r in records.values()}),
        "posts": len(fleet.fake.posts()),
        "waits_for_a_ticket": waits,
        "batches": batches,
        "records_untrue_to_halo": len(untrue),
        "drain_s": round(drain_s, 1),
        "run_s": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print(f"\n[ticket order] {json.dumps(figures)}")
    assert {r["outcome"] for r in records.values()} == {"succeeded"}, figures
    assert untrue == [], untrue[:5]
    # One POST per job, ticket by ticket in the order the jobs were submitted.
    assert order == submitted
    for ticket_id in tickets:
        last = jobs[submitted[ticket_id][-1]]
        ticket = fleet.fake.ticket(ticket_id) or {}
        assert {k: ticket.get(k) for k in ("summary", "status_id")} == wanted(last), ticket_id
    # The jobs did conflict: some found their ticket taken and waited without a slot.
    assert waits > 0, figures
    if mode != "burst":  # how many go in batches depends on how the jobs crowd a worker
        assert (batches > 0) == (mode == "batched"), figures
    # Nothing left waiting: no hold, no waiting job, no deferral, no unacked message.
    left, _ = settle(fleet.redis, timeout_s=fleet.visibility_timeout_s + 20)
    assert not any(left.values()), left


def forget_message(fleet: Fleet, job_id: str) -> None:
    """Lose a job for good, as a broker that lost its message would, from a producer that
    does not track its jobs: no unacked message to restore, no `halo:unfinished` entry."""
    for tag, message in fleet.redis.hgetall(UNACKED).items():
        if job_id in message:
            fleet.redis.hdel(UNACKED, tag)
            fleet.redis.zrem(UNACKED + "_index", tag)
    fleet.redis.zrem(UNFINISHED, job_id)
    fleet.redis.hdel(UNFINISHED_JOBS, job_id)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_ticket_held_by_a_job_that_died_with_its_worker_and_never_came_back_is_passed_on(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket_id, warm_up_ticket = FIRST_TICKET, FIRST_TICKET + 1
    for seeded in (ticket_id, warm_up_ticket):
        fleet.fake.add_ticket(**{**plain_ticket(seeded), "status_id": STATUS_IDS["New"]})
    worker = fleet.worker("holder")
    # A first job fetches the token and the status list, so that the worker is killed in the
    # middle of the ticket read, not of a token request (whose lock would outlive it).
    warm_up = conflicting_job(warm_up_ticket, 0)
    wait_for_records(fleet, [fleet.producer.submit(warm_up)], timeout_s=30)
    # Slow answers keep the first job holding the ticket while its worker is killed.
    fleet.fake.configure(latency_s=1.0)
    closing, reopening = conflicting_job(ticket_id, 0), conflicting_job(ticket_id, 1)
    hold = ticket_hold_key("acme", ticket_id)

    fleet.producer.submit(closing)
    wait_until(lambda: fleet.redis.get(hold) == closing["job_id"], 30, "the first job's hold")
    fleet.producer.submit(reopening)
    wait_until(
        lambda: fleet.redis.hexists(TICKET_WAITING, reopening["job_id"]), 30, "the second to wait"
    )
    worker.kill()
    killed_at = time.monotonic()
    forget_message(fleet, closing["job_id"])
    fleet.worker("next")

    # The job that died shows no sign of life once its claim and the quiet bound have passed:
    # the mover then hands the ticket on.
    bound_s = fleet.visibility_timeout_s + fleet.lease_s
    wait_for_records(fleet, [reopening["job_id"]], timeout_s=bound_s + 60)
    record = fleet.records([reopening["job_id"]])[reopening["job_id"]]
    ticket = fleet.fake.ticket(ticket_id) or {}
    figures = {
        "quiet_bound_s": bound_s,
        "record_after_kill_s": round(time.monotonic() - killed_at, 1),
        "attempts": record["attempts"],
    }
    with capsys.disabled():
        print(f"\n[ticket after a dead holder] {json.dumps(figures)}")
    assert record["outcome"] == "succeeded"
    # The first job never wrote: the ticket was still New, so only the summary changed.
    assert fleet.fake.posts()[-1].json == [{"id": ticket_id, "summary": reopening["summary"]}]
    assert len(fleet.fake.posts()) == 2  # the warm-up's and the second job's
    assert record["changed_fields"] == ["summary"]
    assert {k: ticket.get(k) for k in ("summary", "status_id")} == wanted(reopening)
    assert fleet.records([closing["job_id"]]) == {}
    assert fleet.redis.get(hold) is None
    assert fleet.redis.hlen(TICKET_WAITING) == 0
