"""A tenant with rules and restrictions (the fake's `strict` profile), through a real worker.

Ticket 4720 is a Problem, whose type settings put it In Progress after any update and clear its
agent when its team changes; it starts New, agent John Smith (2), team Escalations. Ticket 4713
is a Service Request, a type that never waits on a supplier. Ticket 4711 is on the Standard
SLA; "Urgent" exists on the Premium SLA only. Ticket 4721 has no SLA. The tenant has 250 more
agents than the demo seed, and its unpaged agent list stops after the first page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakehalo import FakeHalo
from fakehalo.profiles import DEFAULT_PROFILE
from producers.jobs import Producer
from tests.integration.harness import new_job, run_job

pytestmark = pytest.mark.usefixtures("strict_tenant", "worker")


@pytest.fixture(scope="module")
def strict_tenant(fake: FakeHalo) -> Iterator[None]:
    """The fake plays the `strict` tenant for this module's tests."""
    fake.use_profile("strict")
    yield
    fake.use_profile(DEFAULT_PROFILE)


def test_a_status_halo_overrides_succeeds_with_a_warning_naming_requested_and_applied(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4720", status="Resolved"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["status_id"]  # New → In Progress, not Resolved
    assert record["warnings"] == [
        "status_id overridden by Halo: requested 8 (Resolved), applied 2 (In Progress) "
        "(a Halo rule or ticket-type setting)"
    ]
    assert record["result"][0]["status_name"] == "In Progress"
    assert [post.json for post in fake.posts()] == [[{"id": 4720, "status_id": 8}]]


def test_fields_halo_changes_as_a_side_effect_are_listed_as_changed_with_warnings(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4720", team="Service Desk"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["team", "team_id", "status_id", "agent_id"]
    assert record["warnings"] == [
        "status_id changed by Halo from 1 (New) to 2 (In Progress) although not requested "
        "(a Halo rule or ticket-type setting)",
        "agent_id changed by Halo from 2 (John Smith) to 0 (Unassigned) although not requested "
        "(a Halo rule or ticket-type setting)",
    ]
    ticket = record["result"][0]
    assert (ticket["team_name"], ticket["agent_id"], ticket["agent_name"]) == (
        "Service Desk",
        0,
        "Unassigned",
    )
    assert len(fake.posts()) == 1


def test_a_status_the_tickets_type_forbids_fails_listing_the_statuses_valid_for_it(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4713", status="waiting on supplier"))

    assert record["outcome"] == "failed"
    error = record["error"]
    assert (error["code"], error["field"], error["retryable"]) == (
        "lookup_not_found",
        "status",
        False,
    )
    assert (
        "matches no status valid for this ticket (tickets of type tickettype_id 3)"
        in (error["message"])
    )
    assert (
        "valid for this ticket: 'New', 'In Progress', 'Waiting on Customer', 'Resolved', 'Closed'"
        in error["message"]
    )
    assert fake.posts() == []
    status_reads = fake.requests_to("GET", "/api/Status")
    assert status_reads[0].query == {"tickettype_id": "3"}


def test_a_priority_of_another_sla_fails_listing_the_priorities_of_the_tickets_sla(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4711", priority="Urgent"))

    assert record["outcome"] == "failed"
    error = record["error"]
    assert (error["code"], error["field"]) == ("lookup_not_found", "priority")
    assert (
        "matches no priority valid for this ticket (the ticket's SLA, sla_id 1)"
        in (error["message"])
    )
    assert "valid for this ticket: 'Critical', 'High', 'Medium', 'Low'" in error["message"]
    assert fake.posts() == []


def test_a_ticket_with_no_sla_takes_a_priority_named_in_any_sla(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(ticket_id="4721", priority="Urgent"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["priority_id"]
    assert [post.json for post in fake.posts()] == [[{"id": 4721, "priority_id": 9}]]
    # No SLA is no `slaid` (Halo lists no priority for "slaid=0"); the list may be cached.
    assert all("slaid" not in r.query for r in fake.requests_to("GET", "/api/Priority"))


def test_an_agent_past_the_first_pages_of_a_large_tenant_is_found_by_paging(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(agent="a1249@msp.example"))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["result"][0]["agent_name"] == "Agent 1249"
    assert [post.json for post in fake.posts()] == [
        [{"id": 4711, "agent_id": 1249, "_forcereassign": True}]
    ]
    pages = [r.query.get("page_no") for r in fake.requests_to("GET", "/api/Agent")]
    # 259 agents in pages of 50 (this tenant's largest page): six reads, then stop.
    assert pages == ["1", "2", "3", "4", "5", "6"]


def test_a_reassignment_halo_refuses_fails_as_halo_rejected_naming_the_agent_field(
    producer: Producer, fake: FakeHalo
) -> None:
    # Morgan Blake works for Globex only; ticket 4711 belongs to Acme.
    record = run_job(producer, new_job(agent="Morgan Blake"))

    assert record["outcome"] == "failed"
    error = record["error"]
    assert (error["code"], error["field"], error["http_status"]) == (
        "halo_rejected",
        "agent",
        400,
    )
    assert error["message"].startswith("Halo refused to set agent on the ticket (agent_id 8)")
    assert "does not have access to client 'Acme Ltd'" in error["message"]
    assert [post.json for post in fake.posts()] == [
        [{"id": 4711, "agent_id": 8, "_forcereassign": True}]
    ]


def test_a_team_among_hundreds_is_found_in_the_whole_team_list(
    producer: Producer, fake: FakeHalo
) -> None:
    record = run_job(producer, new_job(team="Team 279"))

    assert record["outcome"] == "succeeded", record["error"]
    assert (record["result"][0]["team_id"], record["result"][0]["team_name"]) == (279, "Team 279")
    assert [post.json for post in fake.posts()] == [
        [{"id": 4711, "team": "Team 279", "team_id": 279}]
    ]
    # Halo's document gives `GET /api/Team` no paging parameters: the list comes whole.
    assert all(r.query == {} for r in fake.requests_to("GET", "/api/Team"))
