"""Scale-out on one machine: 1, 2 and 4 worker processes draining the same queue (figure 9).

Each step fills the queue of the same Redis with the same jobs, starts its worker processes
together, and times them draining it (from the moment all are ready), with the CPU of every
party over the same span: the workers, Redis (its own `INFO cpu`) and the fake Halo, and the
whole machine's (a shared machine's other load shows there). What bounds the step is named from
those: Redis when its one main thread is nearly always busy, the machine's cores when they
are nearly all busy, each worker's GIL when every process uses about one core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from bench.measure import cpu_s, wait_until
from bench.redis_meter import RedisMeter
from bench.rig import UNLIMITED, ConnectionSpec, Rig, job, sized

TICKETS = 500
STEPS = (1, 2, 4)
JOBS = sized(2000, 300)
CONCURRENCY = 16
# A party using this share of what it can use is what bounds the step.
BUSY = 0.85


def scaleout(root: Path, run: str) -> dict[str, Any]:
    """Figure 9: throughput with 1, 2 and 4 worker processes against one Redis."""
    steps: dict[str, Any] = {}
    with Rig(root, "scaleout") as rig:
        fake = rig.fake()
        tickets = fake.add_tickets(TICKETS)
        conn = ConnectionSpec("bench", fake, UNLIMITED)
        meter = RedisMeter(rig.redis)
        assert fake.process.proc is not None
        fake_process = psutil.Process(fake.process.proc.pid)
        # Warm the fleet's caches (token, lookups) once, as a running fleet has them.
        rig.start_workers(1, [conn])
        rig.one_at_a_time([job("bench", tickets[-1], f"{run}-scale-warm")])
        for count in STEPS:
            rig.stop_workers()
            for i in range(JOBS):
                rig.producer.submit(job("bench", tickets[i % TICKETS], f"{run}-{count}-{i}"))
            base = rig.recorded()

            def done(base: int = base) -> int:
                meter.own_call("xlen")
                return rig.recorded() - base

            workers = rig.start_workers(count, [conn], worker_concurrency=str(CONCURRENCY))
            first, at_first = done(), time.perf_counter()
            cpu_first, fake_first = cpu_s(workers), _cpu(fake_process)
            machine_first = _machine_busy_s()
            redis_first = meter.sample()
            finished = wait_until(done, JOBS, timeout_s=300, poll_s=0.01)
            seconds = finished - at_first
            timed = JOBS - first
            redis_used = meter.since(redis_first, timed)
            workers_busy = (cpu_s(workers) - cpu_first) / seconds
            fake_busy = (_cpu(fake_process) - fake_first) / seconds
            # Everything on the machine, the other load of a shared machine included.
            machine_busy = (_machine_busy_s() - machine_first) / seconds
            steps[str(count)] = {
                "worker_processes": count,
                "timed_jobs": timed,
                "jobs_per_s": round(timed / seconds, 1),
                "worker_cores_busy": round(workers_busy, 2),
                "worker_cpu_ms_per_job": round(workers_busy * seconds / timed * 1000, 3),
                "redis_cores_busy": redis_used["redis_cores_busy"],
                "redis_cpu_ms_per_job": redis_used["redis_cpu_ms_per_job"],
                "fake_halo_cores_busy": round(fake_busy, 2),
                "machine_cores_busy": round(machine_busy, 2),
                "bound_by": _bound(
                    count, workers_busy, redis_used["redis_cores_busy"], fake_busy, machine_busy
                ),
            }
    one = steps["1"]["jobs_per_s"]
    return {
        "scaleout": {
            "jobs": JOBS,
            "concurrency": CONCURRENCY,
            "halo_latency_ms": 0,
            "cpus": os.cpu_count(),
            "steps": steps,
            # Throughput of n processes over n times one process's: 1.0 is linear.
            "efficiency": {n: round(steps[n]["jobs_per_s"] / (one * int(n)), 2) for n in steps},
            "speedup_4": round(steps["4"]["jobs_per_s"] / one, 2),
        }
    }


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _bound(processes: int, workers: float, redis: float, fake: float, machine: float) -> str:
    """What limits a step, from the cores each party used (see the module's docstring)."""
    cores = os.cpu_count() or 1
    if redis >= BUSY:
        return "Redis (its main thread is busy)"
    if machine >= BUSY * cores:
        others = max(0.0, machine - workers - redis - fake)
        return (
            f"the machine's {cores} cores (workers {workers:.2f}, Redis {redis:.2f}, "
            f"fake {fake:.2f}, everything else {others:.2f})"
        )
    if workers >= BUSY * processes:
        return "each worker's one core (the GIL)"
    if fake >= BUSY:
        return "the fake Halo (one Python process)"
    return "none saturated: waits (Redis or Halo round trips) between the parties"
