"""The process's long-lived pieces, built once from the settings: store, Halo clients, runner.

Built lazily on first use (or eagerly at worker start, so a bad connections file stops the
worker with a clear message instead of failing every job).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import redis

from worker.backlog import Backlogs
from worker.burst import Bursts
from worker.connections import Connection, load_connections
from worker.governor import Governor
from worker.halo.client import HaloClients, Timeouts
from worker.redisconn import RedisOptions, connect
from worker.replication import ReplicaAcks
from worker.results import ResultStore
from worker.retry import RetryPolicy
from worker.runner import JobRunner, RunnerConfig, claim_lease_s
from worker.settings import Settings, get_settings
from worker.sharedcache import RedisCache
from worker.tickets import TicketLines


@dataclass(frozen=True)
class Runtime:
    """Everything a worker process shares between its threads."""

    settings: Settings
    redis: redis.Redis
    store: ResultStore
    clients: HaloClients
    runner: JobRunner
    governor: Governor
    backlogs: Backlogs
    tickets: TicketLines


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A Redis client for the result store (`worker.redisconn`: Sentinel, TLS that verifies),
    configured by `settings` (default: the process's)."""
    return connect(
        url,
        RedisOptions.from_settings(settings or get_settings()),
        socket_timeout_s=10,
        connect_timeout_s=5,
        health_check_interval_s=30,
    )


def replica_acks(settings: Settings) -> ReplicaAcks:
    """The replicas that claims, journals and records wait for (`worker.replication`)."""
    return ReplicaAcks(
        min_replicas=settings.redis_min_replicas_acked,
        timeout_s=settings.redis_replica_ack_timeout_s,
    )


def build_runtime(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> Runtime:
    """Assemble a runtime: the fleet shares the rate budget, tokens and lookup lists through
    the result Redis.

    Raises:
        ConnectionsError: the connections file is missing or wrong; the message names the
            connection and key to fix.
    """
    connections = load_connections(settings.connections_file)
    client = redis_client(settings.results_redis_url, settings)
    store = ResultStore(client, ttl_s=settings.result_ttl_s, acks=replica_acks(settings))
    governor = Governor(client)
    backlogs = Backlogs(client)
    clients = halo_clients(
        settings, connections, cache=RedisCache(client), budget=governor, transport=transport
    )
    policy = RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        max_total_s=settings.retry_max_total_s,
        base_s=settings.retry_base_s,
        cap_s=settings.retry_cap_s,
    )
    config = RunnerConfig(
        job_deadline_s=settings.job_deadline_s,
        request_timeout_s=settings.http_read_timeout_s,
        max_deliveries=settings.max_deliveries,
        policy=policy,
    )
    # A job on its way shows no sign of life for at most a stranded message's visibility
    # timeout plus a dead worker's claim: the lost-job net's bound, and the ticket lines'.
    tickets = TicketLines(client, quiet_s=settings.visibility_timeout_s + claim_lease_s(config))
    bursts = Bursts(threshold=settings.burst_threshold)
    runner = JobRunner(store, clients, config, backlogs, tickets, bursts=bursts)
    return Runtime(settings, client, store, clients, runner, governor, backlogs, tickets)


def halo_clients(
    settings: Settings,
    connections: Mapping[str, Connection],
    *,
    cache: RedisCache | None,
    budget: Governor | None,
    transport: httpx.BaseTransport | None = None,
) -> HaloClients:
    """Halo clients as the workers build theirs: the settings' HTTP timeouts, lookup TTL
    (`HALO_LOOKUP_TTL_S`) and token refresh margin (`HALO_TOKEN_REFRESH_MARGIN_S`).

    Args:
        cache: the fleet's shared tokens and lookup lists; None keeps them in this process.
        budget: the fleet's shared rate budget, which every request takes; None counts none.
        transport: the HTTP transport (tests, the doctor's watcher); None is httpx's own.
    """
    return HaloClients(
        connections,
        timeouts=Timeouts(
            connect_s=settings.http_connect_timeout_s,
            read_s=settings.http_read_timeout_s,
            lookup_ttl_s=settings.lookup_ttl_s,
            token_refresh_margin_s=settings.token_refresh_margin_s,
        ),
        cache=cache,
        budget=budget,
        transport=transport,
        max_connections=settings.worker_concurrency + 16,
    )


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process's runtime, built from `get_settings()` on first use."""
    global _runtime  # noqa: PLW0603 - one runtime per process, built on first use.
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(get_settings())
        return _runtime
