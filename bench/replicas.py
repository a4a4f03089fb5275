"""Benchmark figure 7: what waiting for a replica (``HALO_REDIS_MIN_REPLICAS_ACKED``) costs.

A primary and its replica on loopback. For each job, the three writes that must survive a
failover, as a worker makes them: take the claim, note the write journal, write the record
(with its feed entry). Timed per job with no replica waited for (the default) and with one;
the difference is what the guarantee adds to every job. Halo's own latency dwarfs it, but a
replica on another host adds its network round trip to each of the three.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import redis

from tests.harness.processes import RedisServer
from worker.models import Outcome, ResultRecord, utc_now_iso
from worker.replication import ReplicaAcks
from worker.results import ResultStore

# Enough jobs for a stable median on a busy 2-core machine, few enough for a few seconds.
JOBS = 1000
# Script loading and first connections, left out of the figures.
WARM_UP_JOBS = 50
# How long the replica may take to finish its first sync.
SYNC_TIMEOUT_S = 30.0


def replicas(root: Path, run: str) -> dict[str, Any]:
    """Figure 7: per-job time of the durable writes, without and with a replica's ack."""
    primary = RedisServer(root / "replicas-primary").start()
    replica = RedisServer(
        root / "replicas-replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    try:
        replica.start()
        _wait_for_sync(replica.url)
        client = redis.Redis.from_url(primary.url, decode_responses=True, socket_timeout=10)
        with client:
            stores = {
                "none": ResultStore(client, ttl_s=600),
                "one": ResultStore(client, ttl_s=600, acks=ReplicaAcks(1, timeout_s=2.0)),
            }
            none, one = _time_jobs(stores, run)
    finally:
        replica.stop()
        primary.stop()
    return {
        "replica_acks": {
            "jobs": JOBS,
            "none": none,
            "one": one,
            "added_ms_p50": round(one["per_job_ms_p50"] - none["per_job_ms_p50"], 3),
            "added_ms_p99": round(one["per_job_ms_p99"] - none["per_job_ms_p99"], 3),
        }
    }


def _time_jobs(stores: dict[str, ResultStore], run: str) -> list[dict[str, float]]:
    """Alternate the stores job by job (after a warm-up), so load from the rest of the machine
    falls on both alike."""
    durations_ms: dict[str, list[float]] = {name: [] for name in stores}
    for index in range(WARM_UP_JOBS + JOBS):
        for name, store in stores.items():
            taken_ms = _one_job(store, f"bench-{run}-{name}-{index}")
            if index >= WARM_UP_JOBS:
                durations_ms[name].append(taken_ms)
    return [_figures(durations_ms[name]) for name in stores]


def _one_job(store: ResultStore, job_id: str) -> float:
    started = time.perf_counter()
    with store.claims.claim(job_id, lease_s=60) as taken:
        assert taken
        store.claims.journal(job_id).note(["summary"])
        store.records.write(_record(job_id))
    return (time.perf_counter() - started) * 1000


def _figures(durations_ms: list[float]) -> dict[str, float]:
    ordered = sorted(durations_ms)
    return {
        "per_job_ms_p50": round(statistics.median(ordered), 3),
        "per_job_ms_p99": round(ordered[int(len(ordered) * 0.99) - 1], 3),
        "jobs_per_s_one_thread": round(JOBS / (sum(durations_ms) / 1000), 1),
    }


def _record(job_id: str) -> ResultRecord:
    now = utc_now_iso()
    return ResultRecord(
        job_id=job_id,
        outcome=Outcome.SUCCEEDED,
        disposition=None,
        result=[],
        variables={},
        changed_fields=["summary"],
        warnings=[],
        error=None,
        attempts=1,
        halo_requests=2,
        submitted_at=now,
        finished_at=now,
        meta={},
    )


def _wait_for_sync(url: str) -> None:
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    with redis.Redis.from_url(url, decode_responses=True) as client:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise TimeoutError("the replica never finished its first sync")
            time.sleep(0.05)
