"""Tokens and lookup lists cached in Redis, shared by every worker process of the fleet.

Each runtime here is a separate "process": its own HaloClients, HTTP pool and Redis client.
"""

from __future__ import annotations

import threading
from typing import Final

import redis

from fakehalo import DEMO_CLIENT_SECRET, FakeHalo
from tests.integration.budget import Fleet, Tenants, new_fake
from worker.runtime import Runtime

pytest_plugins = ["tests.integration.fixtures_budget"]

PROCESSES: Final = 4
THREADS_PER_PROCESS: Final = 5


def _token_requests(halo: FakeHalo) -> int:
    return len(halo.requests_to("POST", "/auth/token"))


def _read_everywhere(runtimes: list[Runtime], ticket_id: int) -> list[BaseException]:
    """Read a ticket from every thread of every runtime at once; the errors raised."""
    start = threading.Barrier(len(runtimes) * THREADS_PER_PROCESS)
    errors: list[BaseException] = []

    def read(runtime: Runtime) -> None:
        start.wait()
        try:
            runtime.clients.for_job("acme").get_ticket(ticket_id)
        except Exception as exc:  # noqa: BLE001 - collected, then asserted empty.
            errors.append(exc)

    threads = [
        threading.Thread(target=read, args=(runtime,))
        for runtime in runtimes
        for _ in range(THREADS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _every_value(client: redis.Redis) -> str:
    """Every key and value in the database as text, whatever the types."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        parts.append(str(key))
        kind = client.type(key)
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "list":
            parts.append(str(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(str(client.smembers(key)))
        elif kind == "zset":
            parts.append(str(client.zrange(key, 0, -1, withscores=True)))
        elif kind == "stream":
            parts.append(str(client.xrange(key)))
        else:
            parts.append(f"<{kind!r}>")
    return "\n".join(parts)


def test_two_processes_make_one_token_request_and_one_lookup_request(fleet: Fleet) -> None:
    halo = new_fake()
    tenants = Tenants(acme=halo)
    one, other = fleet(tenants), fleet(tenants)

    for runtime in (one, other):
        client = runtime.clients.for_job("acme")
        client.get_ticket(4711)
        records, _ = client.lookup("status")
        assert {r["name"] for r in records} >= {"New", "Closed"}

    assert _token_requests(halo) == 1
    assert len(halo.requests_to("GET", "/api/status")) == 1
    assert len(halo.requests_to("GET", "/api/tickets/4711")) == 2


def test_many_threads_of_many_processes_starting_cold_make_one_token_request(
    fleet: Fleet,
) -> None:
    halo = new_fake()
    tenants = Tenants(acme=halo)
    runtimes = [fleet(tenants) for _ in range(PROCESSES)]

    assert _read_everywhere(runtimes, 4711) == []

    assert _token_requests(halo) == 1
    assert len(halo.requests_to("GET", "/api/tickets/4711")) == PROCESSES * THREADS_PER_PROCESS


def test_a_token_halo_expired_is_refreshed_once_for_the_whole_fleet(fleet: Fleet) -> None:
    halo = new_fake()
    tenants = Tenants(acme=halo)
    runtimes = [fleet(tenants) for _ in range(PROCESSES)]
    runtimes[0].clients.for_job("acme").get_ticket(4711)
    assert halo.expire_tokens() == 1

    assert _read_everywhere(runtimes, 4712) == []

    assert _token_requests(halo) == 2
    assert len(set(tenants.issued_tokens)) == 2


def test_no_access_token_or_secret_is_stored_in_redis_in_the_clear(
    fleet: Fleet, budget_redis: redis.Redis
) -> None:
    halo = new_fake()
    tenants = Tenants(acme=halo)
    one, other = fleet(tenants), fleet(tenants)
    one.clients.for_job("acme").get_ticket(4711)
    other.clients.for_job("acme").get_ticket(4711)  # from the token the first one cached
    assert _token_requests(halo) == 1

    stored = _every_value(budget_redis)

    [token] = tenants.issued_tokens
    assert token not in stored
    assert DEMO_CLIENT_SECRET not in stored
