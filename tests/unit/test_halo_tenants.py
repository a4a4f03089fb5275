"""How the client copes with tenants that differ: the fake's profiles and options, one at a time.

Each test names the profile (or option) of the fake Halo that shows the behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.connections import Connection
from worker.errors import HaloAuthFailed, LookupNotFound
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClients
from worker.halo.fake import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, FakeHalo
from worker.halo.fake.profiles import PROFILES
from worker.halo.fake.seeds import LARGE_TENANT_AGENTS
from worker.models import parse_job
from worker.update import run_update


def clients_for(fake: FakeHalo, connection: Connection) -> HaloClients:
    return HaloClients(
        {"acme": connection}, transport=httpx.MockTransport(fake), cache=MemoryCache()
    )


@pytest.fixture
def make_clients(connection: Connection) -> Iterator[Any]:
    made: list[HaloClients] = []

    def make(fake: FakeHalo) -> HaloClients:
        made.append(clients_for(fake, connection))
        return made[-1]

    yield make
    for clients in made:
        clients.close()


def token_requests(fake: FakeHalo) -> int:
    return len(fake.requests_to("POST", "/auth/token"))


def test_a_401_on_a_fresh_token_is_one_refresh_then_a_permission_error_and_no_loop(
    make_clients: Any,
) -> None:
    # Option resource_401: the API application's agent may not do this, whatever the token.
    fake = FakeHalo(resource_401=True)
    clients = make_clients(fake)
    job = parse_job({"connection": "acme", "ticket_id": "4711", "status": "Closed"})
    errors = []
    for _ in range(3):
        with pytest.raises(HaloAuthFailed) as caught:
            run_update(job, clients.for_job("acme"))
        errors.append(caught.value)
    # The first job's token and its one refresh; later jobs ask for no token at all.
    assert token_requests(fake) == 2
    assert len(fake.requests_to("GET", "/api/Tickets")) == 4
    message = errors[0].message
    assert "connection 'acme'" in message
    assert "'read:tickets'" in message
    assert "permission, not an expired token" in message
    assert [e.message for e in errors[1:]] == [message, message]


def test_a_401_after_the_permission_is_granted_refreshes_again_when_the_token_expires(
    make_clients: Any,
) -> None:
    fake = FakeHalo(resource_401=True)
    clients = make_clients(fake)
    job = parse_job({"connection": "acme", "ticket_id": "4711", "status": "Closed"})
    with pytest.raises(HaloAuthFailed):
        run_update(job, clients.for_job("acme"))
    fake.configure(resource_401=False)
    assert run_update(job, clients.for_job("acme")).changed_fields == ["status_id"]
    fake.expire_tokens()
    assert run_update(job, clients.for_job("acme")).changed_fields == []
    assert token_requests(fake) == 3


@pytest.mark.parametrize(
    ("paging", "reads"),
    [("honoured", 3), ("ignored", 1), ("first_page_only", 2)],
)
def test_agent_lists_are_paged_and_reading_stops_when_a_tenant_does_not_page(
    make_clients: Any, paging: str, reads: int
) -> None:
    # Option agent_paging ("ignored" is the legacy profile's), on a large tenant.
    fake = FakeHalo(large_tenant=True, agent_paging=paging)
    client = make_clients(fake).for_job("acme")
    records, _ = client.lookup("agent")
    assert len(fake.requests_to("GET", "/api/Agent")) == reads
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids))
    if paging == "first_page_only":
        assert len(ids) == 100  # all this tenant ever shows; no loop
    else:
        assert len(ids) == 9 + LARGE_TENANT_AGENTS  # the seed's 7, Unassigned, Morgan, 250
        assert {0, 8, 1249} <= set(ids)


def test_the_fake_refuses_query_parameters_halos_document_does_not_list(
    make_clients: Any,
) -> None:
    fake = FakeHalo()
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="https://h") as http:
        form = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET, "scope": "all"}  # fmt: skip
        token = http.post("/auth/token", data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        listed = http.get("/api/Tickets", params={"ticketids": "4711", "includedetails": "true"},
                          headers=headers)  # fmt: skip
        agents = http.get("/api/Agent", params={"includeunassigned": "true"}, headers=headers)
    assert listed.status_code == 400
    assert "includedetails" in listed.text
    assert agents.status_code == 200


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_takes_team_id_only_where_its_schema_has_it(profile: str) -> None:
    fake = FakeHalo(profile=profile)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="https://h") as http:
        form = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET, "scope": "all"}  # fmt: skip
        token = http.post("/auth/token", data=form).json()["access_token"]
        answer = http.post(
            "/api/Tickets",
            json=[{"id": 4711, "team": "Escalations", "team_id": 2}],
            headers={"Authorization": f"Bearer {token}"},
        )
        ticket = http.get("/api/Tickets/4712", headers={"Authorization": f"Bearer {token}"})
    newer = profile != "legacy"
    assert answer.status_code == (201 if newer else 400)
    assert ("team_id" in ticket.json()) is newer
    if not newer:
        assert "Could not find member 'team_id'" in answer.text


@pytest.mark.parametrize("profile", PROFILES)
def test_a_team_change_sends_team_id_only_to_a_tenant_whose_tickets_carry_it(
    make_clients: Any, profile: str
) -> None:
    fake = FakeHalo(profile=profile)
    job = parse_job({"connection": "acme", "ticket_id": "4711", "team": "Escalations"})
    updated = run_update(job, make_clients(fake).for_job("acme"))
    [post] = fake.posts()
    assert post.status == 201
    expected = {"id": 4711, "team": "Escalations", "team_id": 2}
    if profile == "legacy":
        del expected["team_id"]
    assert post.json == [expected]
    assert updated.ticket["team_id"] == 2


@pytest.mark.parametrize("whole_list_cached", [False, True])
def test_a_status_the_tickets_type_forbids_lists_the_valid_ones_without_an_extra_read(
    make_clients: Any, whole_list_cached: bool
) -> None:
    # Profile strict: Service Requests (ticket 4713) never wait on a supplier.
    fake = FakeHalo(profile="strict")
    clients = make_clients(fake)
    if whole_list_cached:
        clients.for_job("acme").lookup("status")
    reads_before = len(fake.requests_to("GET", "/api/Status"))
    job = parse_job({"connection": "acme", "ticket_id": "4713", "status": "Waiting on Supplier"})
    with pytest.raises(LookupNotFound) as caught:
        run_update(job, clients.for_job("acme"))
    assert caught.value.field == "status"
    message = caught.value.message
    assert message.startswith(
        "status 'Waiting on Supplier' matches no status valid for this ticket "
        "(tickets of type tickettype_id 3); "
    )
    assert message.endswith(
        "valid for this ticket: 'New', 'In Progress', 'Waiting on Customer', 'Resolved', 'Closed'"
    )
    assert ("'Waiting on Supplier' exists in Halo, but not for this ticket" in message) is (
        whole_list_cached
    )
    # One read of the type's statuses; the whole list is only used when already at hand.
    assert len(fake.requests_to("GET", "/api/Status")) - reads_before == 1
    assert fake.posts() == []


def test_an_answer_without_the_fields_sent_is_checked_by_reading_the_ticket_back(
    make_clients: Any,
) -> None:
    # Profile strict (ticket 4720 is put In Progress after any update), answering ids only.
    fake = FakeHalo(profile="strict", update_answer_id_only=True)
    job = parse_job({"connection": "acme", "ticket_id": "4720", "status": "Resolved"})
    updated = run_update(job, make_clients(fake).for_job("acme"))
    assert updated.changed_fields == ["status_id"]
    assert updated.warnings == [
        "status_id overridden by Halo: requested 8 (Resolved), applied 2 (In Progress) "
        "(a Halo rule or ticket-type setting)"
    ]
    assert updated.ticket["status_name"] == "In Progress"
    reads = [r.method for r in fake.requests() if r.path.lower().startswith("/api/tickets")]
    assert reads == ["GET", "POST", "GET"]
