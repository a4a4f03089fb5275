"""Jobs that reach Halo and succeed: each field by name and by id, templates, no-op updates.

Ticket 4711 of the demo seed starts New (1), SLA Standard, priority Medium (3), agent Jane Doe
(1), team Service Desk (1).
"""

from __future__ import annotations

from typing import Any

import pytest

from fakehalo import FakeHalo
from producers.jobs import Producer
from tests.integration.harness import new_job, run_job
from tests.integration.profiles import expected_changed, expected_post
from worker.models import RESULT_TICKET_KEYS

# Every test runs once per tenant profile of the fake (current, legacy, strict).
pytestmark = pytest.mark.usefixtures("halo_profile", "worker")

# (job fields, the POST body beyond the id, the record's changed_fields, result values)
FIELD_CASES: dict[str, tuple[dict[str, str], dict[str, Any], list[str], dict[str, Any]]] = {
    "summary": (
        {"summary": "Printer on 3rd floor replaced"},
        {"summary": "Printer on 3rd floor replaced"},
        ["summary"],
        {"summary": "Printer on 3rd floor replaced"},
    ),
    "details": (
        {"details": "<p>Toner replaced.</p>"},
        {"details": "<p>Toner replaced.</p>"},
        ["details"],
        {"details": "<p>Toner replaced.</p>"},
    ),
    "status by name": (
        {"status": "Closed"},
        {"status_id": 9},
        ["status_id"],
        {"status_id": 9, "status_name": "Closed"},
    ),
    "status by name in another case with spaces": (
        {"status": "  waiting on CUSTOMER "},
        {"status_id": 5},
        ["status_id"],
        {"status_id": 5, "status_name": "Waiting on Customer"},
    ),
    "status by id": (
        {"status": "9"},
        {"status_id": 9},
        ["status_id"],
        {"status_id": 9, "status_name": "Closed"},
    ),
    "priority by name within the ticket's SLA": (
        {"priority": "High"},
        {"priority_id": 2},
        ["priority_id"],
        {"priority_id": 2, "priority_name": "High"},
    ),
    "priority by id": (
        {"priority": "2"},
        {"priority_id": 2},
        ["priority_id"],
        {"priority_id": 2, "priority_name": "High"},
    ),
    "agent by name": (
        {"agent": "John Smith"},
        {"agent_id": 2},
        ["agent_id"],
        {"agent_id": 2, "agent_name": "John Smith"},
    ),
    "agent by email": (
        {"agent": "john.smith@msp.example"},
        {"agent_id": 2},
        ["agent_id"],
        {"agent_id": 2, "agent_name": "John Smith"},
    ),
    "agent by id": (
        {"agent": "2"},
        {"agent_id": 2},
        ["agent_id"],
        {"agent_id": 2, "agent_name": "John Smith"},
    ),
    "team by name": (
        {"team": "Escalations"},
        {"team": "Escalations", "team_id": 2},
        ["team", "team_id"],
        {"team_id": 2, "team_name": "Escalations"},
    ),
    "team by id": (
        {"team": "2"},
        {"team": "Escalations", "team_id": 2},
        ["team", "team_id"],
        {"team_id": 2, "team_name": "Escalations"},
    ),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_each_field_is_updated_by_name_or_id_in_one_post(
    case: str, producer: Producer, fake: FakeHalo
) -> None:
    fields, posted, changed, shown = FIELD_CASES[case]

    record = run_job(producer, new_job(**fields))

    assert record["outcome"] == "succeeded", record["error"]
    assert record["disposition"] is None
    assert record["error"] is None
    assert record["changed_fields"] == expected_changed(fake, changed)
    assert record["warnings"] == []
    [ticket] = record["result"]
    assert tuple(ticket) == RESULT_TICKET_KEYS
    assert ticket["id"] == 4711
    assert {key: ticket[key] for key in shown} == shown
    assert [post.json for post in fake.posts()] == [expected_post(fake, 4711, posted)]
    stored = fake.ticket(4711)
    assert stored is not None
    assert {key: stored[key] for key in posted} == posted
    assert fake.created_tickets() == []
    assert record["attempts"] == 1
    assert record["halo_requests"] == len(fake.requests())


def test_a_ticket_id_and_summary_rendered_from_variables_are_used_and_the_result_is_stored(
    producer: Producer, fake: FakeHalo
) -> None:
    job = new_job(
        ticket_id="{{ custom.existingTicket[0].id }}",
        summary="[Escalated] {{custom.existingTicket[0].summary}}",
        result_variable="myVariable",
        variables={"custom": {"existingTicket": [{"id": 4712, "summary": "VPN drops"}]}},
        meta={"message_id": "<abc@mail>", "rule_id": "r-17"},
    )

    record = run_job(producer, job)

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["summary"]
    assert record["result"][0]["summary"] == "[Escalated] VPN drops"
    assert record["variables"] == {"custom": {"myVariable": record["result"]}}
    assert record["meta"] == {"message_id": "<abc@mail>", "rule_id": "r-17"}
    assert [post.json for post in fake.posts()] == [
        [{"id": 4712, "summary": "[Escalated] VPN drops"}]
    ]


def test_several_fields_change_in_a_single_post(producer: Producer, fake: FakeHalo) -> None:
    job = new_job(ticket_id="4713", priority="High", team="Escalations", status="In Progress")

    record = run_job(producer, job)

    assert record["outcome"] == "succeeded", record["error"]
    # Ticket 4713 is on the Premium SLA, whose "High" is priority 6.
    assert sorted(record["changed_fields"]) == expected_changed(
        fake, ["priority_id", "status_id", "team", "team_id"]
    )
    posted = {"status_id": 2, "priority_id": 6, "team": "Escalations", "team_id": 2}
    assert [post.json for post in fake.posts()] == [expected_post(fake, 4713, posted)]
    ticket = record["result"][0]
    assert (ticket["priority_name"], ticket["team_name"], ticket["status_name"]) == (
        "High",
        "Escalations",
        "In Progress",
    )


def test_a_ticket_that_already_has_the_values_is_never_posted(
    producer: Producer, fake: FakeHalo
) -> None:
    # Ticket 4714 is already Closed, with priority Low and agent Jane Doe.
    job = new_job(ticket_id="4714", status="Closed", priority="Low", agent="Jane Doe")

    record = run_job(producer, job)

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == []
    assert record["result"][0]["status_name"] == "Closed"
    assert fake.posts() == []
    assert record["halo_requests"] == len(fake.requests())


def test_a_field_left_empty_or_rendered_empty_is_left_unchanged_with_a_warning(
    producer: Producer, fake: FakeHalo
) -> None:
    job = new_job(
        summary="",
        details=None,
        status="{{custom.status}}",
        agent="John Smith",
        variables={"custom": {"status": "  "}},
    )

    record = run_job(producer, job)

    assert record["outcome"] == "succeeded", record["error"]
    assert record["changed_fields"] == ["agent_id"]
    assert len(record["warnings"]) == 1
    assert "status" in record["warnings"][0]
    assert [post.json for post in fake.posts()] == [expected_post(fake, 4711, {"agent_id": 2})]
