"""`make soak`: 10,000 jobs through 4 workers while the fake Halo misbehaves at random.

A private Redis (append-only), a fake Halo process and four worker processes, all on
loopback. A producer submits the jobs at a steady rate (15 a second: about 11 minutes), each
writing a summary of its own to a ticket of its own; meanwhile a fault thread keeps injecting
Halo faults through the fake's `/_fake/faults` endpoint: bursts of 500/502/503/504, 429s with
and without `Retry-After`, answers slower than usual, answers slower than the read timeout
(some after saving the update), and dropped connections. At the end:

- every job has a record: counted by outcome and error code (a job whose faults outlast its
  retry budget fails with a clear code; it is not lost);
- POSTs that saved a job's values again (duplicates: harmless for an update, but counted);
- each worker's peak RSS over the first and the last minute of the run, and its growth from
  the minute after warm-up to the last minute (target: at most 1 MiB over 10,000 jobs);
- what is left waiting in Redis.

Prints progress every 10 s and a JSON summary; exits 0 when every job has a record and one
feed entry, 1 otherwise. Not run in CI. Options: ``python -m bench.soak --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httpx
import psutil
import redis

from producers.jobs import Producer
from tests.harness.processes import FakeHaloProcess, RedisServer, WorkerProcess, service_env
from worker.keys import CLAIM_PREFIX, DEFERRED, RESULTS_STREAM, UNFINISHED, result_key

SECRET_ENV = "HALO_SOAK_SECRET"  # noqa: S105 - the name of a variable, not a secret.
# The fake's built-in demo credentials: not a secret of any real Halo.
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
FIRST_TICKET = 700_000
# A budget the governor never reaches on its own, over a short window: a 429 without
# Retry-After pauses the fleet until the oldest request leaves the window (at most ~5 s).
RATE_LIMIT = "5000/5s"
# Halo's own words for that limit, so a 429 teaches the governor nothing lower.
RATE_LIMIT_TEXT = "Rate Limit Reached - 5000 Requests per rolling 5 second window"
READ_TIMEOUT_S = 5.0
SETTINGS = {
    "visibility_timeout_s": "60",
    "job_deadline_s": "20",
    "http_read_timeout_s": str(READ_TIMEOUT_S),
    "http_connect_timeout_s": "2",
    "retry_base_s": "0.5",
    "retry_cap_s": "5",
    "retry_max_attempts": "10",
    "retry_max_total_s": "300",
    "worker_concurrency": "64",
}
# A new fault (a burst of 1-10 requests) this often.
FAULT_EVERY_S = 2.0
# RSS windows: the peak over the first and over the last this many seconds of the run.
RSS_WINDOW_S = 60.0
# Warm-up: imports, pools, caches and the first lookups fill a worker's memory in its first
# minute; Celery's set of recent successful task ids (1,000 per worker, its
# CELERY_WORKER_SUCCESSFUL_MAX) fills over each worker's first 1,000 jobs, then stays at that
# size (`python -m bench.soak_memory` shows it as the largest growth before that). Warm-up ends
# when both are done. Growth is counted from the median RSS of the minute after it to the
# median of the run's last minute: medians, so that a moment of many answers in flight is not
# taken for growth. Target (issue 14): at most 1 MiB over 10,000 jobs.
WARMUP_S = 60.0
WARMUP_JOBS_PER_WORKER = 1000
GROWTH_TARGET_MIB_PER_10K = 1.0


# Each kind of fault, with its weight in the mix and how to build its `/_fake/faults` body
# from a random source and a count.
_FAULTS: dict[str, tuple[int, Callable[[random.Random, int], dict[str, Any]]]] = {
    "5xx": (30, lambda r, n: {"fail_next": {"n": n, "status": r.choice([500, 502, 503, 504])}}),
    "429": (
        12,
        lambda r, n: {
            "fail_next": {
                "n": n, "status": 429, "body": RATE_LIMIT_TEXT, "retry_after": r.choice([1, 2])
            }
        },
    ),
    # Rare and short: each of these 429s doubles the fleet's pause on the connection (2 s
    # up to 60 s, `worker.governor`), as Halo's guidance asks.
    "429 without Retry-After": (
        3, lambda r, n: {"fail_next": {"n": min(n, 2), "status": 429, "body": RATE_LIMIT_TEXT}}
    ),
    "slow answer": (
        15, lambda r, n: {"hang_next": {"n": n, "seconds": r.uniform(0.5, READ_TIMEOUT_S - 2)}}
    ),
    "timeout": (10, lambda r, n: {"hang_next": {"n": min(n, 8), "seconds": READ_TIMEOUT_S + 1}}),
    "timeout after saving": (
        8,
        lambda r, n: {
            "hang_next": {
                "n": min(n, 8), "seconds": READ_TIMEOUT_S + 1, "method": "POST",
                "path": "/api/tickets", "applied": True,
            }
        },
    ),
    "dropped connection": (10, lambda r, n: {"connect_error_next": {"n": n}}),
    "latency change": (7, lambda r, n: {"latency_s": r.choice([0.0, 0.0, 0.05, 0.2])}),
}  # fmt: skip


def random_fault(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """One fault of the mix the soak promises: its name and its `POST /_fake/faults` body."""
    names = list(_FAULTS)
    name = rng.choices(names, weights=[_FAULTS[k][0] for k in names])[0]
    return name, _FAULTS[name][1](rng, rng.randint(1, 10))


class FaultThread(threading.Thread):
    """Injects a random fault every `every_s` seconds until stopped; counts what it sent.

    A new fault waits until the last one is used up: while the fleet holds off (a 429
    pauses the connection for up to a minute), faults would otherwise pile up in the fake and
    greet the first requests after the pause, 429s among them, pausing it again, forever.
    """

    def __init__(self, url: str, every_s: float, seed: int) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self._http = httpx.Client(base_url=url, timeout=10.0)
        self._every_s = every_s
        self._rng = random.Random(seed)  # noqa: S311 - a replayable fault mix
        self._halt = threading.Event()
        self.sent: Counter[str] = Counter()

    def run(self) -> None:
        while not self._halt.wait(self._every_s):
            with contextlib.suppress(httpx.HTTPError):
                if self._http.get("/_fake/faults").json()["pending"]:
                    continue
                name, fault = random_fault(self._rng)
                self._http.post("/_fake/faults", json=fault).raise_for_status()
                self.sent[name] += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        with contextlib.suppress(httpx.HTTPError):
            self._http.post("/_fake/faults", json={"clear": True, "latency_s": 0})
        self._http.close()


class RssWatch(threading.Thread):
    """Samples each worker's RSS every second: (seconds since start, MiB) per worker, and
    the most threads each had (Celery's thread pool starts them as deliveries need them)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self._pids = {w.name: w.proc.pid for w in workers if w.proc is not None}
        self._halt = threading.Event()
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in self._pids}
        self.threads: dict[str, int] = dict.fromkeys(self._pids, 0)

    def run(self) -> None:
        started = time.monotonic()
        while not self._halt.wait(1.0):
            for name, pid in self._pids.items():
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    rss = process.memory_info().rss / 2**20
                    self.samples[name].append((time.monotonic() - started, rss))
                    self.threads[name] = max(self.threads[name], process.num_threads())

    def stop(self, warm_s: float = WARMUP_S) -> dict[str, dict[str, float]]:
        """Each worker's RSS (MiB): peak over the first and the last window and overall, the
        median of the window after warm-up (which ended `warm_s` into the run) and of the last
        window, and the growth between."""
        self._halt.set()
        self.join(5)
        peaks = {}
        for name, samples in self.samples.items():
            end = samples[-1][0] if samples else 0.0
            first = [rss for t, rss in samples if t <= RSS_WINDOW_S] or [0.0]
            last = [rss for t, rss in samples if t >= end - RSS_WINDOW_S] or [0.0]
            warm = [rss for t, rss in samples if warm_s <= t < warm_s + RSS_WINDOW_S]
            after_warmup = statistics.median(warm or last)
            peaks[name] = {
                "start_peak_mib": round(max(first), 1),
                "end_peak_mib": round(max(last), 1),
                "overall_peak_mib": round(max(rss for _, rss in samples), 1) if samples else 0.0,
                "after_warmup_mib": round(after_warmup, 2),
                "end_mib": round(statistics.median(last), 2),
                "growth_mib": round(statistics.median(last) - after_warmup, 2),
                "peak_threads": self.threads[name],
            }
        return peaks


def rss_growth(peaks: dict[str, dict[str, float]], jobs: int, warm_jobs: int) -> dict[str, Any]:
    """The fleet's memory verdict: the largest growth of one worker over the `jobs` the fleet
    ran after warm-up, scaled to 10,000 jobs, against the target; `statement` says it in
    one line."""
    worst_name, worst = max(
        ((name, p["growth_mib"]) for name, p in peaks.items()),
        key=lambda item: item[1],
        default=("none", 0.0),
    )
    per_10k = worst * 10_000 / jobs if jobs > 0 else math.inf
    verdict = "PASS" if per_10k <= GROWTH_TARGET_MIB_PER_10K else "MISS"
    return {
        "jobs_after_warmup": jobs,
        "warmup_jobs": warm_jobs,
        "worst_worker": worst_name,
        "worst_worker_growth_mib": round(worst, 2),
        "per_10k_jobs_mib": round(per_10k, 2),
        "target_mib_per_10k_jobs": GROWTH_TARGET_MIB_PER_10K,
        "verdict": verdict,
        "statement": (
            f"RSS growth after warm-up: {per_10k:+.2f} MiB per 10,000 jobs "
            f"(worst worker {worst_name}: {worst:+.2f} MiB over the {jobs:,} jobs the fleet "
            f"ran after the first {warm_jobs:,}; target <= {GROWTH_TARGET_MIB_PER_10K:g} MiB): "
            f"{verdict}"
        ),
    }


def soak(root: Path, *, jobs: int, workers: int, rate: float, max_s: float) -> dict[str, Any]:
    """Run the soak in `root`, submitting `rate` jobs a second; returns the summary.

    Each job writes a summary of its own to a ticket of its own, so a second successful POST
    of a job's values shows in the fake's request log as a duplicate.
    """
    seed = random.randrange(2**32)  # noqa: S311 - printed, so a run can be replayed
    with contextlib.ExitStack() as stack:
        server = RedisServer(root / "redis", appendonly=True).start()
        stack.callback(server.stop)
        fake = FakeHaloProcess(root / "fake.log", args=["--seed", "empty"]).start()
        stack.callback(fake.stop)
        control = stack.enter_context(httpx.Client(base_url=fake.url, timeout=60.0))
        for index in range(jobs):
            ticket = {"id": FIRST_TICKET + index, "summary": "soak", "status_id": 2}
            control.post("/_fake/tickets", json=ticket).raise_for_status()
        connections = root / "connections.toml"
        connections.write_text(
            # The fake Halo serves plain http on loopback.
            f'[connections.acme]\nurl = "{fake.url}"\nallow_insecure_http = true\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'client_secret_env = "{SECRET_ENV}"\nrate_limit = "{RATE_LIMIT}"\n'
        )
        env = service_env(
            broker_url=server.url,
            connections_file=connections,
            secrets={SECRET_ENV: CLIENT_SECRET},
            **SETTINGS,
        )
        fleet = [
            WorkerProcess(env, root / f"worker{n}.log", name=f"soak{n}") for n in range(workers)
        ]
        for worker in fleet:
            stack.callback(worker.stop, 60.0)
            worker.start()
        client = stack.enter_context(redis.Redis.from_url(server.url, decode_responses=True))
        producer = stack.enter_context(Producer(broker_url=server.url))
        rss_watch = RssWatch(fleet)
        rss_watch.start()
        faults = FaultThread(fake.url, every_s=FAULT_EVERY_S, seed=seed)
        faults.start()

        started = time.monotonic()
        job_ids: list[str] = []
        next_report = 0.0
        warm_jobs = WARMUP_JOBS_PER_WORKER * workers
        warm_s: float | None = None
        while (done := int(client.xlen(RESULTS_STREAM))) < jobs:
            elapsed = time.monotonic() - started
            if warm_s is None and done >= warm_jobs:
                warm_s = max(elapsed, WARMUP_S)
            if elapsed > max_s:
                print(f"[{elapsed:6.1f} s] time is up: {done}/{jobs} recorded", flush=True)
                break
            # Submit what the rate allows by now, then report every 10 s.
            while len(job_ids) < min(jobs, int(elapsed * rate) + 1):
                job_id = f"soak-{len(job_ids):06d}"
                ticket_id = FIRST_TICKET + len(job_ids)
                producer.submit(
                    {"job_id": job_id, "connection": "acme", "ticket_id": str(ticket_id),
                     "summary": f"soak {job_id}"}
                )  # fmt: skip
                job_ids.append(job_id)
            if elapsed >= next_report:
                rss = {w: s[-1][1] for w, s in rss_watch.samples.items() if s}
                print(
                    f"[{elapsed:6.1f} s] {len(job_ids)} submitted, {done} recorded, "
                    f"{sum(faults.sent.values())} faults, RSS MiB {rss}",
                    flush=True,
                )
                next_report = elapsed + 10
            time.sleep(0.05)
        run_s = time.monotonic() - started
        faults.stop()
        if warm_s is None:  # a short run: warm-up is its first minute only
            warm_s, warm_jobs = WARMUP_S, 0
        peaks = rss_watch.stop(warm_s)
        return {
            "seed": seed,
            "jobs": jobs,
            "workers": workers,
            "run_s": round(run_s, 1),
            "jobs_per_s": round(jobs / run_s, 1),
            "faults_injected": dict(faults.sent),
            **tally(client, control, job_ids),
            "republished_as_lost": sum(w.log_text().count("published again") for w in fleet),
            "worker_error_lines": sum(w.log_text().count('"level": "error"') for w in fleet),
            "rss_mib": peaks,
            "rss_growth_after_warmup": rss_growth(peaks, jobs - warm_jobs, warm_jobs),
            "logs": str(root),
        }
    raise AssertionError("unreachable")  # pragma: no cover


def tally(client: redis.Redis, control: httpx.Client, job_ids: list[str]) -> dict[str, Any]:
    """Records by outcome and code, Halo writes per job, and anything left in Redis."""
    outcomes: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    missing = 0
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        for raw in client.mget([result_key(j) for j in chunk]):
            if not raw:
                missing += 1
                continue
            record = json.loads(raw)
            outcomes[record["outcome"]] += 1
            if record["error"]:
                codes[record["error"]["code"]] += 1
            attempts[int(record["attempts"])] += 1
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(RESULTS_STREAM))
    feed = Counter(fields["job_id"] for _, fields in entries)
    saved: Counter[str] = Counter()
    requests = control.get("/_fake/requests").json()
    for request in requests:
        posted = request["method"] == "POST" and request["path_lower"] == "/api/tickets"
        if posted and request["status"] is not None and 200 <= request["status"] < 300:
            for element in request["json"] or []:
                saved[str(element.get("summary"))] += 1
    return {
        "records": sum(outcomes.values()),
        "missing_records": missing,
        "feed_not_once": sum(1 for j in job_ids if feed[j] != 1),
        "outcomes": dict(outcomes),
        "error_codes": dict(codes),
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "halo_requests": len(requests),
        # The same values saved again: harmless for an update, but counted.
        "duplicate_posts": sum(n - 1 for n in saved.values() if n > 1),
        "left_in_redis": {
            "deferred": int(client.zcard(DEFERRED)),
            "unfinished": int(client.zcard(UNFINISHED)),
            "claims": len(list(client.scan_iter(CLAIM_PREFIX + "*"))),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=15.0, help="jobs submitted per second")
    parser.add_argument("--max-minutes", type=float, default=15.0)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Kept after the run: the worker, fake and Redis logs are the evidence.
    root = Path(tempfile.mkdtemp(prefix="halo-soak-"))
    print(f"soak: {args.jobs} jobs, {args.workers} workers; logs in {root}", flush=True)
    summary = soak(
        root, jobs=args.jobs, workers=args.workers, rate=args.rate,
        max_s=args.max_minutes * 60,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(summary["rss_growth_after_warmup"]["statement"])
    return 0 if summary["missing_records"] == 0 and summary["feed_not_once"] == 0 else 1


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
