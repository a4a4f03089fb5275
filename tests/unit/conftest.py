"""Unit fixtures: a fake Halo behind `httpx.MockTransport`, and the clients that talk to it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from worker.connections import Connection
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClient, HaloClients
from worker.halo.fake import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo
from worker.ratelimit import RateLimit


@pytest.fixture
def connection() -> Connection:
    """The `acme` connection, holding the fake's demo credentials."""
    return Connection(
        name="acme",
        url="https://acme.halo.test",
        auth_url="https://acme.halo.test/auth",
        tenant=None,
        client_id=DEMO_CLIENT_ID,
        client_secret=SecretStr(DEMO_CLIENT_SECRET),
        scope="all",
        rate_limit=RateLimit(300, 300.0),
    )


@pytest.fixture
def fake() -> FakeHalo:
    """A fake Halo tenant with the demo seed (tickets 4711-4716, two SLAs)."""
    return FakeHalo()


@pytest.fixture
def cache() -> MemoryCache:
    """The process cache the clients keep tokens and lookup lists in."""
    return MemoryCache()


@pytest.fixture
def clients(fake: FakeHalo, cache: MemoryCache, connection: Connection) -> Iterator[HaloClients]:
    """The process's Halo clients, wired to the fake through a MockTransport."""
    made = HaloClients({"acme": connection}, transport=httpx.MockTransport(fake), cache=cache)
    yield made
    made.close()


@pytest.fixture
def client(clients: HaloClients) -> HaloClient:
    """One job's client for the `acme` connection."""
    return clients.for_job("acme")
