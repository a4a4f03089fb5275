"""Workers killed (SIGKILL) or stopped (SIGTERM) over and over while they run jobs.

Three worker processes take every job of a run from one queue; a chaos loop picks a worker at
random, kills or stops it, and starts it again, as a host crash or a rolling deploy would. The
fake Halo answers slowly, so every worker always holds jobs mid-flight when it is hit. Then
every job is checked one by one (`tests.reliability.audit`): one record, one feed entry, one
effective write to its ticket, nothing left waiting in Redis.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import redis

from tests.harness.processes import WorkerProcess
from tests.reliability.audit import AgentEdits, Audit, audit, wait_for_records
from tests.reliability.fleet import Fleet, Record
from tests.reliability.scale import SCALE

# Every Halo answer takes this long: a job (ticket read, POST) holds its slot for about 2 s,
# so with 3 workers x 3 slots the queue lasts through the chaos and every hit lands mid-job.
HALO_LATENCY_S = 1.0
WORKERS = 3
# Seconds between two hits (uniform). A hit worker restarts in the background meanwhile, and
# only a worker that is up again can be hit.
GAP_S = (1.5, 3.0)


class Chaos:
    """Hits random running workers and restarts each in the background, as a host crash
    (SIGKILL) or a rolling deploy (SIGTERM) would."""

    def __init__(self, workers: list[WorkerProcess], hit: Callable[[WorkerProcess], None]) -> None:
        self.workers = workers
        self.hit = hit
        self.seed = random.randrange(2**32)  # noqa: S311 - chaos, not cryptography
        self.back_in_s: list[float] = []
        # At each hit: the wall-clock time and the jobs then claimed fleet-wide (running, or
        # held by an earlier dead worker).
        self.claimed_at_hit: list[tuple[float, list[str]]] = []
        self._restarting: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def run(self, hits: int, redis_client: redis.Redis) -> None:
        """Hit `hits` times; returns once every hit worker is up again."""
        print(f"chaos seed {self.seed}")  # shown when the test fails: replay with it
        rng = random.Random(self.seed)  # noqa: S311 - replayable chaos
        for _ in range(hits):
            time.sleep(rng.uniform(*GAP_S))
            with self._lock:
                ready = [w for w in self.workers if w.name not in self._restarting]
            while not ready:
                time.sleep(0.1)
                with self._lock:
                    ready = [w for w in self.workers if w.name not in self._restarting]
            victim = rng.choice(ready)
            with self._lock:
                self._restarting.add(victim.name)
            # Jobs being run fleet-wide at the hit, and claims dead workers left.
            claims = [
                str(key).removeprefix("halo:claim:")
                for key in redis_client.scan_iter("halo:claim:*")
            ]
            self.claimed_at_hit.append((time.time(), claims))
            thread = threading.Thread(target=self._hit_and_restart, args=(victim,))
            self._threads.append(thread)
            thread.start()
        for thread in self._threads:
            thread.join(120)

    def _hit_and_restart(self, victim: WorkerProcess) -> None:
        started = time.monotonic()
        self.hit(victim)
        victim.restart(timeout_s=60)
        with self._lock:
            self.back_in_s.append(time.monotonic() - started)
            self._restarting.discard(victim.name)

    def figures(self, records: dict[str, Record]) -> dict[str, object]:
        """How long a hit worker took to be back, and how long until every job claimed at a
        hit had its record (the recovery time of that hit)."""
        recovery = []
        for at, claims in self.claimed_at_hit:
            done = [finished_s(records[j]) - at for j in claims if j in records]
            if done:
                recovery.append(max(done))
        return {
            "hit_back_in_s_median": round(statistics.median(self.back_in_s), 2),
            "hit_back_in_s_max": round(max(self.back_in_s), 2),
            "jobs_claimed_at_hit_median": statistics.median(len(c) for _, c in self.claimed_at_hit),
            "recovery_s_median": round(statistics.median(recovery), 1) if recovery else None,
            "recovery_s_max": round(max(recovery), 1) if recovery else None,
        }


def finished_s(record: Record) -> float:
    """When a record was written, as a Unix time."""
    return datetime.fromisoformat(str(record["finished_at"])).timestamp()


def report(title: str, figures: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[{title}] {json.dumps(figures)}")


def republished(fleet: Fleet) -> int:
    """Jobs the workers' safety net published again (`worker.deferrals.redeliver_lost`)."""
    return sum(text.count("published again") for text in fleet.logs().values())


def explain(found: Audit) -> str:
    """What went wrong, for an assertion message."""
    worst = {
        "lost": found.lost[:5],
        "feed_not_once": found.feed_wrong[:5],
        "never_written": found.never_written[:5],
        "double_written": [j for j, w in found.writes.items() if w.effective > 1][:5],
        "values_not_kept": [j for j, kept in found.values_kept.items() if not kept][:5],
        "stuck": found.stuck,
    }
    return json.dumps(worst)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkilled_workers_lose_no_job_and_write_no_ticket_twice(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = fleet.jobs("kill", SCALE.kill_jobs)
    workers = [fleet.worker(f"kill{n}") for n in range(WORKERS)]
    fleet.fake.configure(latency_s=HALO_LATENCY_S)
    agent = AgentEdits(fleet)
    agent.start()
    started = time.monotonic()
    job_ids = [fleet.producer.submit(job) for job in jobs]

    chaos = Chaos(workers, lambda w: w.kill())
    chaos.run(SCALE.kills, fleet.redis)
    # A job a dead worker held comes back once its message is restored (visibility timeout,
    # then the next 5 s scan) and its claim has lapsed (the lease).
    drain_s = wait_for_records(fleet, job_ids, timeout_s=fleet.lease_s + 120)
    found = audit(fleet, job_ids, agent, settle_s=fleet.visibility_timeout_s + 20)

    figures = {
        **found.summary(),
        "workers": WORKERS,
        "kills": SCALE.kills,
        **chaos.figures(found.records),
        "republished_as_lost": republished(fleet),
        "records_after_last_kill_s": round(drain_s, 1),
        "run_s": round(time.monotonic() - started, 1),
    }
    report("SIGKILL chaos", figures, capsys)
    assert found.lost == [], explain(found)
    assert found.feed_wrong == [], explain(found)
    assert found.double_writes == 0, explain(found)
    assert found.never_written == [], explain(found)
    assert all(found.values_kept.values()), explain(found)
    assert found.created_tickets == 0
    assert {r["outcome"] for r in found.records.values()} == {"succeeded"}
    assert all(r["changed_fields"] == ["summary"] for r in found.records.values())
    assert not any(found.stuck.values()), explain(found)
    # The kills did land mid-job: otherwise this run proved nothing.
    assert len(found.rerun) >= SCALE.kills, figures


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigtermed_workers_finish_what_they_hold_and_rerun_nothing(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = fleet.jobs("term", SCALE.term_jobs)
    workers = [fleet.worker(f"term{n}") for n in range(WORKERS)]
    fleet.fake.configure(latency_s=HALO_LATENCY_S)
    agent = AgentEdits(fleet)
    agent.start()
    started = time.monotonic()
    job_ids = [fleet.producer.submit(job) for job in jobs]

    chaos = Chaos(workers, lambda w: w.stop(timeout_s=30))
    chaos.run(SCALE.stops, fleet.redis)
    drain_s = wait_for_records(fleet, job_ids, timeout_s=120)
    found = audit(fleet, job_ids, agent, settle_s=fleet.visibility_timeout_s + 20)

    figures = {
        **found.summary(),
        "workers": WORKERS,
        "sigterms": SCALE.stops,
        **chaos.figures(found.records),
        "republished_as_lost": republished(fleet),
        "records_after_last_stop_s": round(drain_s, 1),
        "run_s": round(time.monotonic() - started, 1),
    }
    report("SIGTERM chaos", figures, capsys)
    warm = sum(text.count("Warm shutdown") for text in fleet.logs().values())
    assert warm >= SCALE.stops, f"only {warm} of {SCALE.stops} stops were warm shutdowns"
    assert found.lost == [], explain(found)
    assert found.feed_wrong == [], explain(found)
    assert found.rerun == [], "a graceful stop made jobs run again"
    assert found.duplicate_posts == 0, explain(found)
    assert found.double_writes == 0, explain(found)
    assert found.never_written == [], explain(found)
    assert all(found.values_kept.values()), explain(found)
    assert {r["outcome"] for r in found.records.values()} == {"succeeded"}
    assert not any(found.stuck.values()), explain(found)
