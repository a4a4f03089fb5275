"""Fixtures of the budget tests, loaded with
``pytest_plugins = ["tests.integration.fixtures_budget"]``.

They use the session's private Redis (`redis_server`, from conftest) but a database of their
own, flushed around every test, so that no worker process of another module (whose mover
watches the backlogs of database 0) ever sees the jobs they park.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import redis

from tests.harness.processes import RedisServer
from tests.integration.budget import Fleet, Tenants, write_connections
from worker.runtime import Runtime, build_runtime
from worker.settings import Settings

# Database 0 belongs to the session's broker and worker processes.
BUDGET_DB: Final = 7
# Short enough that a deferred job is due again within a test; far below every other limit.
FAST_RETRIES: Final[dict[str, Any]] = {
    "retry_base_s": 0.01,
    "retry_cap_s": 0.05,
    "retry_max_attempts": 5,
    "retry_max_total_s": 60.0,
}


@pytest.fixture
def budget_redis_url(redis_server: RedisServer) -> str:
    """The URL of the budget tests' own database on the session's Redis."""
    return redis_server.url.rsplit("/", 1)[0] + f"/{BUDGET_DB}"


@pytest.fixture
def budget_redis(budget_redis_url: str) -> Iterator[redis.Redis]:
    """A client of that database (decoded strings), empty when the test starts and ends."""
    client = redis.Redis.from_url(budget_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def fleet(budget_redis: redis.Redis, budget_redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """Builds runtimes ("worker processes") on the budget database.

    ``fleet(tenants, rates={"acme": "300/300s"}, **settings)``: `tenants` answers Halo's
    requests; `rates` names the connections and their ``rate_limit``; `settings` are
    `Settings` fields, but `extra_toml` (more keys for every connection's table).
    """
    del budget_redis  # requested for the flush around the test
    built: list[Runtime] = []

    def build(
        tenants: Tenants,
        rates: dict[str, str] | None = None,
        extra_toml: str = "",
        **settings: Any,
    ) -> Runtime:
        directory = tmp_path / f"runtime-{len(built)}"
        directory.mkdir()
        connections = write_connections(directory, rates or {"acme": "300/300s"}, extra_toml)
        config = Settings(
            broker_url=budget_redis_url,
            connections_file=connections,
            result_ttl_s=3600,
            job_deadline_s=10.0,
            http_read_timeout_s=5.0,
            visibility_timeout_s=60,
            worker_concurrency=8,
            **{**FAST_RETRIES, **settings},
        )
        runtime = build_runtime(config, transport=tenants.transport())
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.clients.close()
        runtime.redis.close()
