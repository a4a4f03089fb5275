"""`python -m bench.soak_memory`: where a worker's memory grows over many jobs, by tracemalloc.

The soak (`bench.soak`) shows whether RSS grows; this shows where. A private Redis, the fake
Halo and one worker process whose Celery worker runs in-process under tracemalloc (this
module's ``worker`` mode: a thread takes a snapshot when asked through a file). The driver
submits `--warmup` jobs and waits for their records, takes a snapshot, submits `--jobs` more
(each on a ticket of its own, as the soak's), takes another, and prints the allocation sites
that grew between the two, by traceback, with the worker's RSS and traced memory at both points
and the traced peak in between. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Self

import httpx
import psutil
import redis

from producers.jobs import Producer
from tests.harness.processes import FakeHaloProcess, RedisServer, WorkerProcess, service_env
from worker.keys import RESULTS_STREAM

SECRET_ENV = "HALO_SOAK_SECRET"  # noqa: S105 - the name of a variable, not a secret.
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"  # the fake's demo pair
FIRST_TICKET = 800_000
# Frames kept per allocation: enough to see the caller in the project behind a library's;
# each frame more slows the traced worker further (it runs a few jobs a second).
FRAMES = 10
TOP = 15


class TracedWorker(WorkerProcess):
    """`python -m bench.soak_memory worker DIR`: the worker, traced, snapshots on request."""

    def __init__(self, env: dict[str, str], log_path: Path, snapshots: Path) -> None:
        super().__init__(env, log_path, name="traced")
        self.snapshots = snapshots

    def start(self, timeout_s: float = 180.0) -> Self:
        self._spawn(
            [sys.executable, "-m", "bench.soak_memory", "worker", str(self.snapshots)],
            self.env,
        )
        self._wait_for(" ready.", timeout_s)
        return self

    def snapshot(
        self, name: str, timeout_s: float = 120.0
    ) -> tuple[tracemalloc.Snapshot, dict[str, float]]:
        """Ask the worker for a snapshot (after a collection); load it, with the worker's
        traced memory, its peak since the last snapshot and the collector's counts."""
        (self.snapshots / f"{name}.request").touch()
        done = self.snapshots / f"{name}.snap"
        deadline = time.monotonic() + timeout_s
        while not (self.snapshots / f"{name}.done").exists():
            if time.monotonic() > deadline or not self.running:
                raise TimeoutError(f"the worker took no snapshot {name!r}")
            time.sleep(0.2)
        state: dict[str, float] = json.loads((self.snapshots / f"{name}.json").read_text())
        return tracemalloc.Snapshot.load(str(done)), state


def _serve_snapshots(directory: Path) -> None:
    """In the worker: take a snapshot for each ``<name>.request`` file that appears, with the
    traced memory's peak since the last one (before the collection that precedes each
    snapshot: what the garbage between two full collections cost) and the collector's counts."""
    import gc  # noqa: PLC0415 - only the traced worker needs it

    while True:
        for request in directory.glob("*.request"):
            name = request.stem
            request.unlink()
            _, peak = tracemalloc.get_traced_memory()
            gc.collect()
            tracemalloc.take_snapshot().dump(str(directory / f"{name}.snap"))
            current, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            state = {
                "traced_mib": round(current / 2**20, 2),
                "traced_peak_since_last_mib": round(peak / 2**20, 2),
                "full_collections": gc.get_stats()[2]["collections"],
                "frozen_objects": gc.get_freeze_count(),
                "threads": threading.active_count(),
            }
            (directory / f"{name}.json").write_text(json.dumps(state))
            (directory / f"{name}.done").touch()
        time.sleep(0.2)


def _run_worker(directory: Path) -> None:
    from worker.app import app  # noqa: PLC0415 - only the traced worker imports the app

    # Tracing starts after the imports (traced, they take minutes); the snapshots compare two
    # moments long after both anyway.
    tracemalloc.start(FRAMES)
    threading.Thread(target=_serve_snapshots, args=(directory,), daemon=True).start()
    app.worker_main(["worker", "-n", "traced@%h", "--loglevel", "INFO"])


def probe(root: Path, *, warmup: int, jobs: int) -> dict[str, object]:
    """Run the probe in `root`; returns the RSS figures and the top growth by traceback."""
    server = RedisServer(root / "redis").start()
    fake = FakeHaloProcess(root / "fake.log", args=["--seed", "empty"]).start()
    snapshots = root / "snapshots"
    snapshots.mkdir()
    worker: TracedWorker | None = None
    try:
        with httpx.Client(base_url=fake.url, timeout=60.0) as control:
            for index in range(warmup + jobs):
                ticket = {"id": FIRST_TICKET + index, "summary": "probe", "status_id": 2}
                control.post("/_fake/tickets", json=ticket).raise_for_status()
        connections = root / "connections.toml"
        connections.write_text(
            f'[connections.acme]\nurl = "{fake.url}"\nallow_insecure_http = true\n'
            f'client_id = "{CLIENT_ID}"\nclient_secret_env = "{SECRET_ENV}"\n'
            'rate_limit = "100000/1s"\n'
        )
        env = service_env(
            broker_url=server.url,
            connections_file=connections,
            secrets={SECRET_ENV: CLIENT_SECRET},
            worker_concurrency="16",
        )
        # Assigned before it starts, so that a start that times out is stopped too.
        worker = TracedWorker(env, root / "worker.log", snapshots)
        worker.start()
        assert worker.proc is not None
        process = psutil.Process(worker.proc.pid)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        with Producer(broker_url=server.url) as producer:

            def run(first: int, count: int) -> None:
                for index in range(first, first + count):
                    producer.submit(
                        {"job_id": f"probe-{index:06d}", "connection": "acme",
                         "ticket_id": str(FIRST_TICKET + index), "summary": f"probe {index}"}
                    )  # fmt: skip
                while int(client.xlen(RESULTS_STREAM)) < first + count:
                    time.sleep(0.2)

            run(0, warmup)
            warm, warm_state = worker.snapshot("warm")
            rss_warm = process.memory_info().rss
            run(warmup, jobs)
            end, end_state = worker.snapshot("end")
            rss_end = process.memory_info().rss
        client.close()
    finally:
        if worker is not None:
            worker.stop()
        fake.stop()
        server.stop()
    ignore = [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    diffs = end.filter_traces(ignore).compare_to(warm.filter_traces(ignore), "traceback")
    # The sites that grew, largest first (compare_to orders by the size of the change, and
    # what shrank, messages in flight at the first snapshot, hides what grew).
    growth = sorted((d for d in diffs if d.size_diff > 0), key=lambda d: -d.size_diff)
    return {
        "warmup_jobs": warmup,
        "jobs": jobs,
        # Under tracing, RSS also holds tracemalloc's own tables, which grow with every new
        # traceback seen: read the traced figures, not these, for the worker's growth.
        "rss_after_warmup_mib": round(rss_warm / 2**20, 2),
        "rss_end_mib": round(rss_end / 2**20, 2),
        "rss_growth_mib": round((rss_end - rss_warm) / 2**20, 2),
        "after_warmup": warm_state,
        "at_end": end_state,
        "traced_growth_mib": round(sum(d.size_diff for d in diffs) / 2**20, 3),
        "traced_grown_sites_mib": round(sum(d.size_diff for d in growth) / 2**20, 3),
        "top_growth": [
            {
                "kib": round(diff.size_diff / 1024, 1),
                "blocks": diff.count_diff,
                "traceback": [f"{f.filename}:{f.lineno}" for f in diff.traceback][-8:],
            }
            for diff in growth[:TOP]
        ],
        "logs": str(root),
    }


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["worker"]:
        _run_worker(Path(args_in[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.soak_memory", description=__doc__)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args(args_in)
    root = Path(tempfile.mkdtemp(prefix="halo-memory-"))
    print(f"memory probe: {args.warmup} + {args.jobs} jobs; logs in {root}", flush=True)
    print(json.dumps(probe(root, warmup=args.warmup, jobs=args.jobs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
