"""The benchmark's instruments: percentiles, waiting for counts, CPU and memory of worker
processes, and what the fake Halo's request log says about windows and concurrency.

Times from the fake's log (`time_s`) are its `time.monotonic()`, which on Linux is the same
system-wide clock as this process's: they compare directly with `time.monotonic()` here.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil

from tests.harness.processes import WorkerProcess


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile `p` (0-100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


def wait_until(
    count: Callable[[], int], target: int, timeout_s: float, poll_s: float = 0.002
) -> float:
    """Poll `count()` until it reaches `target`; returns when (`time.perf_counter()`).

    Raises:
        TimeoutError: not reached within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if count() >= target:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count()} of {target} done after {timeout_s:g} s")
        time.sleep(poll_s)


def cpu_s(workers: Iterable[WorkerProcess]) -> float:
    """CPU seconds (user + system) used so far by the running worker processes and their
    children."""
    total = 0.0
    for worker in workers:
        if worker.proc is None or not worker.running:
            continue
        process = psutil.Process(worker.proc.pid)
        for each in [process, *process.children(recursive=True)]:
            times = each.cpu_times()
            total += times.user + times.system
    return total


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree every `interval_s`; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._halt = threading.Event()
        self.peak_bytes = 0

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(psutil.Error):
                tree = [self._process, *self._process.children(recursive=True)]
                self.peak_bytes = max(self.peak_bytes, sum(p.memory_info().rss for p in tree))
            self._halt.wait(self._interval_s)

    def stop(self) -> int:
        """Stop sampling; returns the peak in bytes."""
        self._halt.set()
        self.join(5)
        return self.peak_bytes


def requests_per_job(records: list[dict[str, Any]], fake_requests: int) -> dict[str, Any]:
    """The records' mean `halo_requests`, beside what the fake counted per job.

    Raises:
        RuntimeError: a bench job failed, so its figures would mean nothing.
    """
    failed = [r["job_id"] for r in records if r["outcome"] != "succeeded"]
    if failed:
        raise RuntimeError(f"bench jobs failed: {failed[:3]}")
    return {
        "jobs": len(records),
        "per_job": round(sum(r["halo_requests"] for r in records) / len(records), 3),
        "fake_requests_per_job": round(fake_requests / len(records), 3),
    }


def rolling_counts(times: Sequence[float], window_s: float, start: float, end: float) -> list[int]:
    """How many of `times` fall in the rolling window (t - window_s, t], for t every 0.25 s
    from `start` to `end`: Halo's own view of a rolling limit."""
    ordered = sorted(times)
    points = [start + i * 0.25 for i in range(int((end - start) / 0.25) + 1)]
    return [
        bisect.bisect_right(ordered, p) - bisect.bisect_right(ordered, p - window_s) for p in points
    ]


def max_in_window(times: Iterable[float], window_s: float) -> int:
    """The most of `times` inside any window of `window_s` seconds."""
    ordered, most, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def lag_summary(granted: Sequence[float], arrived: Sequence[float]) -> dict[str, Any]:
    """How long after the governor granted budget Halo saw the request, pairing the n-th
    grant with the n-th arrival (an estimate: requests need not arrive in grant order)."""
    lags_ms = [(a - g) * 1000 for g, a in zip(sorted(granted), sorted(arrived), strict=False)]
    if not lags_ms:
        return {"pairs": 0}
    return {
        "pairs": len(lags_ms),
        "p50_ms": round(percentile(lags_ms, 50), 1),
        "p99_ms": round(percentile(lags_ms, 99), 1),
        "max_ms": round(max(lags_ms), 1),
        "mean_ms": round(statistics.fmean(lags_ms), 1),
    }
