"""Fixtures of the tests of producers that are not this library, loaded with
``pytest_plugins = ["tests.integration.fixtures_foreign"]``: the module worker's task events,
and the `Fleet` that checks a job's record against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess
from tests.integration.foreign import Fleet
from tests.integration.task_events import TaskEvents


@pytest.fixture(scope="module")
def events(worker: WorkerProcess, redis_server: RedisServer) -> Iterator[TaskEvents]:
    """The module worker's task events, as Flower receives them."""
    captured = TaskEvents(redis_server.url, worker.name).start()
    yield captured
    captured.stop()


@pytest.fixture
def foreign_fleet(
    worker: WorkerProcess,
    events: TaskEvents,
    producer: Producer,
    redis_client: redis.Redis,
    env_for: Callable[..., dict[str, str]],
) -> Fleet:
    """The module's worker, its events, and the ways a rule runner reads records."""
    return Fleet(worker, events, producer, redis_client, env_for)
