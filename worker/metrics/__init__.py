"""Prometheus metrics of a worker process, served on ``HALO_METRICS_PORT`` (off when unset).

One registry per process, shared by every worker thread (prometheus_client is thread-safe).
Counters and histograms are fed by hooks: the runner tells `JobMetrics` what became of each
job, the Halo client reports each request it sent. Gauges of the fleet's shared state are read
from Redis when Prometheus scrapes (`RedisStateCollector`), so every worker reports the same
values for them: aggregate those with ``max``, not ``sum``.

    halo_jobs_total{outcome,code,connection}          jobs that ended (one per record)
    halo_job_duration_seconds{outcome}                the job's last run, delivery to record
    halo_job_latency_seconds{outcome}                 submitted_at to finished_at
    halo_job_retries_total{connection,code}           deferrals after a retryable error
    halo_jobs_parked_total{connection}                jobs put in a backlog to wait for budget
    halo_requests_total{connection,method,endpoint,status}   Halo requests; status 429 counts
                                                      rate limiting, "timeout"/"error" no answer
    halo_request_duration_seconds{connection,endpoint}
    halo_queue_length{queue}                          messages in the broker queues (Redis LLEN)
    halo_queue_consumers{queue}                       workers that announced consuming the queue
                                                      within the heartbeat's maximum age
    halo_deferred_jobs                                jobs waiting to retry (halo:deferred)
    halo_backlog_jobs{connection}                     jobs waiting for Halo budget
    halo_ticket_waiting_jobs                          jobs waiting for their ticket's turn
    halo_oldest_job_age_seconds{source}               age (since submitted_at) of the job at
                                                      the head of queue/batch_queue/backlog/deferred
    halo_deferred_overdue_seconds                     how late the most overdue retry is
    halo_worker_heartbeat_age_seconds                 since this worker last ran its canary
    halo_metrics_redis_up                             whether the scrape could read Redis
    halo_dead_letters_total{reason}                   queue items that were no task message,
                                                      moved to halo:dead (worker.deadletters)
    halo_redis_memory_used_bytes{redis}               Redis's used_memory (INFO memory), for
    halo_redis_memory_max_bytes{redis}                "broker", "results" or "shared"; and its
                                                      maxmemory (0: none set)

Redis is read at most once per `min_interval_s` (5 s) per process, however often the endpoint
is asked, and every read is bounded whatever the data holds (worker.probes): a scrape's cost
does not depend on what anyone put on the queue.

A `connection` label takes only configured connection names; any other value (a job naming
an unknown connection) is counted as "other", so a bad producer cannot grow the label set.

The instruments are `worker.metrics.instruments`, the gauges read from Redis
`worker.metrics.gauges`; `install` wires both into a worker process and serves them.
"""

from __future__ import annotations

from worker.metrics.gauges import RedisStateCollector, redis_for_scrapes
from worker.metrics.instruments import WorkerMetrics
from worker.redisconn import RedisOptions
from worker.runtime import Runtime

__all__ = ["RedisStateCollector", "WorkerMetrics", "install", "redis_for_scrapes"]


def install(current: Runtime) -> WorkerMetrics | None:
    """Feed and serve this process's metrics when ``HALO_METRICS_PORT`` is set (at worker
    start); None when metrics are off.

    Raises:
        OSError: the port is taken.
    """
    settings = current.settings
    if settings.metrics_port is None:
        return None
    names = sorted(current.clients.connections)
    metrics = WorkerMetrics(names)
    current.runner.observers.append(metrics)
    current.clients.on_request = metrics.request_sent
    options = RedisOptions.from_settings(settings)
    results = redis_for_scrapes(settings.results_redis_url, options)
    broker = (
        results
        if settings.broker_url == settings.results_redis_url
        else redis_for_scrapes(settings.broker_url, options)
    )
    metrics.registry.register(
        RedisStateCollector(
            broker,
            results,
            names,
            settings.heartbeat_file,
            live_within_s=settings.heartbeat_max_age_s,
        )
    )
    metrics.serve(settings.metrics_port, settings.metrics_address)
    return metrics
