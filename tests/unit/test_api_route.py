"""A 404 means "no such ticket" only where Halo's API is known to answer at the url.

Two hosts behind one MockTransport: `acme.halo.test` is the fake tenant, and
`portal.halo.test` is a web server that is not Halo's API (every path 404s, as every path does
when a connection's url leads to the wrong place). A connection at the portal takes its tokens
from the tenant, so its reads reach the portal with a valid token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from worker.connections import Connection
from worker.errors import ErrorCode, HaloUnavailable, NoHaloApi, TicketNotFound
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClients
from worker.halo.fake import FakeHalo
from worker.halo.route import MISSING_TTL_S, ApiRoutes

PORTAL = "https://portal.halo.test"


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        return self.now_s


class Hosts:
    """Routes `acme.halo.test` to the fake, anything else to a server that 404s every path;
    notes each request as ``"<host> <METHOD> <path>"``."""

    def __init__(self, fake: FakeHalo) -> None:
        self.fake = fake
        self.sent: list[str] = []
        self.portal_is_halo = False  # set: the portal passes requests on to the tenant

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.url.host} {request.method} {request.url.path}")
        if request.url.host == "acme.halo.test" or self.portal_is_halo:
            return self.fake(request)
        return httpx.Response(404, text="<html><body>Not Found</body></html>")

    def api_reads(self) -> list[str]:
        return [line for line in self.sent if " /api/" in line]


@pytest.fixture
def hosts(fake: FakeHalo) -> Hosts:
    return Hosts(fake)


@pytest.fixture
def portal(connection: Connection) -> Connection:
    """A connection whose url leads to the portal, with the tenant's authorisation server."""
    return replace(connection, name="portal", url=PORTAL)


def process(hosts: Hosts, cache: MemoryCache, *connections: Connection) -> HaloClients:
    """One worker process's clients; processes that share `cache` are one fleet."""
    return HaloClients(
        {c.name: c for c in connections}, transport=httpx.MockTransport(hosts), cache=cache
    )


@pytest.fixture
def fleet_cache() -> MemoryCache:
    return MemoryCache()


@pytest.fixture
def worker(
    hosts: Hosts, fleet_cache: MemoryCache, connection: Connection, portal: Connection
) -> Iterator[HaloClients]:
    made = process(hosts, fleet_cache, connection, portal)
    yield made
    made.close()


def test_a_404_on_a_ticket_is_ticket_not_found_once_the_status_list_answered_at_the_url(
    hosts: Hosts, worker: HaloClients
) -> None:
    with pytest.raises(TicketNotFound):
        worker.for_job("acme").get_ticket(999999)

    assert hosts.api_reads() == [
        "acme.halo.test GET /api/Tickets/999999",
        "acme.halo.test GET /api/Status",
    ]
    # Known now: the next missing ticket costs its read and nothing more.
    job = worker.for_job("acme")
    with pytest.raises(TicketNotFound):
        job.get_ticket(999998)
    assert job.requests_made == 1


def test_a_url_that_is_not_halos_api_fails_reads_naming_the_url_never_ticket_not_found(
    hosts: Hosts, worker: HaloClients, fake: FakeHalo
) -> None:
    job = worker.for_job("portal")
    with pytest.raises(NoHaloApi) as caught:
        job.get_ticket(4711)

    error = caught.value
    assert error.code is ErrorCode.HALO_UNEXPECTED_RESPONSE
    assert (error.http_status, error.retryable, error.field) == (404, False, None)
    assert error.message.startswith(
        f"connection 'portal': Halo's API is not at url {PORTAL}: GET {PORTAL}/api/Status "
        "answered 404"
    )
    assert "Resource Server URL" in error.message
    assert hosts.api_reads() == [
        "portal.halo.test GET /api/Tickets/4711",
        "portal.halo.test GET /api/Status",
    ]
    assert job.requests_made == 3  # the token, the read, the check

    # Every later job on the connection fails at once, without a request; a batch read too.
    later = worker.for_job("portal")
    with pytest.raises(NoHaloApi):
        later.get_ticket(4712)
    with pytest.raises(NoHaloApi):
        later.get_tickets([4712, 4713])
    assert later.requests_made == 0
    assert len(hosts.api_reads()) == 2
    assert fake.posts() == []


def test_a_batch_read_answered_404_is_the_wrong_url_not_missing_tickets(
    hosts: Hosts, worker: HaloClients
) -> None:
    with pytest.raises(NoHaloApi):
        worker.for_job("portal").get_tickets([4711, 4712])


def test_the_fleet_shares_the_verdict_so_another_process_sends_nothing(
    hosts: Hosts, fleet_cache: MemoryCache, worker: HaloClients, portal: Connection
) -> None:
    with pytest.raises(NoHaloApi):
        worker.for_job("portal").get_ticket(4711)
    sent = len(hosts.sent)

    other = process(hosts, fleet_cache, portal)
    job = other.for_job("portal")
    with pytest.raises(NoHaloApi):
        job.get_ticket(4711)
    assert (job.requests_made, len(hosts.sent)) == (0, sent)

    # The same name at a corrected url is not judged by the old url's verdict.
    fixed = process(hosts, fleet_cache, replace(portal, url="https://acme.halo.test"))
    assert fixed.for_job("portal").get_ticket(4711)["id"] == 4711


def test_a_successful_read_proves_the_route_so_a_later_404_needs_no_check(
    hosts: Hosts, worker: HaloClients
) -> None:
    assert worker.for_job("acme").get_ticket(4711)["id"] == 4711
    with pytest.raises(TicketNotFound):
        worker.for_job("acme").get_ticket(999999)
    assert "acme.halo.test GET /api/Status" not in hosts.sent


def test_a_403_on_the_status_list_proves_the_endpoint_is_there(
    hosts: Hosts, worker: HaloClients, fake: FakeHalo
) -> None:
    fake.fail_next(status=403, body="Access is denied", path="/api/Status")
    with pytest.raises(TicketNotFound):
        worker.for_job("acme").get_ticket(999999)
    assert hosts.api_reads()[-1] == "acme.halo.test GET /api/Status"


def test_a_check_halo_cannot_answer_now_is_retried_and_decides_nothing(
    hosts: Hosts, worker: HaloClients, fake: FakeHalo
) -> None:
    fake.fail_next(status=503, path="/api/Status")
    with pytest.raises(HaloUnavailable) as caught:
        worker.for_job("acme").get_ticket(999999)
    assert caught.value.retryable is True

    with pytest.raises(TicketNotFound):
        worker.for_job("acme").get_ticket(999999)
    assert hosts.api_reads().count("acme.halo.test GET /api/Status") == 2


def test_a_wrong_url_verdict_lapses_so_a_fix_behind_the_same_url_is_seen(
    hosts: Hosts, fleet_cache: MemoryCache, worker: HaloClients
) -> None:
    clock = ManualClock()
    worker.routes = ApiRoutes(fleet_cache, clock=clock)
    with pytest.raises(NoHaloApi):
        worker.for_job("portal").get_ticket(4711)

    hosts.portal_is_halo = True  # e.g. the proxy in front of Halo was corrected
    clock.now_s += MISSING_TTL_S - 1
    with pytest.raises(NoHaloApi):
        worker.for_job("portal").get_ticket(4711)
    clock.now_s += 2
    assert worker.for_job("portal").get_ticket(4711)["id"] == 4711
