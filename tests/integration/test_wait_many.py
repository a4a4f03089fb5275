"""`Producer.wait_many`: many jobs' records under one deadline, from a real worker."""

from __future__ import annotations

import time

import pytest
import redis

from producers.jobs import Producer
from tests.integration.harness import new_job, run_job, wait_for_record

pytestmark = pytest.mark.usefixtures("worker")

# Long enough for a dozen quick jobs on a loaded machine; the jobs held below never finish
# within it, so the wait always runs to its end.
WAIT_S = 4.0
# Longer than any test here: a held job stays held until the test lets it go.
HOLD_MS = 120_000


def hold(redis_client: redis.Redis, job_id: str) -> None:
    """Make the job look run by another worker (its claim is taken): it cannot finish."""
    redis_client.set(f"halo:claim:{job_id}", "held-by-the-test", px=HOLD_MS)


def test_wait_many_returns_old_and_new_records_and_the_missing_ids_under_one_deadline(
    producer: Producer, redis_client: redis.Redis
) -> None:
    earlier = [
        run_job(producer, new_job(ticket_id="4712", status="Closed"))["job_id"] for _ in range(3)
    ]
    held = [new_job(status="Closed") for _ in range(3)]
    for job in held:
        hold(redis_client, job["job_id"])
    fresh = [
        producer.submit(new_job(ticket_id=str(4711 + n % 6), status="Closed")) for n in range(12)
    ]
    held_ids = [producer.submit(job) for job in held]
    progress: list[tuple[int, int]] = []

    started = time.monotonic()
    waited = producer.wait_many(
        [*earlier, *fresh, *held_ids], WAIT_S, on_progress=lambda *seen: progress.append(seen)
    )
    elapsed_s = time.monotonic() - started

    assert list(waited.records) == [*earlier, *fresh]
    assert waited.missing == held_ids
    for job_id, record in waited.records.items():
        assert record == producer.result(job_id)
        assert record["outcome"] == "succeeded"
    # One deadline for all: a wait per missing job would have taken 3 times WAIT_S at least.
    print(f"\n18 jobs, 15 records, 3 missing, waited {elapsed_s:.1f} s with a {WAIT_S:g} s bound")
    assert elapsed_s < len(held_ids) * WAIT_S
    # Progress: the records that existed first, then counts that only grow, up to 15 of 18.
    assert progress[0][0] >= len(earlier)
    assert [finished for finished, _ in progress] == sorted(finished for finished, _ in progress)
    assert progress[-1] == (15, 18)
    assert {total for _, total in progress} == {18}
    # Nothing held is lost: let the jobs go and each ends in its record.
    redis_client.delete(*(f"halo:claim:{job_id}" for job_id in held_ids))
    for job_id in held_ids:
        assert wait_for_record(producer, job_id)["outcome"] == "succeeded"


def test_wait_many_with_no_time_left_returns_the_records_that_exist_at_once(
    producer: Producer,
) -> None:
    done = run_job(producer, new_job(status="Closed"))

    waited = producer.wait_many([done["job_id"], "it-never-submitted"], 0)

    assert waited.records == {done["job_id"]: done}
    assert waited.missing == ["it-never-submitted"]


def test_wait_many_counts_a_job_id_given_twice_once(producer: Producer) -> None:
    done = run_job(producer, new_job(status="Closed"))
    progress: list[tuple[int, int]] = []

    waited = producer.wait_many(
        [done["job_id"], done["job_id"], "it-never-submitted"],
        0,
        on_progress=lambda *seen: progress.append(seen),
    )

    assert waited.records == {done["job_id"]: done}
    assert waited.missing == ["it-never-submitted"]
    assert progress == [(1, 2)]
