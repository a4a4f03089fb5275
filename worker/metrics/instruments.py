"""The worker's own instruments: counters and histograms of jobs and Halo requests.

`WorkerMetrics` holds the process's registry and the instruments the hooks feed: the runner
tells it what became of each job (`worker.runner.JobObserver`), the Halo client reports each
request it sent (`worker.halo.client.HaloClients.on_request`). A `connection` label takes only
configured connection names; any other is counted as `OTHER`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from worker.halo.session import SentRequest
from worker.models import ResultRecord

log = logging.getLogger("halo.metrics")

# The `connection` label of a name that is not configured.
OTHER: Final = "other"
# From a no-op update (tens of ms) to a job that used its whole deadline (120 s).
_DURATION_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# End to end, a job may wait through retries (up to 900 s) and a backlog.
_LATENCY_BUCKETS_S: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800)
_REQUEST_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """The process's metrics: the registry, the instruments, and the hooks that feed them."""

    def __init__(self, connections: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = frozenset(connections)
        self.jobs = Counter(
            "halo_jobs_total",
            "Jobs that ended, by outcome and error code (code is 'none' on success).",
            ["outcome", "code", "connection"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "halo_job_duration_seconds",
            "Duration of the run that ended a job, from its delivery to its record.",
            ["outcome"],
            buckets=_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.latency = Histogram(
            "halo_job_latency_seconds",
            "From a job's submitted_at to its finished_at: queueing, retries and backlog waits.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.retries = Counter(
            "halo_job_retries_total",
            "Jobs deferred to run again after a retryable error, by its code.",
            ["connection", "code"],
            registry=self.registry,
        )
        self.parked = Counter(
            "halo_jobs_parked_total",
            "Jobs parked in their connection's backlog to wait for Halo budget.",
            ["connection"],
            registry=self.registry,
        )
        self.requests = Counter(
            "halo_requests_total",
            "Requests sent to Halo, by HTTP status ('timeout' or 'error' without an answer).",
            ["connection", "method", "endpoint", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "halo_request_duration_seconds",
            "Time from sending a Halo request to its answer (or failure).",
            ["connection", "endpoint"],
            buckets=_REQUEST_BUCKETS_S,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    def label(self, connection: str | None) -> str:
        """The `connection` label for a name: itself if configured, else "other"."""
        return connection if connection in self.connections else OTHER

    # -- worker.runner.JobObserver -----------------------------------------------------------

    def job_finished(
        self, record: ResultRecord, *, connection: str | None, duration_s: float
    ) -> None:
        outcome = record.outcome.value
        code = record.error.code.value if record.error else "none"
        self.jobs.labels(outcome, code, self.label(connection)).inc()
        self.duration.labels(outcome).observe(duration_s)
        latency_s = _seconds_between(record.submitted_at, record.finished_at)
        if latency_s is not None:
            self.latency.labels(outcome).observe(latency_s)

    def job_deferred(self, connection: str, code: str, *, due_s: float) -> None:
        del due_s
        self.retries.labels(self.label(connection), code).inc()

    def job_parked(self, connection: str) -> None:
        self.parked.labels(self.label(connection)).inc()

    # -- worker.halo.client.HaloClients.on_request -------------------------------------------

    def request_sent(self, request: SentRequest) -> None:
        """Count one Halo request (the client's `on_request` hook)."""
        connection = self.label(request.connection)
        self.requests.labels(connection, request.method, request.endpoint, request.status).inc()
        self.request_duration.labels(connection, request.endpoint).observe(request.duration_s)

    def serve(self, port: int, address: str) -> None:
        """Serve the registry over HTTP from a daemon thread.

        Raises:
            OSError: the port is taken.
        """
        start_http_server(port, addr=address, registry=self.registry)
        log.info("metrics served", extra={"port": port, "address": address})


def timestamp_s(value: Any) -> float | None:
    """A contract timestamp (ISO 8601, e.g. `submitted_at`) as Unix seconds; None if it is not
    one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _seconds_between(start: str, end: str) -> float | None:
    first, last = timestamp_s(start), timestamp_s(end)
    return None if first is None or last is None else max(0.0, last - first)
