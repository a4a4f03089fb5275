"""What the budget tests (governor, shared caches, backlogs, batches) share besides fixtures.

These tests run the worker's parts in the test process, the way `worker.runtime` assembles
them, against fake Halo tenants behind `httpx.MockTransport`. A `Runtime` built by the `fleet`
fixture (`fixtures_budget`) stands for one worker process: its own Redis client, HTTP pool,
governor and cache objects, sharing only Redis with the others.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import httpx
import redis

from worker.connections import Connection
from worker.governor import Governor
from worker.halo.fake import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo
from worker.keys import RESULTS_STREAM
from worker.runtime import Runtime, redis_client

# Ticket timestamps that do not depend on when a test runs, so two runs compare equal.
FIXED_NOW: Final = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)

Job = dict[str, Any]
Record = dict[str, Any]
# `fleet(tenants, rates={"acme": "300/300s"}, **settings)` builds one "worker process".
Fleet = Callable[..., Runtime]


def new_fake(**options: Any) -> FakeHalo:
    """A demo tenant whose clock for ticket timestamps stands still."""
    return FakeHalo(wall_clock=lambda: FIXED_NOW, **options)


class Tenants:
    """An `httpx.MockTransport` handler that routes each request to the fake of its host,
    ``<connection>.halo.test``, and remembers every access token the fakes issued."""

    def __init__(self, **fakes: FakeHalo) -> None:
        self.fakes = fakes
        self.issued_tokens: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        connection = request.url.host.removesuffix(".halo.test")
        response = self.fakes[connection](request)
        if request.url.path.endswith("/auth/token") and response.status_code == 200:
            self.issued_tokens.append(str(response.json()["access_token"]))
        return response

    def transport(self) -> httpx.MockTransport:
        """A transport for one runtime (each worker process has its own)."""
        return httpx.MockTransport(self)


def write_connections(directory: Path, rates: dict[str, str], extra_toml: str = "") -> Path:
    """A connections file with one connection per `rates` entry (name → ``rate_limit``), each
    at ``https://<name>.halo.test`` with the fakes' demo credentials, the secret in a file,
    and `extra_toml` (more keys) in every connection's table."""
    secret = directory / "halo-secret"
    secret.write_text(DEMO_CLIENT_SECRET)
    path = directory / "connections.toml"
    path.write_text(
        "".join(
            f"[connections.{name}]\n"
            f'url = "https://{name}.halo.test"\n'
            f'client_id = "{DEMO_CLIENT_ID}"\n'
            f'client_secret_file = "{secret}"\n'
            f'rate_limit = "{rate}"\n{extra_toml}\n'
            for name, rate in rates.items()
        )
    )
    return path


def job(ticket_id: int | str = 4711, **fields: Any) -> Job:
    """A job for `ticket_id` on `acme` with a fresh job id; `fields` add to or override it."""
    made: Job = {
        "job_id": f"budget-{uuid.uuid4()}",
        "connection": "acme",
        "ticket_id": str(ticket_id),
    }
    made.update(fields)
    return made


def hammer(redis_url: str, connection: Connection, until_s: float) -> list[tuple[float, float]]:
    """Ask the governor for one request of `connection` until `time.monotonic()` reaches
    `until_s`, as a busy worker would; returns ``(before, after)`` of every granted call.

    A module-level function so that spawned processes can run it too. `time.monotonic` is
    one system-wide clock on Linux, so times from several processes compare.
    """
    client = redis_client(redis_url)
    governor = Governor(client)
    grants: list[tuple[float, float]] = []
    try:
        while (before := time.monotonic()) < until_s:
            grant = governor.try_acquire(connection)
            if grant.granted:
                grants.append((before, time.monotonic()))
            else:
                # A real caller waits `wait_s`; a short nap keeps the pressure on regardless.
                time.sleep(min(grant.wait_s, 0.002))
    finally:
        client.close()
    return grants


def most_grants_in_any_window(grants: list[tuple[float, float]], span_s: float) -> int:
    """The most grants certainly inside one window of `span_s` seconds.

    Each grant happened (in Redis) somewhere between its call's `before` and `after`; a grant
    counts towards the window starting at some `before` only if its whole interval lies inside,
    so scheduling delays can hide a violation but never invent one.
    """
    most = 0
    for start, _ in grants:
        inside = sum(1 for before, after in grants if before >= start and after < start + span_s)
        most = max(most, inside)
    return most


def stream_job_ids(client: redis.Redis) -> list[str]:
    """The job id of every completion feed entry, in order."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(RESULTS_STREAM))
    return [fields["job_id"] for _, fields in entries]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` every 20 ms; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.02)
