"""The update itself (no Celery): render, check the id, read, resolve, diff, POST, shape.

Every FACTS trap is exercised against the fake Halo, whose request log shows what was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakehalo import FakeHalo
from fakehalo.schema import load_faults_schema, type_error
from worker.connections import Connection
from worker.errors import (
    ErrorCode,
    HaloRejected,
    HaloUnavailable,
    InvalidTicketId,
    LookupAmbiguous,
    LookupNotFound,
    TemplateError,
    TicketNotFound,
)
from worker.halo.cache import MemoryCache
from worker.halo.client import HaloClient, HaloClients, Rider
from worker.halo.lookups import LookupKind
from worker.models import MAX_JOB_BYTES, MAX_RENDERED_CHARS, RESULT_TICKET_KEYS, Job, parse_job
from worker.update import (
    MAX_TICKET_ID,
    Updated,
    apply_plan,
    parse_ticket_id,
    plan_update,
    render_job,
    run_update,
    settle_unconfirmed,
)

LABELS = ("status_name", "priority_name", "agent_name", "client_name", "site_name", "user_name")


def job(**fields: Any) -> Job:
    """A job for the `acme` connection; `ticket_id` defaults to 4711."""
    return parse_job({"connection": "acme", "ticket_id": "4711", **fields})


def run(clients: HaloClients, **fields: Any) -> tuple[Updated, HaloClient]:
    client = clients.for_job("acme")
    return run_update(job(**fields), client), client


def warm(clients: HaloClients) -> None:
    """Fill the token and every lookup cache, as a busy worker has them."""
    client = clients.for_job("acme")
    kinds: tuple[LookupKind, ...] = ("status", "agent", "team")
    for kind in kinds:
        client.lookup(kind)
    for tickettype_id in (1, 3):  # statuses are resolved among those the ticket's type allows
        client.lookup("status", tickettype_id=tickettype_id)
    for sla_id in (1, 2):
        client.lookup("priority", sla_id=sla_id)


def fails(clients: HaloClients, error: type[Exception], **fields: Any) -> Any:
    with pytest.raises(error) as caught:
        run(clients, **fields)
    return caught.value


class Journal:
    """A `WriteJournal` in memory: what a crashed run of the same job noted."""

    def __init__(self) -> None:
        self.noted: list[str] | None = None

    def recall(self) -> list[str] | None:
        return self.noted

    def note(self, changed_fields: list[str]) -> None:
        self.noted = list(changed_fields)

    def rider(self, changed_fields: list[str]) -> Rider | None:
        del changed_fields
        return None  # noted at once, with `note`


class LabelStripper:
    """A transport handler in front of the fake whose ticket answers lack `*_name` labels,
    as some Halo builds and list reads answer."""

    def __init__(self, fake: FakeHalo, *, reads_too: bool = False) -> None:
        self.fake = fake
        self.reads_too = reads_too

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.fake(request)
        is_ticket = request.url.path.lower().startswith("/api/tickets")
        if not is_ticket or (request.method == "GET" and not self.reads_too):
            return response
        body = response.json() if response.status_code < 300 else None
        if isinstance(body, dict):
            return httpx.Response(response.status_code, json=strip(body))
        if isinstance(body, list):
            return httpx.Response(response.status_code, json=[strip(t) for t in body])
        return response


def assert_faults_schema(body: Any) -> None:
    """A POST body is an array of objects whose keys and types Halo's `Faults` schema knows
    (`team_id` is absent from the published schema; newer builds accept it as an integer)."""
    properties = load_faults_schema()["properties"]
    extra = {"team_id": {"type": "integer", "format": "int32"}}
    assert isinstance(body, list)
    for element in body:
        assert isinstance(element, dict)
        for key, value in element.items():
            prop = properties.get(key) or extra.get(key)
            assert prop is not None, f"{key} is not a Faults field"
            assert type_error(value, prop) is None, f"{key}: {type_error(value, prop)}"


def strip(ticket: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in ticket.items() if key not in LABELS}


@pytest.fixture
def stripped(fake: FakeHalo, connection: Connection, cache: MemoryCache) -> Iterator[HaloClients]:
    made = HaloClients(
        {"acme": connection}, transport=httpx.MockTransport(LabelStripper(fake)), cache=cache
    )
    yield made
    made.close()


# -- the ticket id: never a request for a bad one ---------------------------------------------


@pytest.mark.parametrize(
    "ticket_id",
    ["0", "", "   ", "-3", "12.5", "abc", "4711abc", "+5", "1e3", "0x10", "٣", "4 711",
     "99999999999", str(MAX_TICKET_ID + 1), "9" * 500],
)  # fmt: skip
def test_a_bad_ticket_id_fails_before_any_request(
    fake: FakeHalo, clients: HaloClients, ticket_id: str
) -> None:
    error = fails(clients, InvalidTicketId, ticket_id=ticket_id, status="Closed")
    assert error.code is ErrorCode.INVALID_TICKET_ID
    assert error.field == "ticket_id"
    assert error.retryable is False
    assert fake.requests() == []


@pytest.mark.parametrize("value", [0, -3, 12.5, "abc", None, True, [4711], {"id": 4711}])
def test_a_ticket_id_rendered_from_a_bad_variable_never_reaches_halo(
    fake: FakeHalo, clients: HaloClients, value: Any
) -> None:
    fails(
        clients,
        InvalidTicketId,
        ticket_id="{{custom.ticket.id}}",
        summary="x",
        variables={"custom": {"ticket": {"id": value}}},
    )
    assert fake.requests() == []


def test_a_bad_ticket_id_message_quotes_what_it_rendered_to(clients: HaloClients) -> None:
    error = fails(clients, InvalidTicketId, ticket_id="12.5")
    assert error.message == "ticket_id rendered to '12.5', which is not a positive whole number"
    error = fails(clients, InvalidTicketId, ticket_id="99999999999")
    assert error.message == "ticket_id 99999999999 is larger than any Halo ticket id (2147483647)"


def test_a_long_bad_ticket_id_is_shortened_in_the_message(clients: HaloClients) -> None:
    error = fails(clients, InvalidTicketId, ticket_id="x" * 1000)
    assert len(error.message) < 120


@pytest.mark.parametrize(("text", "expected"), [("  42 ", 42), ("\t7\n", 7), ("007", 7)])
def test_a_ticket_id_may_have_surrounding_whitespace(text: str, expected: int) -> None:
    assert parse_ticket_id(text) == expected


def test_a_padded_ticket_id_updates_that_ticket(fake: FakeHalo, clients: HaloClients) -> None:
    fake.add_ticket(id=42, summary="Old", team="Service Desk")
    updated, _ = run(clients, ticket_id="  42 ", summary="New")
    assert updated.ticket["id"] == 42
    assert [p.json for p in fake.posts()] == [[{"id": 42, "summary": "New"}]]


def test_an_integer_ticket_id_from_the_variables_is_used(
    fake: FakeHalo, clients: HaloClients
) -> None:
    updated, _ = run(
        clients,
        ticket_id="{{custom.ticket.id}}",
        status="Closed",
        variables={"custom": {"ticket": {"id": 4711}}},
    )
    assert updated.ticket["id"] == 4711


# -- failing before Halo is written ------------------------------------------------------------


def test_a_missing_ticket_is_never_posted(fake: FakeHalo, clients: HaloClients) -> None:
    error = fails(
        clients, TicketNotFound, ticket_id="999999", summary="x", status="Closed", team="Projects"
    )
    assert error.code is ErrorCode.TICKET_NOT_FOUND
    assert fake.posts() == []
    assert fake.created_tickets() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"ticket_id": "{{custom.missing}}"},
        {"summary": "[Escalated] {{custom.existingTicket[0].summary}}"},
        {"status": "{{ custom.ticket.status"},
        {"team": "{{email.team}}"},
    ],
)
def test_a_template_error_comes_before_any_request(
    fake: FakeHalo, clients: HaloClients, fields: dict[str, str]
) -> None:
    variables: dict[str, Any] = {"custom": {"existingTicket": []}, "email": {}}
    error = fails(clients, TemplateError, variables=variables, **fields)
    assert error.code is ErrorCode.TEMPLATE_ERROR
    assert fake.requests() == []


def test_an_unknown_name_lists_the_closest_and_writes_nothing(
    fake: FakeHalo, clients: HaloClients
) -> None:
    error = fails(clients, LookupNotFound, summary="changed", status="Clossed")
    assert error.code is ErrorCode.LOOKUP_NOT_FOUND
    assert error.field == "status"
    assert "closest: 'Closed'" in error.message
    assert fake.posts() == []


def test_an_ambiguous_name_writes_nothing(fake: FakeHalo, clients: HaloClients) -> None:
    error = fails(clients, LookupAmbiguous, agent="Sam Lee")
    assert error.code is ErrorCode.LOOKUP_AMBIGUOUS
    assert "ids 3, 4" in error.message
    assert fake.posts() == []


def test_a_name_differing_only_in_case_from_another_is_ambiguous(clients: HaloClients) -> None:
    fails(clients, LookupAmbiguous, agent="Chris Park")


def test_a_rejected_update_keeps_halos_message(fake: FakeHalo, clients: HaloClients) -> None:
    fake.fail_next(
        status=400,
        body="CODE:APP03/2 Please select the CAB members to approve",
        path="/api/tickets",
        method="POST",
    )
    error = fails(clients, HaloRejected, status="Closed")
    assert "CODE:APP03/2 Please select the CAB members to approve" in error.message


# -- each field, by name and by id -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "posted", "labels"),
    [
        ({"summary": "New summary"}, {"summary": "New summary"}, {}),
        ({"details": "<p>More</p>"}, {"details": "<p>More</p>"}, {}),
        ({"status": "Closed"}, {"status_id": 9}, {"status_id": 9, "status_name": "Closed"}),
        ({"status": " closed "}, {"status_id": 9}, {"status_name": "Closed"}),
        ({"status": "9"}, {"status_id": 9}, {"status_name": "Closed"}),
        ({"status": 9}, {"status_id": 9}, {"status_name": "Closed"}),
        ({"priority": "High"}, {"priority_id": 2}, {"priority_id": 2, "priority_name": "High"}),
        ({"priority": "2"}, {"priority_id": 2}, {"priority_name": "High"}),
        ({"agent": "John Smith"}, {"agent_id": 2}, {"agent_id": 2, "agent_name": "John Smith"}),
        ({"agent": "JOHN.SMITH@msp.example"}, {"agent_id": 2}, {"agent_name": "John Smith"}),
        ({"agent": "2"}, {"agent_id": 2}, {"agent_name": "John Smith"}),
        ({"team": "Escalations"}, {"team": "Escalations", "team_id": 2},
         {"team_id": 2, "team_name": "Escalations"}),
        ({"team": "escalations"}, {"team": "Escalations", "team_id": 2},
         {"team_name": "Escalations"}),
        ({"team": "2"}, {"team": "Escalations", "team_id": 2}, {"team_name": "Escalations"}),
    ],
)  # fmt: skip
def test_each_field_is_written_by_name_or_id(
    fake: FakeHalo,
    clients: HaloClients,
    fields: dict[str, Any],
    posted: dict[str, Any],
    labels: dict[str, Any],
) -> None:
    updated, _ = run(clients, **fields)
    (post,) = fake.posts()
    # An agent change says the reassignment is meant (docs/halo.md, "Writes Halo changes").
    flags = {"_forcereassign": True} if "agent_id" in posted else {}
    assert post.json == [{"id": 4711, **posted, **flags}]
    assert post.status == 201  # the fake validated the body against Halo's Faults schema
    assert_faults_schema(post.json)
    assert updated.changed_fields == list(posted)
    for key, value in {**posted, **labels}.items():
        if key in updated.ticket:
            assert updated.ticket[key] == value
    assert fake.created_tickets() == []


def test_priority_high_is_written_as_the_tickets_slas_priorityid(
    fake: FakeHalo, clients: HaloClients
) -> None:
    standard, _ = run(clients, ticket_id="4711", priority="High")
    premium, _ = run(clients, ticket_id="4713", priority="High")
    assert [p.json for p in fake.posts()] == [
        [{"id": 4711, "priority_id": 2}],
        [{"id": 4713, "priority_id": 6}],
    ]
    assert (standard.ticket["priority_id"], standard.ticket["priority_name"]) == (2, "High")
    assert (premium.ticket["priority_id"], premium.ticket["priority_name"]) == (6, "High")
    assert [r.query.get("slaid") for r in fake.requests_to("GET", "/api/Priority")] == ["1", "2"]


def test_a_priority_id_of_another_sla_is_not_found(fake: FakeHalo, clients: HaloClients) -> None:
    error = fails(clients, LookupNotFound, ticket_id="4713", priority="2")
    assert "priority id 2 is not a Halo priority of SLA 2" in error.message
    assert fake.posts() == []


def test_every_field_at_once_is_one_post(fake: FakeHalo, clients: HaloClients) -> None:
    updated, _ = run(
        clients,
        summary="[Escalated] {{custom.subject}}",
        details="{{custom.subject}} (from email)",
        status="In Progress",
        priority="Critical",
        agent="priya.patel@msp.example",
        team="Escalations",
        variables={"custom": {"subject": "Printer"}},
    )
    (post,) = fake.posts()
    assert post.status == 201
    assert_faults_schema(post.json)
    assert post.json == [
        {
            "id": 4711,
            "summary": "[Escalated] Printer",
            "details": "Printer (from email)",
            "status_id": 2,
            "priority_id": 1,
            "agent_id": 7,
            "team": "Escalations",
            "team_id": 2,
            "_forcereassign": True,
        }
    ]
    assert post.status == 201
    assert updated.changed_fields == [
        "summary", "details", "status_id", "priority_id", "agent_id", "team", "team_id",
    ]  # fmt: skip
    stored = fake.ticket(4711)
    assert stored is not None
    assert (stored["status_id"], stored["agent_id"], stored["team"]) == (2, 7, "Escalations")


# -- only what changes -------------------------------------------------------------------------


def test_the_post_holds_only_the_id_and_the_changed_fields(
    fake: FakeHalo, clients: HaloClients
) -> None:
    # Status and team are already as asked; only the agent changes.
    updated, _ = run(clients, status="New", team="Service Desk", agent="John Smith")
    assert [p.json for p in fake.posts()] == [[{"id": 4711, "agent_id": 2, "_forcereassign": True}]]
    assert updated.changed_fields == ["agent_id"]


def test_nothing_to_change_means_no_post_and_one_request_with_warm_caches(
    fake: FakeHalo, clients: HaloClients
) -> None:
    warm(clients)
    updated, client = run(
        clients,
        summary="Printer on 3rd floor offline",
        status="new",
        priority="Medium",
        agent="jane@msp.example",
        team="Service Desk",
    )
    assert fake.posts() == []
    assert updated.changed_fields == []
    assert client.requests_made == 1
    assert updated.ticket["status_name"] == "New"


def test_a_changing_job_makes_two_requests_with_warm_caches(
    fake: FakeHalo, clients: HaloClients
) -> None:
    warm(clients)
    updated, client = run(clients, status="Closed", priority="Low", agent="2", team="Projects")
    assert client.requests_made == 2
    assert [(r.method, r.path_lower) for r in fake.requests()[-2:]] == [
        ("GET", "/api/tickets/4711"),
        ("POST", "/api/tickets"),
    ]
    assert updated.changed_fields == ["status_id", "priority_id", "agent_id", "team", "team_id"]


def test_a_cold_job_counts_its_token_and_lookup_requests(
    fake: FakeHalo, clients: HaloClients
) -> None:
    _, client = run(clients, status="Closed")
    # token, ticket, status list, POST
    assert client.requests_made == 4 == len(fake.requests())


def test_running_the_same_job_twice_posts_once(fake: FakeHalo, clients: HaloClients) -> None:
    first, _ = run(clients, status="Closed", summary="Done")
    second, _ = run(clients, status="Closed", summary="Done")
    assert len(fake.posts()) == 1
    assert (first.changed_fields, second.changed_fields) == (["summary", "status_id"], [])
    assert first.ticket == second.ticket


def test_text_fields_are_compared_exactly(fake: FakeHalo, clients: HaloClients) -> None:
    updated, _ = run(clients, summary=" Printer on 3rd floor offline")
    assert updated.changed_fields == ["summary"]
    assert fake.posts()[0].json == [{"id": 4711, "summary": " Printer on 3rd floor offline"}]


# -- the team trap -----------------------------------------------------------------------------


def test_the_team_is_written_by_name_with_team_id_when_tickets_carry_it(
    fake: FakeHalo, clients: HaloClients
) -> None:
    run(clients, team="Projects")
    assert fake.posts()[0].json == [{"id": 4711, "team": "Projects", "team_id": 3}]


def test_the_team_is_written_by_name_only_when_tickets_lack_team_id(
    fake: FakeHalo, clients: HaloClients
) -> None:
    fake.configure(tickets_have_team_id=False)
    updated, _ = run(clients, team="projects")
    (post,) = fake.posts()
    assert post.json == [{"id": 4711, "team": "Projects"}]
    assert post.status == 201
    assert updated.changed_fields == ["team"]
    # The result still carries team_id, from the Team list.
    assert (updated.ticket["team_id"], updated.ticket["team_name"]) == (3, "Projects")


def test_without_team_id_an_unchanged_team_result_gets_its_id_from_the_team_list(
    fake: FakeHalo, clients: HaloClients
) -> None:
    fake.configure(tickets_have_team_id=False)
    updated, _ = run(clients, status="Closed")
    assert (updated.ticket["team_id"], updated.ticket["team_name"]) == (1, "Service Desk")


def test_a_ticket_without_a_team_gets_one(fake: FakeHalo, clients: HaloClients) -> None:
    updated, _ = run(clients, ticket_id="4716", team="Escalations")
    assert fake.posts()[0].json == [{"id": 4716, "team": "Escalations", "team_id": 2}]
    assert updated.ticket["team_name"] == "Escalations"


# -- the result --------------------------------------------------------------------------------


def test_the_result_has_exactly_the_twenty_contract_keys(
    fake: FakeHalo, clients: HaloClients
) -> None:
    updated, _ = run(clients, status="Closed", team="Escalations")
    assert list(updated.ticket) == list(RESULT_TICKET_KEYS)
    assert len(updated.ticket) == 20
    stored = fake.ticket(4711)
    assert stored is not None
    assert updated.ticket["team_name"] == stored["team"] == "Escalations"
    assert updated.ticket["datelastupdated"] == stored["last_update"]
    assert updated.ticket["datelastupdated"] != "2026-11-20T09:40:12.000"  # the update moved it
    assert updated.ticket == {
        "id": 4711,
        "summary": "Printer on 3rd floor offline",
        "details": "<p>Printer on 3rd floor offline. Reported by phone.</p>",
        "client_id": 12,
        "client_name": "Acme Ltd",
        "user_id": 101,
        "user_name": "Alice Walker",
        "site_id": 31,
        "site_name": "Head Office",
        "tickettype_id": 1,
        "status_id": 9,
        "status_name": "Closed",
        "priority_id": 3,
        "priority_name": "Medium",
        "agent_id": 1,
        "agent_name": "Jane Doe",
        "team_id": 2,
        "team_name": "Escalations",
        "datecreated": "2026-11-20T09:15:00.000",
        "datelastupdated": stored["last_update"],
    }


def test_an_unchanged_ticket_result_comes_from_the_read(clients: HaloClients) -> None:
    updated, _ = run(clients, status="New")
    assert updated.ticket["datelastupdated"] == "2026-11-20T09:40:12.000"
    assert updated.ticket["team_name"] == "Service Desk"


def test_names_the_update_answer_lacks_are_filled_from_the_lookups(
    fake: FakeHalo, stripped: HaloClients
) -> None:
    updated, _ = run(stripped, status="Closed", priority="High", agent="John Smith")
    assert updated.ticket["status_name"] == "Closed"
    assert updated.ticket["priority_name"] == "High"
    assert updated.ticket["agent_name"] == "John Smith"
    # Labels the update did not touch come from the ticket as read.
    assert updated.ticket["client_name"] == "Acme Ltd"


def test_names_no_answer_carries_are_looked_up(fake: FakeHalo, connection: Connection) -> None:
    handler = LabelStripper(fake, reads_too=True)
    bare = HaloClients({"acme": connection}, transport=httpx.MockTransport(handler))
    try:
        updated, _ = run(bare, ticket_id="4713", summary="New")
    finally:
        bare.close()
    assert updated.ticket["status_name"] == "New"
    assert updated.ticket["priority_name"] == "Medium"  # priorityid 7 under SLA 2
    assert updated.ticket["agent_name"] == "Chris Park"
    assert updated.ticket["client_name"] is None  # no lookup exists for clients


# -- empty renderings --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", None])
def test_a_field_rendering_empty_is_left_unchanged_with_a_warning(
    fake: FakeHalo, clients: HaloClients, value: Any
) -> None:
    updated, _ = run(
        clients,
        summary="{{custom.value}}",
        status="{{custom.value}}",
        agent="John Smith",
        variables={"custom": {"value": value}},
    )
    assert fake.posts()[0].json == [{"id": 4711, "agent_id": 2, "_forcereassign": True}]
    assert updated.warnings == [
        "summary: rendered empty, so it was left unchanged",
        "status: rendered empty, so it was left unchanged",
    ]
    assert updated.ticket["summary"] == "Printer on 3rd floor offline"


def test_absent_null_and_empty_fields_leave_the_ticket_alone_silently(
    fake: FakeHalo, clients: HaloClients
) -> None:
    updated, _ = run(clients, summary=None, details="", status=None)
    assert fake.posts() == []
    assert updated.warnings == []
    assert updated.changed_fields == []


# -- the write journal -------------------------------------------------------------------------


def test_the_journal_notes_a_post_before_it_is_sent(fake: FakeHalo, clients: HaloClients) -> None:
    journal = Journal()
    fake.fail_next(status=503, path="/api/tickets", method="POST")
    with pytest.raises(HaloUnavailable):
        run_update(job(status="Closed"), clients.for_job("acme"), journal=journal)
    assert journal.noted == ["status_id"]


def test_a_rerun_after_a_lost_record_reports_the_journals_changes_without_posting(
    fake: FakeHalo, clients: HaloClients
) -> None:
    journal = Journal()
    the_job = job(status="Closed", team="Escalations")
    first = run_update(the_job, clients.for_job("acme"), journal=journal)
    assert journal.noted == first.changed_fields == ["status_id", "team", "team_id"]
    # The worker died before the record was written; the job runs again.
    again = run_update(the_job, clients.for_job("acme"), journal=journal)
    assert len(fake.posts()) == 1
    assert again.changed_fields == ["status_id", "team", "team_id"]
    assert again.ticket == first.ticket


def test_a_rerun_whose_post_was_lost_in_flight_sends_it_again(
    fake: FakeHalo, clients: HaloClients
) -> None:
    journal = Journal()
    fake.connect_error_next(path="/api/tickets", method="POST")
    with pytest.raises(HaloUnavailable):
        run_update(job(status="Closed"), clients.for_job("acme"), journal=journal)
    again = run_update(job(status="Closed"), clients.for_job("acme"), journal=journal)
    assert again.changed_fields == ["status_id"]
    assert [p.status for p in fake.posts()] == [None, 201]


class RidingJournal(Journal):
    """A journal whose note goes with the POST's budget grant, as the worker's Redis journal's
    does; it remembers how many POSTs the fake had seen when the note was written."""

    def __init__(self, fake: FakeHalo) -> None:
        super().__init__()
        self.fake = fake
        self.posts_when_noted: int | None = None

    def rider(self, changed_fields: list[str]) -> Rider | None:
        return _Note(self, changed_fields)


class _Note:
    def __init__(self, journal: RidingJournal, changed_fields: list[str]) -> None:
        self.journal, self.changed_fields = journal, changed_fields

    def write(self) -> None:
        self.journal.note(self.changed_fields)
        self.journal.posts_when_noted = len(self.journal.fake.posts())


def test_a_note_that_rides_with_the_budget_grant_is_written_before_the_post(
    fake: FakeHalo, clients: HaloClients
) -> None:
    journal = RidingJournal(fake)
    warm(clients)
    updated = run_update(job(status="Closed"), clients.for_job("acme"), journal=journal)
    assert journal.noted == updated.changed_fields == ["status_id"]
    assert journal.posts_when_noted == 0
    assert len(fake.posts()) == 1


def test_an_unchanged_job_without_a_journal_entry_reports_no_changes(
    fake: FakeHalo, clients: HaloClients
) -> None:
    updated = run_update(job(status="New"), clients.for_job("acme"), journal=Journal())
    assert updated.changed_fields == []


# -- the pieces: render, plan, apply -----------------------------------------------------------


def test_rendering_does_no_io_and_trims_lookup_names_not_texts() -> None:
    rendered = render_job(
        job(summary="  Keep  ", status="  Closed  ", team="{{custom.team}}",
            variables={"custom": {"team": " Escalations "}})
    )  # fmt: skip
    assert rendered.ticket_id == 4711
    assert rendered.values == {"summary": "  Keep  ", "status": "Closed", "team": "Escalations"}
    assert rendered.warnings == []


def test_details_may_quote_an_email_body_as_large_as_a_whole_job() -> None:
    body = "b" * (MAX_JOB_BYTES - 1_000)  # the rest of the job's bytes are its other keys
    rendered = render_job(
        job(details="Original message:\n{{email.body}}", variables={"email": {"body": body}})
    )
    assert rendered.values["details"] == "Original message:\n" + body


@pytest.mark.parametrize("name", ["ticket_id", "summary", "details", "status", "agent", "team"])
def test_each_field_rendering_past_its_cap_fails_naming_the_field_before_any_request(
    fake: FakeHalo, clients: HaloClients, name: str
) -> None:
    cap = MAX_RENDERED_CHARS[name]
    variables = {"custom": {"big": "7" * (cap // 4 + 1)}}
    fields = {name: "{{custom.big}}" * 4}
    if name == "ticket_id":
        fields["status"] = "Closed"
    error = fails(clients, TemplateError, variables=variables, **fields)
    assert error.field == name
    assert error.message.startswith(f"{name}: renders to {4 * (cap // 4 + 1):,} characters")
    assert f"the limit of {cap:,} for this field" in error.message
    assert fake.requests() == []


def test_a_plan_is_the_exact_update_and_writes_nothing(
    fake: FakeHalo, clients: HaloClients
) -> None:
    plan = plan_update(job(status="Closed", agent="Jane Doe"), clients.for_job("acme"))
    assert plan.payload == {"id": 4711, "status_id": 9}
    assert plan.changed_fields == ["status_id"]
    assert plan.resolved["agent"].id == 1
    assert fake.posts() == []


def test_a_plan_can_use_a_ticket_already_read(fake: FakeHalo, clients: HaloClients) -> None:
    client = clients.for_job("acme")
    ticket = client.get_ticket(4711)
    before = len(fake.requests())
    plan = plan_update(job(summary="Batch"), client, ticket=ticket)
    assert plan.payload == {"id": 4711, "summary": "Batch"}
    assert len(fake.requests()) == before


def test_applying_with_a_saved_answer_posts_nothing_more(
    fake: FakeHalo, clients: HaloClients
) -> None:
    client = clients.for_job("acme")
    plan = plan_update(job(status="Closed"), client)
    saved = client.update_tickets([plan.payload])[4711]
    updated = apply_plan(plan, client, saved=saved)
    assert len(fake.posts()) == 1
    assert updated.ticket["status_name"] == "Closed"
    assert updated.changed_fields == ["status_id"]


def test_an_unconfirmed_post_that_halo_applied_is_settled_without_posting_again(
    fake: FakeHalo, clients: HaloClients
) -> None:
    client = clients.for_job("acme")
    wanted = job(summary="Applied by the batch", status="Closed")
    plan = plan_update(wanted, client)
    client.update_tickets([plan.payload])  # the batch's POST, whose answer left 4711 out
    journal = Journal()

    settled = settle_unconfirmed(plan, wanted, render_job(wanted), client, journal)

    assert len(fake.posts()) == 1
    assert settled.changed_fields == ["summary", "status_id"]
    assert settled.ticket["status_name"] == "Closed"
    assert journal.noted is None


def test_an_unconfirmed_post_posts_only_the_fields_halo_does_not_hold_once(
    fake: FakeHalo, clients: HaloClients
) -> None:
    client = clients.for_job("acme")
    wanted = job(summary="Half applied", status="Closed")
    plan = plan_update(wanted, client)
    # Halo saved the summary but not the status (as if it dropped part of the element).
    client.update_tickets([{"id": 4711, "summary": "Half applied"}])
    journal = Journal()

    settled = settle_unconfirmed(plan, wanted, render_job(wanted), client, journal)

    assert [p.json for p in fake.posts()][1:] == [[{"id": 4711, "status_id": 9}]]
    assert settled.changed_fields == ["summary", "status_id"]
    assert journal.noted == ["summary", "status_id"]
    assert (fake.ticket(4711) or {})["status_id"] == 9


def test_fields_the_update_answer_omits_show_the_values_written(
    fake: FakeHalo, connection: Connection
) -> None:
    def partial(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        if request.method == "POST" and request.url.path == "/api/Tickets":
            saved = response.json()
            for key in ("details", "status_id", "status_name", "team", "team_id"):
                saved.pop(key)
            return httpx.Response(201, json=saved)
        return response

    terse = HaloClients({"acme": connection}, transport=httpx.MockTransport(partial))
    try:
        updated, _ = run(terse, details="<p>New</p>", status="Closed", team="Projects")
    finally:
        terse.close()
    assert updated.ticket["details"] == "<p>New</p>"
    assert (updated.ticket["status_id"], updated.ticket["status_name"]) == (9, "Closed")
    assert (updated.ticket["team_id"], updated.ticket["team_name"]) == (3, "Projects")


def test_a_ticket_field_of_non_ascii_digits_is_not_an_id_and_crashes_nothing(
    clients: HaloClients,
) -> None:
    client = clients.for_job("acme")
    ticket = {**client.get_ticket(4711), "sla_id": "²"}  # str.isdigit() is true; int() refuses

    # No SLA to scope by: "High" is then a priority of both SLAs, which is ambiguous, not a bug.
    with pytest.raises(LookupAmbiguous):
        plan_update(job(priority="High"), client, ticket=ticket)
