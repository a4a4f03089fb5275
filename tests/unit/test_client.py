"""`HaloClient`: reads, the update, lookups and the one request choke point, against the fake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import httpx
import pytest
from pydantic import SecretStr

from fakehalo import DEMO_CLIENT_SECRET, FakeHalo
from worker.connections import Connection
from worker.errors import (
    ErrorCode,
    HaloForbidden,
    HaloRateLimited,
    HaloRejected,
    HaloUnavailable,
    HaloUnexpectedResponse,
    TicketNotFound,
    UnknownConnection,
)
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClient, HaloClients, Rider
from worker.halo.signing import CacheSigner


class RecordingBudget:
    """A `Budget` that counts what it was asked and can refuse."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.acquired = 0
        self.observed: list[HaloRateLimited] = []

    def acquire(self, connection: Connection, riders: Sequence[Rider] = ()) -> str | None:
        if self.refuse:
            raise HaloRateLimited(f"no budget for {connection.name}", retry_after_s=3.0)
        self.acquired += 1
        for rider in riders:
            rider.write()
        return None

    def spend_prepaid(self, connection: Connection) -> str | None:
        del connection
        return None

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        del connection, grant, elapsed_s

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        del connection
        self.observed.append(error)


@pytest.fixture
def budget() -> RecordingBudget:
    return RecordingBudget()


@pytest.fixture
def budgeted(
    fake: FakeHalo, connection: Connection, budget: RecordingBudget
) -> Iterator[HaloClients]:
    made = HaloClients(
        {"acme": connection},
        transport=httpx.MockTransport(fake),
        cache=MemoryCache(),
        budget=budget,
    )
    yield made
    made.close()


def warm(client: HaloClient) -> None:
    """Fetch a token so that the requests a test counts are its own."""
    client.get_ticket(4711)
    client.requests_made = 0


# -- connections -------------------------------------------------------------------------------


def test_an_unknown_connection_lists_the_configured_ones(clients: HaloClients) -> None:
    with pytest.raises(UnknownConnection) as caught:
        clients.for_job("globex")
    assert caught.value.code is ErrorCode.UNKNOWN_CONNECTION
    assert caught.value.field == "connection"
    assert caught.value.message == (
        "connection 'globex' is not configured on the workers (configured: acme)"
    )


def test_each_job_gets_its_own_request_count(clients: HaloClients) -> None:
    first, second = clients.for_job("acme"), clients.for_job("acme")
    first.get_ticket(4711)
    assert (first.requests_made, second.requests_made) == (2, 0)


# -- reading tickets ---------------------------------------------------------------------------


def test_a_ticket_is_read_with_its_labels_and_details(fake: FakeHalo, client: HaloClient) -> None:
    ticket = client.get_ticket(4711)
    assert ticket["id"] == 4711
    assert ticket["summary"] == "Printer on 3rd floor offline"
    assert ticket["status_name"] == "New"
    assert ticket["details"]
    (read,) = fake.requests_to("GET", "/api/Tickets/4711")
    assert read.query == {"includedetails": "true", "nocache": "true"}


def test_a_missing_ticket_is_ticket_not_found(fake: FakeHalo, client: HaloClient) -> None:
    with pytest.raises(TicketNotFound) as caught:
        client.get_ticket(999999)
    error = caught.value
    assert error.code is ErrorCode.TICKET_NOT_FOUND
    assert (error.http_status, error.field, error.retryable) == (404, "ticket_id", False)
    assert error.message == "Halo has no ticket 999999 on connection 'acme'"
    assert fake.posts() == []


def test_a_read_answered_for_another_ticket_is_unexpected(
    fake: FakeHalo, client: HaloClient
) -> None:
    other = json.dumps({"id": 4712, "summary": "VPN drops every 10 minutes"})
    fake.fail_next(status=200, body=other, path="/api/tickets/4711")
    with pytest.raises(HaloUnexpectedResponse, match="answered another ticket"):
        client.get_ticket(4711)


@pytest.mark.parametrize("body", ["[]", '"text"', '{"summary": "no id"}', "null"])
def test_a_read_answered_without_a_ticket_is_unexpected(
    fake: FakeHalo, client: HaloClient, body: str
) -> None:
    fake.fail_next(status=200, body=body, path="/api/tickets/4711")
    with pytest.raises(HaloUnexpectedResponse):
        client.get_ticket(4711)


def test_a_truncated_json_answer_is_retryable_unavailable(
    fake: FakeHalo, client: HaloClient
) -> None:
    fake.fail_next(status=200, body='{"id": 4711, "summ', path="/api/tickets/4711")
    with pytest.raises(HaloUnavailable) as caught:
        client.get_ticket(4711)
    assert caught.value.retryable is True
    assert caught.value.http_status == 200
    assert "not valid JSON" in caught.value.message


def test_several_tickets_are_read_in_one_request(fake: FakeHalo, client: HaloClient) -> None:
    warm(client)
    read = client.get_tickets([4711, 999999, 4713])
    tickets = read.tickets
    assert sorted(tickets) == [4711, 4713]
    assert tickets[4713]["summary"] == "Mailbox migration for new office"
    assert "status_name" not in tickets[4711]  # list reads carry no labels
    assert (read.honoured, read.page_cap) == (True, None)
    assert client.requests_made == 1
    assert fake.requests()[-1].query["ticketids"] == "4711,999999,4713"


def test_a_list_read_pages_through_a_tenant_that_cuts_pages_short(
    fake: FakeHalo, client: HaloClient
) -> None:
    warm(client)
    fake.configure(list_page_cap=2)

    read = client.get_tickets([4711, 4712, 4713, 4714, 4715])

    assert sorted(read.tickets) == [4711, 4712, 4713, 4714, 4715]
    assert (read.honoured, read.page_cap) == (True, 2)
    pages = [r.query for r in fake.requests() if r.path_lower == "/api/tickets"]
    assert [(q["pageinate"], q["page_no"]) for q in pages] == [
        ("true", "1"),
        ("true", "2"),
        ("true", "3"),
    ]
    assert {q["page_size"] for q in pages} == {"100"}


def test_a_list_read_of_a_tenant_that_ignores_ticketids_stops_at_its_first_page(
    fake: FakeHalo, client: HaloClient
) -> None:
    warm(client)
    fake.configure(ticketids_ignored=True, list_page_cap=2)

    read = client.get_tickets([4713, 4716])

    assert read.honoured is False
    # Only tickets asked for are kept; the rest are left to single reads.
    assert set(read.tickets) <= {4713, 4716}
    assert client.requests_made == 1


# -- the update --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["object", "array", "wrapped"])
def test_an_update_answered_as_object_array_or_wrapped_gives_the_saved_ticket(
    fake: FakeHalo, client: HaloClient, shape: str
) -> None:
    fake.configure(update_answer_shape=shape)
    saved = client.update_tickets([{"id": 4711, "status_id": 9}])
    assert list(saved) == [4711]
    assert saved[4711]["status_id"] == 9
    assert saved[4711]["status_name"] == "Closed"
    assert fake.created_tickets() == []


def test_an_update_is_one_post_of_a_json_array(fake: FakeHalo, client: HaloClient) -> None:
    client.update_tickets([{"id": 4711, "summary": "New summary"}])
    (post,) = fake.posts()
    assert post.json == [{"id": 4711, "summary": "New summary"}]
    assert post.status == 201
    assert fake.ticket(4711) is not None
    assert fake.ticket(4711)["summary"] == "New summary"  # type: ignore[index]


def test_an_update_answered_for_another_id_is_unexpected(
    fake: FakeHalo, client: HaloClient
) -> None:
    fake.answer_for_other_id_next()
    with pytest.raises(HaloUnexpectedResponse) as caught:
        client.update_tickets([{"id": 4711, "summary": "x"}])
    error = caught.value
    assert error.code is ErrorCode.HALO_UNEXPECTED_RESPONSE
    assert error.retryable is False
    assert "may have gone elsewhere" in error.message


def test_an_update_answered_with_no_body_is_read_back(fake: FakeHalo, client: HaloClient) -> None:
    warm(client)
    fake.fail_next(status=201, body="", path="/api/tickets", method="POST")
    saved = client.update_tickets([{"id": 4711, "summary": "x"}])
    assert saved[4711]["id"] == 4711
    assert [(r.method, r.path_lower) for r in fake.requests()[-2:]] == [
        ("POST", "/api/tickets"),
        ("GET", "/api/tickets/4711"),
    ]
    assert client.requests_made == 2


@pytest.mark.parametrize(
    "update", [{}, {"id": 0}, {"id": None}, {"id": -3}, {"id": ""}, {"id": "abc"}]
)
def test_an_update_without_a_positive_id_is_never_sent(
    fake: FakeHalo, client: HaloClient, update: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="positive id of an existing ticket"):
        client.update_tickets([{**update, "summary": "would create a ticket"}])
    with pytest.raises(ValueError, match="positive id"):
        client.update_tickets([])
    assert fake.requests() == []
    assert fake.created_tickets() == []


def test_a_rejected_update_carries_halos_message(fake: FakeHalo, client: HaloClient) -> None:
    with pytest.raises(HaloRejected) as caught:
        client.update_tickets([{"id": 4711, "status_id": 999}])
    assert caught.value.code is ErrorCode.HALO_REJECTED
    assert caught.value.http_status == 400
    assert "status_id 999 is not a valid status." in caught.value.message


def test_a_business_rule_rejection_is_not_mistaken_for_an_expired_token(
    fake: FakeHalo, client: HaloClient
) -> None:
    warm(client)
    body = "CODE:APP03/2 Please select the CAB members to approve"
    fake.fail_next(status=400, body=body, method="POST")
    with pytest.raises(HaloRejected, match="CAB members"):
        client.update_tickets([{"id": 4711, "status_id": 9}])
    assert client.requests_made == 1


def test_a_403_is_halo_forbidden(
    fake: FakeHalo, connection: Connection, cache: MemoryCache
) -> None:
    # The API application may read tickets but not edit them.
    read_only = HaloClients(
        {"acme": replace(connection, scope="read:tickets")},
        transport=httpx.MockTransport(fake),
        cache=cache,
    )
    try:
        with pytest.raises(HaloForbidden) as caught:
            read_only.for_job("acme").update_tickets([{"id": 4711, "status_id": 9}])
    finally:
        read_only.close()
    assert caught.value.code is ErrorCode.HALO_FORBIDDEN
    assert (caught.value.http_status, caught.value.retryable) == (403, False)
    assert "edit:tickets" in caught.value.message


# -- transport failures and the deadline -------------------------------------------------------


def test_a_timeout_is_retryable_unavailable(fake: FakeHalo, client: HaloClient) -> None:
    fake.hang_next(path="/api/tickets")
    with pytest.raises(HaloUnavailable) as caught:
        client.get_ticket(4711)
    assert caught.value.retryable is True
    assert "did not answer GET /api/Tickets/4711 in time (ReadTimeout)" in caught.value.message


def test_a_connect_error_is_retryable_unavailable(fake: FakeHalo, client: HaloClient) -> None:
    fake.connect_error_next(path="/api/tickets")
    with pytest.raises(HaloUnavailable) as caught:
        client.get_ticket(4711)
    assert caught.value.retryable is True
    assert "could not reach Halo for GET /api/Tickets/4711 (ConnectError" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_retryable_unavailable(fake: FakeHalo, client: HaloClient, status: int) -> None:
    fake.fail_next(status=status, path="/api/tickets", retry_after=7)
    with pytest.raises(HaloUnavailable) as caught:
        client.get_ticket(4711)
    assert (caught.value.http_status, caught.value.retry_after_s) == (status, 7.0)


def test_a_passed_deadline_sends_nothing(fake: FakeHalo, clients: HaloClients) -> None:
    late = clients.for_job("acme", deadline_s=time.monotonic() - 1)
    with pytest.raises(HaloUnavailable, match="deadline passed before POST /auth/token"):
        late.get_ticket(4711)
    assert fake.requests() == []
    assert late.requests_made == 0


def test_a_passed_deadline_stops_an_update_before_it_is_sent(
    fake: FakeHalo, clients: HaloClients
) -> None:
    clients.for_job("acme").get_ticket(4711)
    late = clients.for_job("acme", deadline_s=time.monotonic())
    with pytest.raises(HaloUnavailable, match="deadline passed before POST /api/Tickets"):
        late.update_tickets([{"id": 4711, "summary": "too late"}])
    assert fake.posts() == []


def test_a_future_deadline_lets_requests_through(clients: HaloClients) -> None:
    job = clients.for_job("acme", deadline_s=time.monotonic() + 60)
    assert job.get_ticket(4711)["id"] == 4711


# -- rate limits and the budget ----------------------------------------------------------------


def test_a_429_is_rate_limited_and_teaches_the_budget(
    fake: FakeHalo, budgeted: HaloClients, budget: RecordingBudget
) -> None:
    job = budgeted.for_job("acme")
    warm(job)
    fake.fail_next(status=429, path="/api/tickets", retry_after=30)
    with pytest.raises(HaloRateLimited) as caught:
        job.get_ticket(4711)
    error = caught.value
    assert (error.http_status, error.retry_after_s, error.retryable) == (429, 30.0, True)
    assert error.learned_limit == (300, 300.0)
    assert budget.observed == [error]


def test_the_fakes_rolling_window_is_met_with_rate_limited(
    fake: FakeHalo, client: HaloClient
) -> None:
    fake.configure(rate_limit="3/300s")
    for _ in range(2):
        client.get_ticket(4711)  # token + 2 reads fill the window
    with pytest.raises(HaloRateLimited) as caught:
        client.get_ticket(4711)
    assert caught.value.learned_limit == (3, 300.0)


def test_every_request_takes_budget(budgeted: HaloClients, budget: RecordingBudget) -> None:
    job = budgeted.for_job("acme")
    job.get_ticket(4711)
    assert budget.acquired == job.requests_made == 2


def test_no_budget_means_no_request(
    fake: FakeHalo, budgeted: HaloClients, budget: RecordingBudget
) -> None:
    budget.refuse = True
    job = budgeted.for_job("acme")
    with pytest.raises(HaloRateLimited, match="no budget for acme"):
        job.get_ticket(4711)
    assert fake.requests() == []
    assert job.requests_made == 0


# -- lookups -----------------------------------------------------------------------------------


def test_a_lookup_list_is_cached_per_connection(fake: FakeHalo, client: HaloClient) -> None:
    warm(client)
    statuses, cached = client.lookup("status")
    assert not cached
    assert [s["name"] for s in statuses][:2] == ["New", "In Progress"]
    again, cached = client.lookup("status")
    assert cached
    assert again == statuses
    assert client.requests_made == 1


STATUS_KEY = "halo:lookup:acme:status"
# "Closed" under the id of "In Progress": what a writer of the shared cache would like it to be.
FORGED_STATUSES = json.dumps([{"id": 2, "name": "Closed"}, {"id": 9, "name": "In Progress"}])


def closed_id(records: list[dict[str, object]]) -> object:
    return next(r["id"] for r in records if r["name"] == "Closed")


@pytest.mark.parametrize(
    "stored",
    [FORGED_STATUSES, "v1.99999999999999." + "0" * 64 + "." + FORGED_STATUSES, "v1.", "garbage"],
    ids=["plain-json", "wrong-tag", "truncated", "garbage"],
)
def test_a_lookup_list_in_the_shared_cache_that_fails_its_check_is_fetched_from_halo(
    fake: FakeHalo, client: HaloClient, cache: MemoryCache, stored: str
) -> None:
    cache.set(STATUS_KEY, stored, 300)

    records, cached = client.lookup("status")

    assert not cached
    assert closed_id(records) == 9
    assert len(fake.requests_to("GET", "/api/Status")) == 1
    # The list fetched again replaces the forged entry, signed.
    replaced = cache.get(STATUS_KEY)
    assert replaced is not None
    assert replaced.startswith("v1.")


def test_a_lookup_list_signed_under_another_secret_is_fetched_from_halo(
    client: HaloClient, cache: MemoryCache, connection: Connection
) -> None:
    other = replace(connection, client_secret=SecretStr("not-the-secret"))
    signer = CacheSigner(other)
    cache.set(
        STATUS_KEY, signer.sign(STATUS_KEY, FORGED_STATUSES, expires_at_s=time.time() + 300), 300
    )

    records, cached = client.lookup("status")

    assert not cached
    assert closed_id(records) == 9


def test_a_signed_list_written_back_after_its_signed_expiry_is_fetched_from_halo(
    fake: FakeHalo, client: HaloClient, cache: MemoryCache, connection: Connection
) -> None:
    # Genuinely signed under the connection's secret, once: an old list kept and replayed.
    replayed = CacheSigner(connection).sign(
        STATUS_KEY, FORGED_STATUSES, expires_at_s=time.time() - 1
    )
    cache.set(STATUS_KEY, replayed, 300)

    records, cached = client.lookup("status")

    assert not cached
    assert closed_id(records) == 9
    assert len(fake.requests_to("GET", "/api/Status")) == 1


def test_a_signed_list_copied_under_another_key_is_fetched_from_halo(
    fake: FakeHalo, client: HaloClient, cache: MemoryCache
) -> None:
    client.lookup("team")
    team_entry = cache.get("halo:lookup:acme:team")
    assert team_entry is not None
    cache.set(STATUS_KEY, team_entry, 300)

    records, cached = client.lookup("status")

    assert not cached
    assert closed_id(records) == 9


def test_a_lookup_list_that_fails_its_check_is_logged_once_per_key(
    clients: HaloClients,
    connection: Connection,
    cache: MemoryCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache.set(STATUS_KEY, FORGED_STATUSES, 300)
    cache.set("halo:lookup:acme:team", FORGED_STATUSES, 300)

    with caplog.at_level("WARNING", logger="halo.client"):
        for _ in range(3):
            assert clients.shared(connection, STATUS_KEY) is None
        assert clients.shared(connection, "halo:lookup:acme:team") is None

    warned = [r for r in caplog.records if "signature check" in r.getMessage()]
    assert [getattr(r, "cache_key", None) for r in warned] == [
        STATUS_KEY,
        "halo:lookup:acme:team",
    ]
    assert all(DEMO_CLIENT_SECRET not in r.getMessage() for r in caplog.records)


def test_a_fresh_lookup_skips_the_cache(fake: FakeHalo, client: HaloClient) -> None:
    client.lookup("status")
    client.lookup("status", fresh=True)
    assert len(fake.requests_to("GET", "/api/Status")) == 2


def test_priorities_are_listed_and_cached_per_sla(fake: FakeHalo, client: HaloClient) -> None:
    standard, _ = client.lookup("priority", sla_id=1)
    premium, _ = client.lookup("priority", sla_id=2)
    assert {p["priorityid"] for p in standard} == {1, 2, 3, 4}
    assert {p["priorityid"] for p in premium} == {5, 6, 7, 8}
    assert [r.query for r in fake.requests_to("GET", "/api/Priority")] == [
        {"slaid": "1"},
        {"slaid": "2"},
    ]
    assert client.lookup("priority", sla_id=2) == (premium, True)


@pytest.mark.parametrize("kind", ["status", "priority", "agent", "team"])
def test_wrapped_lookup_answers_are_unwrapped(
    fake: FakeHalo, client: HaloClient, kind: str
) -> None:
    fake.configure(wrapped_lookups=True)
    records, _ = client.lookup(kind, sla_id=1)  # type: ignore[arg-type]
    assert records
    assert all("name" in record for record in records)


def test_requests_carry_the_bearer_token_and_name_the_worker(
    fake: FakeHalo, connection: Connection
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake(request)

    named = HaloClients({"acme": connection}, transport=httpx.MockTransport(handler))
    try:
        named.for_job("acme").get_ticket(4711)
    finally:
        named.close()
    token_request, read = seen
    assert "authorization" not in token_request.headers
    assert read.headers["authorization"].startswith("Bearer ")
    assert all(r.headers["user-agent"].startswith("halo-update-worker/") for r in seen)
    assert read.url.host == "acme.halo.test"


def test_a_priority_list_without_an_sla_sends_no_slaid(fake: FakeHalo, client: HaloClient) -> None:
    records, _ = client.lookup("priority", sla_id=None)
    assert {p["priorityid"] for p in records} == set(range(1, 9))
    assert fake.requests_to("GET", "/api/Priority")[0].query == {}
