"""What one worker process costs: figures 1, 2 (cold, warm, unchanged), 5 and 6.

costs     Halo requests per job cold, warm and with nothing to change; overhead latency
          of single jobs; throughput and CPU per job against a bare Celery no-op task
          served with the same broker settings, concurrency and submission
inflight  requests in flight and peak RSS at 300 ms Halo latency
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.callsites import by_site, read
from bench.measure import (
    RssSampler,
    cpu_s,
    peak_overlap,
    percentile,
    requests_per_job,
    wait_until,
)
from bench.profile import write_profile
from bench.redis_meter import RedisMeter
from bench.report import REPORT_PATH
from bench.rig import UNLIMITED, ConnectionSpec, Rig, job, sized

# Enough tickets that concurrent jobs rarely share one.
TICKETS = 500
# Both apps drain the same number of the same jobs at the same concurrency. 16 threads: more
# gain nothing on two cores (the process is bound by the GIL), and the no-op task loses
# throughput at 256.
THROUGHPUT_JOBS = sized(1000, 200)
THROUGHPUT_CONCURRENCY = 16
# Every job on the single-job path: a queue of a thousand jobs of one connection is a burst to
# the worker (`worker.burst`), which would park them and send them in batches (a tenth of a
# Halo request per job). Figures 1, 5 and 7 are about the single job.
NO_BURSTS = "0"
# The profiled drain is a run of its own, after the measured ones: the profiler's own CPU
# must not be in the throughput figures.
PROFILE_JOBS = sized(1000, 200)
# Another drain of its own counts the round trips by call site: counting costs CPU too.
SITES_JOBS = sized(1000, 200)
PROFILE_TABLE = REPORT_PATH.with_name("bench-profile.txt")
PROFILE_STACKS = REPORT_PATH.with_name("bench-profile.collapsed")
# Sequential single jobs for requests per job, and for overhead latency.
SEQUENTIAL_JOBS = sized(20, 5)
LATENCY_JOBS = sized(300, 30)
INFLIGHT_LATENCY_MS = 300
INFLIGHT_JOBS = sized(1000, 200)
INFLIGHT_CONCURRENCY = 256


def costs(root: Path, run: str) -> dict[str, Any]:
    """Figures 1, 2 (cold, warm, unchanged) and 5, with one worker and a fake without limits."""
    with Rig(root, "costs") as rig:
        fake = rig.fake()
        tickets = fake.add_tickets(TICKETS)
        conn = ConnectionSpec("bench", fake, UNLIMITED)
        rig.start_workers(
            1, [conn], worker_concurrency=str(THROUGHPUT_CONCURRENCY), burst_threshold=NO_BURSTS
        )

        def sequential(tag: str, count: int, *, change: bool = True) -> dict[str, Any]:
            seq = fake.last_seq()
            jobs = [
                job("bench", tickets[i], f"{run}-{tag}-{i}", change=change) for i in range(count)
            ]
            records, _ = rig.one_at_a_time(jobs)
            return requests_per_job(records, len(fake.requests(seq)))

        # The first job after a fresh Redis finds no token and no lookup lists.
        requests = {
            "cold": sequential("cold", 1),
            "warm": sequential("warm", SEQUENTIAL_JOBS),
            "unchanged": sequential("unchanged", SEQUENTIAL_JOBS, change=False),
        }
        jobs = [job("bench", tickets[i % TICKETS], f"{run}-lat-{i}") for i in range(LATENCY_JOBS)]
        _, timings = rig.one_at_a_time(jobs, halo=fake)

        def throughput(app: str, count: Callable[[], int], poll: str) -> dict[str, Any]:
            rig.stop_workers()
            jobs = [
                job("bench", tickets[i % TICKETS], f"{run}-{app}-{i}")
                for i in range(THROUGHPUT_JOBS)
            ]
            seq = fake.last_seq()
            drained = _drain(
                rig,
                jobs,
                Polled(count, meter, poll),
                lambda: rig.start_workers(
                    1,
                    [conn],
                    noop=app == "noop",
                    worker_concurrency=str(THROUGHPUT_CONCURRENCY),
                    burst_threshold=NO_BURSTS,
                ),
            )
            drained["halo_requests_per_job"] = round(len(fake.requests(seq)) / THROUGHPUT_JOBS, 3)
            return drained

        meter = RedisMeter(rig.redis)
        halo = throughput("halo", rig.recorded, "xlen")
        noop = throughput("noop", rig.noop_done, "get")
        sites = _sites(rig, conn, [tickets[i % TICKETS] for i in range(SITES_JOBS)], run)
        profile = _profile(rig, conn, [tickets[i % TICKETS] for i in range(PROFILE_JOBS)], run)
    halo_redis, noop_redis = halo["redis"], noop["redis"]
    return {
        "throughput": {
            "jobs": THROUGHPUT_JOBS,
            "worker_processes": 1,
            "concurrency": THROUGHPUT_CONCURRENCY,
            "halo_latency_ms": 0,
            "halo": halo,
            "noop": noop,
            "ratio": round(halo["jobs_per_s"] / noop["jobs_per_s"], 3),
            "cpu_ratio": round(noop["cpu_ms_per_job"] / halo["cpu_ms_per_job"], 3),
        },
        # A happy-path job (warm, one read and one POST, no budget wait) as the throughput
        # run saw it; "own" is what the job costs beyond Celery's delivery of a message (the
        # no-op task's figures, its one INCR taken out).
        "per_job": {
            "round_trips": halo_redis["round_trips_per_job"],
            "round_trips_noop": noop_redis["round_trips_per_job"],
            "round_trips_own": round(
                halo_redis["round_trips_per_job"] - noop_redis["round_trips_per_job"] + 1, 2
            ),
            "redis_commands": halo_redis["commands_per_job"],
            "redis_commands_noop": noop_redis["commands_per_job"],
            "redis_commands_by_name": halo_redis["commands_per_job_by_name"],
            # From a drain of its own, Celery's delivery included (`bench.callsites`).
            "round_trips_by_site": sites,
            "cpu_ms": halo["cpu_ms_per_job"],
            "cpu_ms_noop": noop["cpu_ms_per_job"],
            "halo_requests": halo["halo_requests_per_job"],
            "redis_cpu_ms": halo_redis["redis_cpu_ms_per_job"],
        },
        "profile": profile,
        "halo_requests_per_job": requests,
        "overhead_latency": _overhead(timings),
    }


def _overhead(timings: list[tuple[float, float]]) -> dict[str, Any]:
    """Submit-to-record latency minus the fake's own time for the same two requests (its
    median, timed by a reference client right after each job)."""
    raw_ms = [t * 1000 for t, _ in timings]
    halo_ms = [h * 1000 for _, h in timings]
    halo_p50 = percentile(halo_ms, 50)
    return {
        "jobs": len(timings),
        "halo_latency_ms": 0,
        "raw_p50_ms": round(percentile(raw_ms, 50), 2),
        "raw_p99_ms": round(percentile(raw_ms, 99), 2),
        "halo_p50_ms": round(halo_p50, 2),
        "halo_p99_ms": round(percentile(halo_ms, 99), 2),
        "p50_ms": round(percentile(raw_ms, 50) - halo_p50, 2),
        "p99_ms": round(percentile(raw_ms, 99) - halo_p50, 2),
    }


class Polled:
    """A count the benchmark polls, each poll counted as its own Redis call (`RedisMeter`)."""

    def __init__(self, count: Callable[[], int], meter: RedisMeter, command: str) -> None:
        self._count, self.meter, self._command = count, meter, command

    def __call__(self) -> int:
        self.meter.own_call(self._command)
        return self._count()


def _drain(
    rig: Rig,
    jobs: list[dict[str, Any]],
    count: Polled,
    start_worker: Callable[[], object],
) -> dict[str, Any]:
    """Fill the queue with `jobs`, start a worker, and time it draining them: from its first
    poll after the worker is ready to the last completion, so that neither the producer's
    speed nor the worker's start-up is in the figure. Redis's counters over the same span
    (`RedisMeter`) give its round trips, commands and CPU per job."""
    started = time.perf_counter()
    for body in jobs:
        rig.producer.submit(body)
    submit_s = time.perf_counter() - started
    base = count()
    start_worker()
    first, cpu_first, at_first = count() - base, cpu_s(rig.workers), time.perf_counter()
    redis_first = count.meter.sample()
    done = wait_until(lambda: count() - base, len(jobs), timeout_s=300)
    timed = len(jobs) - first
    cpu_used = cpu_s(rig.workers) - cpu_first
    return {
        "timed_jobs": timed,
        "seconds": round(done - at_first, 3),
        "jobs_per_s": round(timed / (done - at_first), 1),
        "cpu_ms_per_job": round(cpu_used / timed * 1000, 3),
        # 1.0: the process used one core all along (a Python process's ceiling, the GIL).
        "worker_cores_busy": round(cpu_used / (done - at_first), 2),
        "producer_submits_per_s": round(len(jobs) / submit_s, 1),
        "redis": count.meter.since(redis_first, timed),
    }


def _sites(rig: Rig, conn: ConnectionSpec, tickets: list[int], run: str) -> dict[str, float]:
    """Drain `tickets` jobs with one worker that counts its Redis round trips by call site
    (`bench.callsites`); returns them per job, most first."""
    rig.stop_workers()
    for i, ticket in enumerate(tickets):
        rig.producer.submit(job("bench", ticket, f"{run}-sites-{i}"))
    base = rig.recorded()
    output = rig.dir / "callsites.json"
    rig.start_traced_worker(
        [conn], output, worker_concurrency=str(THROUGHPUT_CONCURRENCY), burst_threshold=NO_BURSTS
    )
    first, before = rig.recorded() - base, read(output)
    wait_until(lambda: rig.recorded() - base, len(tickets), timeout_s=300, poll_s=0.05)
    time.sleep(0.05)  # a reading written after the last record
    return by_site(before, read(output), len(tickets) - first)


def _profile(rig: Rig, conn: ConnectionSpec, tickets: list[int], run: str) -> dict[str, Any]:
    """Drain `tickets` jobs with one worker under py-spy; writes the sorted table and the
    collapsed stacks beside the report (`bench.profile`)."""
    rig.stop_workers()
    for i, ticket in enumerate(tickets):
        rig.producer.submit(job("bench", ticket, f"{run}-profile-{i}"))
    base = rig.recorded()
    PROFILE_STACKS.unlink(missing_ok=True)
    worker = rig.start_profiled_worker(
        [conn],
        PROFILE_STACKS.resolve(),
        worker_concurrency=str(THROUGHPUT_CONCURRENCY),
        burst_threshold=NO_BURSTS,
    )
    wait_until(lambda: rig.recorded() - base, len(tickets), timeout_s=300, poll_s=0.05)
    worker.stop()
    title = (
        f"Worker profile: one process draining {len(tickets)} queued Halo jobs (concurrency "
        f"{THROUGHPUT_CONCURRENCY}, fake Halo without latency), run {run}"
    )
    summary = write_profile(PROFILE_STACKS, PROFILE_TABLE, title)
    return {"jobs": len(tickets), "table": str(PROFILE_TABLE), **summary}


def inflight(root: Path, run: str) -> dict[str, Any]:
    """Figure 6: one worker process at 300 ms Halo latency, with a full queue."""
    with Rig(root, "inflight") as rig:
        fake = rig.fake("--latency-ms", str(INFLIGHT_LATENCY_MS))
        tickets = fake.add_tickets(TICKETS)
        conn = ConnectionSpec("bench", fake, UNLIMITED)
        # A first worker warms the fleet's caches (token, lookups) in Redis, then the queue is
        # filled before the measured worker starts, so the producer's pace is not measured.
        rig.start_workers(1, [conn])
        rig.one_at_a_time([job("bench", tickets[-1], f"{run}-inflight-warm")])
        rig.stop_workers()
        seq = fake.last_seq()
        for i in range(INFLIGHT_JOBS):
            rig.producer.submit(job("bench", tickets[i % TICKETS], f"{run}-inflight-{i}"))
        base = rig.recorded()
        # Every job on the single-job path (its own read and POST): a queue this deep would
        # otherwise be read and written in batches, and few requests would be in flight.
        [worker] = rig.start_workers(
            1, [conn], worker_concurrency=str(INFLIGHT_CONCURRENCY), burst_threshold=NO_BURSTS
        )
        assert worker.proc is not None
        sampler = RssSampler(worker.proc.pid)
        sampler.start()
        try:
            started, cpu_before = time.perf_counter(), cpu_s([worker])
            done = wait_until(lambda: rig.recorded() - base, INFLIGHT_JOBS, 180, poll_s=0.01)
            cpu_used = cpu_s([worker]) - cpu_before
        finally:
            peak = sampler.stop()
        log = fake.requests(seq)
    latency_s = INFLIGHT_LATENCY_MS / 1000
    # The fake logs a request when it answers, after sleeping its latency: it was in flight
    # over [time_s - latency, time_s].
    in_flight = peak_overlap([(r["time_s"] - latency_s, r["time_s"]) for r in log])
    return {
        "inflight": {
            "worker_processes": 1,
            "concurrency": INFLIGHT_CONCURRENCY,
            "halo_latency_ms": INFLIGHT_LATENCY_MS,
            "jobs": INFLIGHT_JOBS,
            "halo_requests": len(log),
            "jobs_per_s": round(INFLIGHT_JOBS / (done - started), 1),
            "worker_cores_busy": round(cpu_used / (done - started), 2),
            "peak_in_flight": in_flight,
            "peak_rss_mb": round(peak / 2**20, 1),
        }
    }
