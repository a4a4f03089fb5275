"""The fleet's shared state as Prometheus gauges, read from Redis when Prometheus scrapes.

`RedisStateCollector` reports the queues, the jobs waiting outside them (retries, backlogs,
ticket turns), the age of the oldest waiting job, the dead letters and Redis's memory; every
worker reports the same values for them (aggregate with ``max``). Redis is read at most once
per `min_interval_s` per process, and every read is bounded whatever the data holds
(`worker.probes`). The heartbeat's age is this process's own, read fresh on every scrape.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker import deadletters, fleet, heartbeat
from worker.celeryconfig import RETIRED_BATCH_QUEUE
from worker.keys import (
    BACKLOG_JOBS,
    BACKLOGS,
    DEFERRED,
    DEFERRED_JOBS,
    TICKET_WAITING,
    backlog_key,
    backlog_taken_key,
)
from worker.metrics.instruments import OTHER, timestamp_s
from worker.models import QUEUE
from worker.probes import QueueHead, memory_of
from worker.redisconn import RedisOptions, connect

log = logging.getLogger("halo.metrics")

# The broker queues whose depth is reported: the queue, and the batch queue of earlier
# releases, which workers empty into it after an upgrade (worker.fleet).
QUEUES: Final = {"queue": QUEUE, "batch_queue": RETIRED_BATCH_QUEUE}
# A scrape must answer within Prometheus's default 10 s timeout even when Redis is gone.
_REDIS_TIMEOUT_S: Final = 1.0
# Prometheus scrapes every 15 s or more; anyone asking more often gets the last answer, so the
# unauthenticated endpoint cannot be used to load Redis.
_MIN_READ_INTERVAL_S: Final = 5.0


class RedisStateCollector(Collector):
    """Gauges of the fleet's shared state, read from Redis at scrape time.

    Each read is O(1) or O(log n) in the number of waiting jobs (LLEN, ZCARD, the head entry
    of each list or set), so a scrape stays cheap however deep the queue is. A queue's head
    message is fetched only when small enough to be one the worker would run, and Redis is
    read at most once per `min_interval_s`: scrapes in between get the values last read.
    """

    def __init__(
        self,
        broker: redis.Redis,
        results: redis.Redis,
        connections: Sequence[str],
        heartbeat_file: Path,
        *,
        live_within_s: float = 180.0,
        min_interval_s: float = _MIN_READ_INTERVAL_S,
    ) -> None:
        self._broker = broker
        self._results = results
        self._connections = list(connections)
        self._heartbeat_file = heartbeat_file
        self._live_within_s = live_within_s
        self._min_interval_s = min_interval_s
        self._head = QueueHead(broker)
        # One read in flight per process; concurrent scrapes wait for it and share its answer.
        self._reading = threading.Lock()
        self._last: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Given explicitly, so registering does not run a scrape against Redis.
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        now_s = time.time()
        with self._reading:
            read_at = time.monotonic()
            if self._last is None or read_at - self._last[0] >= self._min_interval_s:
                self._last = (read_at, self._read_redis(now_s))
            shared = self._last[1]
        # The heartbeat is this process's own file, read fresh on every scrape.
        beat = GaugeMetricFamily(*_HEARTBEAT_AGE)
        age = heartbeat.age_s(self._heartbeat_file, now_s)
        if age is not None:
            beat.add_metric([], age)
        yield from (m for m in shared if m.name != beat.name)
        yield beat

    def _read_redis(self, now_s: float) -> list[Metric]:
        families = _Families()
        try:
            self._read(families, now_s)
            families.redis_up.add_metric([], 1)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: Redis unreachable (%s)", type(exc).__name__)
            families = _Families()
            families.redis_up.add_metric([], 0)
        return families.all()

    def _read(self, families: _Families, now_s: float) -> None:
        oldest: dict[str, float] = {}
        self._read_queues(families, now_s, oldest)
        self._read_waits(families, now_s, oldest)
        for source in (*QUEUES, "backlog", "deferred"):
            families.oldest.add_metric([source], max(0.0, oldest.get(source, 0.0)))
        # Kept on the broker, beside the queues the items came from; counted by the fleet. Every
        # reason is reported from 0, so the first dead letter shows as an increase.
        counts = deadletters.counts(self._broker)
        for reason in deadletters.Reason:
            families.dead_letters.add_metric([reason.value], counts.get(reason.value, 0))
        servers = (
            {"shared": self._broker}
            if self._broker is self._results
            else {"broker": self._broker, "results": self._results}
        )
        for role, server in servers.items():
            memory = memory_of(server)
            if memory is not None:
                families.memory_used.add_metric([role], memory.used_bytes)
                families.memory_max.add_metric([role], memory.max_bytes)

    def _read_queues(self, families: _Families, now_s: float, oldest: dict[str, float]) -> None:
        """The broker queues: depth, announced consumers, age of the head message."""
        announced = fleet.workers(self._results, now_s)
        for source, queue in QUEUES.items():
            families.queue_length.add_metric([queue], self._broker.llen(queue))
            live = fleet.consumers(announced, queue, self._live_within_s)
            families.consumers.add_metric([queue], len(live))
            head = self._head.read(queue)
            submitted = _submitted_at_of_message(head.text) if head and head.text else None
            if submitted is not None:
                oldest[source] = now_s - submitted

    def _read_waits(self, families: _Families, now_s: float, oldest: dict[str, float]) -> None:
        """Jobs waiting outside the broker: retries, backlogs, ticket turns."""
        families.deferred.add_metric([], self._results.zcard(DEFERRED))
        first_due = cast(
            list[tuple[str, float]], self._results.zrange(DEFERRED, 0, 0, withscores=True)
        )
        if first_due:
            job_id, due_ms = first_due[0]
            families.overdue.add_metric([], max(0.0, now_s - due_ms / 1000))
            submitted = _submitted_at_of_entry(self._results.hget(DEFERRED_JOBS, job_id))
            if submitted is not None:
                oldest["deferred"] = now_s - submitted
        else:
            families.overdue.add_metric([], 0)
        listed = {str(n) for n in cast(set[Any], self._results.smembers(BACKLOGS))}
        sizes: dict[str, int] = {}
        for name in sorted(set(self._connections) | listed):
            key = backlog_key(name)
            label = name if name in self._connections else OTHER
            size = self._results.zcard(key) + self._results.zcard(backlog_taken_key(name))
            sizes[label] = sizes.get(label, 0) + size
            first = cast(list[str], self._results.zrange(key, 0, 0))
            if first:
                submitted = _submitted_at_of_entry(self._results.hget(BACKLOG_JOBS, first[0]))
                if submitted is not None:
                    oldest["backlog"] = max(oldest.get("backlog", 0.0), now_s - submitted)
        for label, size in sizes.items():
            families.backlog.add_metric([label], size)
        families.ticket_waiting.add_metric([], self._results.hlen(TICKET_WAITING))


class _Families:
    """The collector's metric families, freshly made for one scrape."""

    def __init__(self) -> None:
        self.queue_length = GaugeMetricFamily(
            "halo_queue_length", "Messages waiting in a broker queue.", labels=["queue"]
        )
        self.consumers = GaugeMetricFamily(
            "halo_queue_consumers",
            "Workers that announced consuming a queue within the heartbeat's maximum age.",
            labels=["queue"],
        )
        self.deferred = GaugeMetricFamily(
            "halo_deferred_jobs", "Jobs waiting to run again after a retryable error."
        )
        self.backlog = GaugeMetricFamily(
            "halo_backlog_jobs",
            "Jobs waiting in a connection's backlog for Halo budget.",
            labels=["connection"],
        )
        self.ticket_waiting = GaugeMetricFamily(
            "halo_ticket_waiting_jobs",
            "Jobs waiting for an earlier job on the same ticket to finish.",
        )
        self.oldest = GaugeMetricFamily(
            "halo_oldest_job_age_seconds",
            "Seconds since the job at the head of a queue, backlog or the retry set was "
            "submitted (0 when empty).",
            labels=["source"],
        )
        self.overdue = GaugeMetricFamily(
            "halo_deferred_overdue_seconds",
            "How long past its due time the next retry still waits (0 when none is due).",
        )
        self.heartbeat_age = GaugeMetricFamily(*_HEARTBEAT_AGE)
        self.memory_used = GaugeMetricFamily(
            "halo_redis_memory_used_bytes",
            "Memory the Redis server uses (INFO memory used_memory).",
            labels=["redis"],
        )
        self.memory_max = GaugeMetricFamily(
            "halo_redis_memory_max_bytes",
            "The Redis server's maxmemory; 0 when none is set. At it, a noeviction Redis refuses "
            "every write.",
            labels=["redis"],
        )
        self.redis_up = GaugeMetricFamily(
            "halo_metrics_redis_up", "Whether this scrape could read the queue state from Redis."
        )
        self.dead_letters = CounterMetricFamily(
            "halo_dead_letters",
            "Queue items that were no task message, moved to the dead-letter list, by reason.",
            labels=["reason"],
        )

    def all(self) -> list[Metric]:
        return [
            self.queue_length,
            self.consumers,
            self.deferred,
            self.backlog,
            self.ticket_waiting,
            self.oldest,
            self.overdue,
            self.heartbeat_age,
            self.redis_up,
            self.dead_letters,
            self.memory_used,
            self.memory_max,
        ]


_HEARTBEAT_AGE: Final = (
    "halo_worker_heartbeat_age_seconds",
    "Seconds since this worker last ran its liveness canary.",
)


def _submitted_at_of_message(raw: str) -> float | None:
    """The oldest `submitted_at` in a kombu Redis message (a job, or a batch of jobs)."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(decoded, list) or len(decoded) != 3:  # Celery's protocol 2 body
        return None
    args, kwargs, _ = decoded
    stamps = [kwargs.get("submitted_at")] if isinstance(kwargs, dict) else []
    if isinstance(args, list) and len(args) == 2 and isinstance(args[1], list):  # a batch
        stamps += [j.get("submitted_at") for j in args[1] if isinstance(j, dict)]
    parsed = [t for s in stamps if (t := timestamp_s(s)) is not None]
    return min(parsed, default=None)


def _submitted_at_of_entry(raw: Any) -> float | None:
    """The `submitted_at` of a deferred or parked entry's payload."""
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        return None
    return timestamp_s(payload.get("submitted_at")) if isinstance(payload, dict) else None


def redis_for_scrapes(url: str, options: RedisOptions | None = None) -> redis.Redis:
    """A Redis client with short timeouts, so a scrape answers even when Redis is gone
    (`worker.redisconn`: Sentinel, TLS that verifies)."""
    return connect(
        url,
        options or RedisOptions(),
        socket_timeout_s=_REDIS_TIMEOUT_S,
        connect_timeout_s=_REDIS_TIMEOUT_S,
    )
