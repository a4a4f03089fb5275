"""Integration fixtures: a private Redis, a fake Halo over HTTP, and real worker processes.

One `redis-server` and one fake Halo serve the whole session; each test module gets its own
worker (`worker`), configured by the module's `worker_settings`. Between tests the contract's
keys (`halo:*`) are deleted and the fake is reset; the broker's own keys (`_kombu.*`, the
queue) are kept, since a producer declares its queue bindings once per connection.

Tests that kill a worker start their own with `start_worker`, stopped when the test ends, and
must not share a module with `worker`: both would consume the same queue. Every process started
here is stopped at teardown.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo, serve_in_thread
from fakehalo.profiles import DEFAULT_PROFILE, PROFILES
from producers.jobs import Producer
from tests.harness.processes import RedisServer, WorkerProcess, service_env
from tests.integration.harness import SECRET_ENV, TEST_SETTINGS


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port; skipped locally when none is installed."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not on the PATH; the integration tests need it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private Redis (decoded strings)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake() -> FakeHalo:
    """The fake Halo tenant (demo seed: tickets 4711-4716); reset before every test."""
    return FakeHalo()


@pytest.fixture(scope="session")
def halo_url(fake: FakeHalo) -> Iterator[str]:
    """The fake served over HTTP from a thread of the test process."""
    server = serve_in_thread(fake)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def connections_file(tmp_path_factory: pytest.TempPathFactory, halo_url: str) -> Path:
    """A connections file with one connection, `acme`, pointing at the fake.

    Its rate window is 2 s, not Halo's 5 minutes: a 429 without `Retry-After` pauses the
    connection until the oldest request leaves the window, and tests must not wait minutes.
    """
    path = tmp_path_factory.mktemp("config") / "connections.toml"
    path.write_text(
        "[connections.acme]\n"
        f'url = "{halo_url}"\n'
        # The fake Halo serves plain http on loopback.
        "allow_insecure_http = true\n"
        f'client_id = "{DEMO_CLIENT_ID}"\n'
        f'client_secret_env = "{SECRET_ENV}"\n'
        'rate_limit = "200/2s"\n'
    )
    return path


@pytest.fixture(scope="session")
def env_for(redis_server: RedisServer, connections_file: Path) -> Callable[..., dict[str, str]]:
    """Builds the environment of a worker or CLI process: the test settings, overridable."""

    def build(**overrides: str) -> dict[str, str]:
        return service_env(
            broker_url=redis_server.url,
            connections_file=connections_file,
            secrets={SECRET_ENV: DEMO_CLIENT_SECRET},
            **{**TEST_SETTINGS, **overrides},
        )

    return build


@pytest.fixture(scope="session")
def worker_factory(
    env_for: Callable[..., dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts workers (`factory(name, **settings)`); any still running are stopped at the end."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(name: str, **settings: str) -> WorkerProcess:
        process = WorkerProcess(env_for(**settings), logs / f"{name}.log", name=name)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop(timeout_s=15)


@pytest.fixture
def start_worker(
    worker_factory: Callable[..., WorkerProcess],
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts workers for one test (`start_worker(name, **settings)`), stopped when it ends,
    so that none of them takes the jobs of a later module."""
    started: list[WorkerProcess] = []

    def start(name: str, **settings: str) -> WorkerProcess:
        started.append(worker_factory(name, **settings))
        return started[-1]

    yield start
    for process in started:
        process.stop(timeout_s=15)


@pytest.fixture(scope="module")
def worker_settings() -> dict[str, str]:
    """Settings of the module's worker beyond `TEST_SETTINGS`; a module overrides this."""
    return {}


@pytest.fixture(scope="module")
def worker(
    request: pytest.FixtureRequest,
    worker_factory: Callable[..., WorkerProcess],
    worker_settings: dict[str, str],
) -> Iterator[WorkerProcess]:
    """One worker for the whole module, stopped when the module is done."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    process = worker_factory(name, **worker_settings)
    yield process
    process.stop(timeout_s=15)


@pytest.fixture(scope="session")
def producer(redis_server: RedisServer) -> Iterator[Producer]:
    """The Python producer API, on the private Redis."""
    with Producer(broker_url=redis_server.url) as made:
        yield made


@pytest.fixture(scope="module", params=PROFILES)
def halo_profile(fake: FakeHalo, request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs each test of a module that uses it once per tenant profile the fake plays
    (`fakehalo.profiles`); the fake plays the default profile again afterwards."""
    profile = str(request.param)
    fake.use_profile(profile)
    yield profile
    fake.use_profile(DEFAULT_PROFILE)


@pytest.fixture(autouse=True)
def _clean_slate(redis_client: redis.Redis, fake: FakeHalo, halo_url: str) -> None:
    """Each test starts with no records, feed, job state or deferrals, and a fresh fake."""
    del halo_url  # requested so the fake is served before any worker reads the connection
    keys = list(redis_client.scan_iter(match="halo:*", count=1000))
    if keys:
        redis_client.delete(*keys)
    fake.reset()
