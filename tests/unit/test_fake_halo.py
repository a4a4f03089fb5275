"""The fake Halo behaves like Halo's API, traps included, in-process and over a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.halo.fake import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    FakeHalo,
    RateLimit,
    serve_in_thread,
)
from worker.halo.fake.schema import NOT_IN_2024_09, QUERY_FILE, SCHEMA_FILE, load_faults_schema
from worker.halo.fake.schema_extract import (
    dump_extract,
    dump_query_params,
    extract_faults_schema,
    extract_query_params,
)
from worker.halo.fake.server import main

BASE_URL = "https://acme.halopsa.example"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The part of Halo's OpenAPI document the worker touches, kept in the repository
# (tests/fixtures/README.md).
HALO_OPENAPI = REPO_ROOT / "tests" / "fixtures" / "halo" / "openapi-subset.json"


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeHalo:
    return FakeHalo(clock=clock)


@pytest.fixture
def client(fake: FakeHalo) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        yield http


def get_token(client: httpx.Client, scope: str = "all", secret: str = DEMO_CLIENT_SECRET) -> str:
    answer = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": secret,
            "scope": scope,
        },
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def bearer(client: httpx.Client, scope: str = "all") -> dict[str, str]:
    return {"Authorization": f"Bearer {get_token(client, scope)}"}


def stored(fake: FakeHalo, ticket_id: int) -> dict[str, Any]:
    ticket = fake.ticket(ticket_id)
    assert ticket is not None, f"ticket {ticket_id} is not stored"
    return ticket


def post_tickets(client: httpx.Client, headers: dict[str, str], body: Any) -> httpx.Response:
    return client.post("/api/Tickets", headers=headers, json=body)


# -- the Faults schema extract ------------------------------------------------------------------


def test_faults_extract_matches_halo_openapi() -> None:
    openapi = json.loads(HALO_OPENAPI.read_text(encoding="utf-8"))
    shipped = (REPO_ROOT / "worker" / "halo" / "fake" / SCHEMA_FILE).read_text(encoding="utf-8")
    assert dump_extract(extract_faults_schema(openapi)) == shipped


def test_query_parameter_extract_matches_halo_openapi() -> None:
    openapi = json.loads(HALO_OPENAPI.read_text(encoding="utf-8"))
    shipped = (REPO_ROOT / "worker" / "halo" / "fake" / QUERY_FILE).read_text(encoding="utf-8")
    assert dump_query_params(extract_query_params(openapi)) == shipped


def test_faults_extract_follows_the_newer_schema_and_knows_what_2024_09_lacked() -> None:
    properties = load_faults_schema()["properties"]
    assert properties["id"] == {"type": "integer", "format": "int32", "nullable": False}
    assert properties["team"]["type"] == "string"
    assert properties["team_id"]["type"] == "integer"
    assert "team_id" in NOT_IN_2024_09
    assert "datelastupdated" not in properties
    assert properties["last_update"]["format"] == "date-time"


# -- authentication ---------------------------------------------------------------------------


def test_authinfo_needs_no_token_and_names_the_auth_url(client: httpx.Client) -> None:
    answer = client.get("/api/authinfo")
    assert answer.status_code == 200
    assert answer.json() == {"auth_url": f"{BASE_URL}/auth", "tenant_id": "demo"}


def test_token_request_returns_a_bearer_token_with_expires_in(client: httpx.Client) -> None:
    answer = client.post(
        "/auth/token?tenant=acme",
        data={
            "grant_type": "client_credentials",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "scope": "all",
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "all"
    assert isinstance(body["access_token"], str)
    assert len(body["access_token"]) > 20


def test_token_ttl_is_configurable(clock: ManualClock) -> None:
    fake = FakeHalo(clock=clock, token_ttl_s=60)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        answer = http.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
            },
        )
    assert answer.json()["expires_in"] == 60


def test_bad_credentials_are_refused_with_invalid_client(client: httpx.Client) -> None:
    answer = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": "wrong",
        },
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.json()["error_description"]


def test_other_grant_types_are_refused(client: httpx.Client) -> None:
    answer = client.post("/auth/token", data={"grant_type": "password"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_configured_clients_replace_the_demo_pair() -> None:
    fake = FakeHalo(clients={"acme-app": "s3cret"})
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        form = {"grant_type": "client_credentials", "client_id": "acme-app"}
        assert http.post("/auth/token", data={**form, "client_secret": "s3cret"}).status_code == 200
        demo = {**form, "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
        assert http.post("/auth/token", data=demo).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_api_call_without_a_valid_token_is_401(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    assert client.get("/api/Tickets/4711", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        # A url set to the Resource Server URL (.../api), with auth_url left to its default.
        ("POST", "/api/auth/token"),
        # The same url with auth_url set as Halo shows it: every resource path doubles /api.
        ("GET", "/api/api/Tickets/4711"),
        ("GET", "/api/api/Status"),
        ("POST", "/api/api/Tickets"),
        ("GET", "/api/NoSuchEndpoint"),
    ],
)
def test_a_path_halo_has_no_endpoint_for_is_404_with_or_without_a_token(
    client: httpx.Client, method: str, path: str
) -> None:
    form = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID}
    for headers in ({}, bearer(client)):
        answer = client.request(method, path, headers=headers, data=form)
        assert answer.status_code == 404, (path, headers.keys())


def test_token_past_its_expires_in_is_refused_with_401(
    client: httpx.Client, clock: ManualClock
) -> None:
    headers = bearer(client)
    clock.advance(3599)
    assert client.get("/api/Tickets/4711", headers=headers).status_code == 200
    clock.advance(1)
    answer = client.get("/api/Tickets/4711", headers=headers)
    assert answer.status_code == 401
    assert "invalid_token" in answer.headers["WWW-Authenticate"]


def test_expired_token_can_be_answered_with_400_mentioning_the_token(clock: ManualClock) -> None:
    fake = FakeHalo(clock=clock, expired_token_status=400)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        headers = bearer(http)
        fake.expire_tokens()
        answer = http.get("/api/Tickets/4711", headers=headers)
    assert answer.status_code == 400
    assert "token has expired" in answer.json()["Message"]


def test_expired_token_status_can_alternate(fake: FakeHalo, client: httpx.Client) -> None:
    fake.configure(expired_token_status="alternate")
    headers = bearer(client)
    fake.expire_tokens()
    statuses = [client.get("/api/Status", headers=headers).status_code for _ in range(4)]
    assert statuses == [400, 401, 400, 401]


def test_expire_tokens_expires_every_issued_token_but_new_ones_work(
    fake: FakeHalo, client: httpx.Client
) -> None:
    first, second = bearer(client), bearer(client)
    assert fake.expire_tokens() == 2
    assert client.get("/api/Status", headers=first).status_code == 401
    assert client.get("/api/Status", headers=second).status_code == 401
    assert client.get("/api/Status", headers=bearer(client)).status_code == 200


def test_token_without_edit_tickets_cannot_post_but_can_read(client: httpx.Client) -> None:
    reader = bearer(client, scope="read:tickets")
    assert client.get("/api/Tickets/4711", headers=reader).status_code == 200
    answer = post_tickets(client, reader, [{"id": 4711, "summary": "x"}])
    assert answer.status_code == 403
    assert "edit:tickets" in answer.text


def test_token_with_edit_tickets_can_read_and_post(client: httpx.Client) -> None:
    editor = bearer(client, scope="edit:tickets")
    assert client.get("/api/Tickets/4711", headers=editor).status_code == 200
    assert post_tickets(client, editor, [{"id": 4711, "summary": "x"}]).status_code == 201


def test_token_without_ticket_scopes_cannot_read_tickets(client: httpx.Client) -> None:
    other = bearer(client, scope="read:customers")
    assert client.get("/api/Tickets/4711", headers=other).status_code == 403
    assert client.get("/api/Status", headers=other).status_code == 200


def test_paths_are_case_insensitive(client: httpx.Client) -> None:
    headers = bearer(client)
    for path in ("/api/tickets/4711", "/API/Tickets/4711", "/api/TICKETS/4711/"):
        assert client.get(path, headers=headers).json()["id"] == 4711
    assert client.get("/api/STATUS", headers=headers).status_code == 200
    assert client.post("/Auth/Token", data={"grant_type": "x"}).status_code == 400


# -- reading tickets ----------------------------------------------------------------------------


def test_single_read_returns_one_unwrapped_ticket_with_labels(client: httpx.Client) -> None:
    answer = client.get(
        "/api/Tickets/4711?includedetails=true&nocache=true", headers=bearer(client)
    )
    assert answer.status_code == 200
    ticket = answer.json()
    assert ticket["id"] == 4711
    assert ticket["summary"] == "Printer on 3rd floor offline"
    assert ticket["status_name"] == "New"
    assert ticket["priority_name"] == "Medium"
    assert ticket["agent_name"] == "Jane Doe"
    assert ticket["client_name"] == "Acme Ltd"
    assert ticket["site_name"] == "Head Office"
    assert ticket["user_name"] == "Alice Walker"
    assert ticket["team"] == "Service Desk"
    assert ticket["team_id"] == 1
    assert ticket["sla_id"] == 1
    for key in ("details", "tickettype_id", "datecreated", "last_update", "lastactiondate"):
        assert key in ticket
    assert "datelastupdated" not in ticket
    assert "team_name" not in ticket


def test_unknown_ticket_is_404_with_a_non_json_body(client: httpx.Client) -> None:
    answer = client.get("/api/Tickets/999999", headers=bearer(client))
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)


def test_tickets_carry_no_team_id_when_playing_an_older_build() -> None:
    fake = FakeHalo(tickets_have_team_id=False)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        headers = bearer(http)
        single = http.get("/api/Tickets/4711", headers=headers).json()
        listed = http.get("/api/Tickets?ticketids=4711", headers=headers).json()["tickets"][0]
        rejected = post_tickets(http, headers, [{"id": 4711, "team_id": 2}])
    assert "team_id" not in single
    assert "team_id" not in listed
    assert rejected.status_code == 400
    assert "team_id" in rejected.text


def test_list_read_returns_only_named_tickets_without_labels(client: httpx.Client) -> None:
    answer = client.get("/api/Tickets?ticketids=4711,999999,4713", headers=bearer(client))
    assert answer.status_code == 200
    body = answer.json()
    assert body["record_count"] == 2
    assert [t["id"] for t in body["tickets"]] == [4711, 4713]
    for ticket in body["tickets"]:
        assert not [key for key in ticket if key.endswith("_name")]
        assert "team" in ticket
        assert "status_id" in ticket


def test_list_read_pages_with_halos_spelling(client: httpx.Client) -> None:
    headers = bearer(client)
    answer = client.get("/api/Tickets?pageinate=true&page_size=2&page_no=2", headers=headers)
    body = answer.json()
    assert body["record_count"] == 6
    assert [t["id"] for t in body["tickets"]] == [4713, 4714]


def test_a_tenant_can_ignore_ticketids_and_answer_every_ticket(
    fake: FakeHalo, client: httpx.Client
) -> None:
    fake.configure(ticketids_ignored=True)
    body = client.get("/api/Tickets?ticketids=4713", headers=bearer(client)).json()
    assert body["record_count"] == 6
    assert [t["id"] for t in body["tickets"]] == [4711, 4712, 4713, 4714, 4715, 4716]


def test_a_tenant_can_cap_its_list_pages_below_the_size_asked(
    fake: FakeHalo, client: httpx.Client
) -> None:
    fake.configure(list_page_cap=2)
    headers = bearer(client)
    ids = "ticketids=4711,4712,4713,4714,4715"
    pages = [
        client.get(f"/api/Tickets?{ids}&pageinate=true&page_size=100&page_no={n}", headers=headers)
        for n in (1, 2, 3)
    ]
    assert [[t["id"] for t in p.json()["tickets"]] for p in pages] == [
        [4711, 4712],
        [4713, 4714],
        [4715],
    ]
    assert {p.json()["record_count"] for p in pages} == {5}
    unpaged = client.get(f"/api/Tickets?{ids}", headers=headers).json()
    assert len(unpaged["tickets"]) == 2
    with pytest.raises(ValueError, match="list_page_cap"):
        fake.configure(list_page_cap=0)


# -- updating tickets: POST /api/Tickets with an array -------------------------------------------


def test_post_with_id_merges_fields_and_bumps_last_update(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    before = client.get("/api/Tickets/4711", headers=headers).json()
    answer = post_tickets(client, headers, [{"id": 4711, "status_id": 9}])
    assert answer.status_code == 201
    saved = answer.json()
    assert saved["id"] == 4711
    assert saved["status_id"] == 9
    assert saved["status_name"] == "Closed"
    assert saved["summary"] == before["summary"]
    assert saved["agent_id"] == before["agent_id"]
    assert saved["last_update"] > before["last_update"]
    assert saved["datecreated"] == before["datecreated"]
    assert fake.created_tickets() == []


def test_two_quick_updates_still_give_a_newer_last_update() -> None:
    moment = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    fake = FakeHalo(wall_clock=lambda: moment)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        headers = bearer(http)
        first = post_tickets(http, headers, [{"id": 4711, "summary": "a"}]).json()
        second = post_tickets(http, headers, [{"id": 4711, "summary": "b"}]).json()
    assert first["last_update"] == "2026-11-29T12:00:00.000"
    assert second["last_update"] > first["last_update"]


def test_post_recomputes_labels_for_status_priority_agent_and_team(client: httpx.Client) -> None:
    body = [
        {
            "id": 4712,
            "status_id": 5,
            "priority_id": 1,
            "agent_id": 3,
            "team": "Escalations",
            "_forcereassign": True,
        }
    ]
    saved = post_tickets(client, bearer(client), body).json()
    assert saved["status_name"] == "Waiting on Customer"
    assert saved["priority_name"] == "Critical"
    assert saved["agent_name"] == "Sam Lee"
    assert saved["team"] == "Escalations"
    assert saved["team_id"] == 2


def test_post_ignores_read_only_labels(client: httpx.Client) -> None:
    saved = post_tickets(client, bearer(client), [{"id": 4711, "status_name": "Closed"}]).json()
    assert saved["status_id"] == 1
    assert saved["status_name"] == "New"


def test_post_without_id_creates_a_ticket(fake: FakeHalo, client: httpx.Client) -> None:
    answer = post_tickets(client, bearer(client), [{"summary": "Oops"}])
    assert answer.status_code == 201
    new_id = answer.json()["id"]
    assert new_id not in (4711, 4712)
    [created] = fake.created_tickets()
    assert created.ticket_id == new_id
    assert created.requested_id is None
    assert created.fields["summary"] == "Oops"
    assert fake.posts()[-1].created_ticket_ids == (new_id,)
    assert fake.ticket(new_id) is not None


@pytest.mark.parametrize("blank_id", [0, None])
def test_post_with_a_zero_or_null_id_creates_a_ticket(
    fake: FakeHalo, client: httpx.Client, blank_id: int | None
) -> None:
    answer = post_tickets(client, bearer(client), [{"id": blank_id, "summary": "Oops"}])
    assert answer.status_code == 201
    assert [c.requested_id for c in fake.created_tickets()] == [blank_id]


def test_post_with_an_unknown_id_creates_a_ticket_with_a_new_id(
    fake: FakeHalo, client: httpx.Client
) -> None:
    answer = post_tickets(client, bearer(client), [{"id": 999999, "summary": "Oops"}])
    assert answer.status_code == 201
    assert answer.json()["id"] != 999999
    [created] = fake.created_tickets()
    assert created.requested_id == 999999
    assert fake.ticket(999999) is None


@pytest.mark.parametrize(
    "body",
    [{"id": 4711}, "4711", 4711],
    ids=["object", "string", "number"],
)
def test_post_body_must_be_an_array(client: httpx.Client, body: Any) -> None:
    answer = post_tickets(client, bearer(client), body)
    assert answer.status_code == 400
    assert "List" in answer.text


def test_post_with_unknown_key_is_400_naming_the_key(client: httpx.Client) -> None:
    answer = post_tickets(client, bearer(client), [{"id": 4711, "datelastupdated": "x"}])
    assert answer.status_code == 400
    assert "datelastupdated" in answer.text


@pytest.mark.parametrize(
    ("key", "value"),
    [("status_id", "9"), ("status_id", True), ("summary", 5), ("status_id", 2**31), ("tags", {})],
)
def test_post_with_wrong_json_type_is_400_naming_the_key(
    client: httpx.Client, key: str, value: Any
) -> None:
    answer = post_tickets(client, bearer(client), [{"id": 4711, key: value}])
    assert answer.status_code == 400
    assert key in answer.text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"status_id": 77}, "status_id"),
        ({"agent_id": 99}, "agent_id"),
        ({"team": "Nonexistent"}, "team"),
        ({"team": "escalations"}, "team"),
        ({"team_id": 42}, "team_id"),
        ({"team": "Escalations", "team_id": 3}, "team_id"),
        ({"sla_id": 9}, "sla_id"),
    ],
)
def test_business_rule_breaches_are_400_in_plain_text(
    client: httpx.Client, change: dict[str, Any], named: str
) -> None:
    answer = post_tickets(client, bearer(client), [{"id": 4711, **change}])
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert named in answer.text


def test_priority_must_be_a_priorityid_of_the_tickets_sla(client: httpx.Client) -> None:
    headers = bearer(client)
    # "High" is priorityid 2 under SLA 1 (ticket 4711) and 6 under SLA 2 (ticket 4713).
    assert post_tickets(client, headers, [{"id": 4711, "priority_id": 6}]).status_code == 400
    assert post_tickets(client, headers, [{"id": 4713, "priority_id": 2}]).status_code == 400
    high_1 = post_tickets(client, headers, [{"id": 4711, "priority_id": 2}]).json()
    high_2 = post_tickets(client, headers, [{"id": 4713, "priority_id": 6}]).json()
    assert high_1["priority_name"] == high_2["priority_name"] == "High"


def test_team_id_alone_sets_the_team_name(client: httpx.Client) -> None:
    saved = post_tickets(client, bearer(client), [{"id": 4711, "team_id": 3}]).json()
    assert (saved["team"], saved["team_id"]) == ("Projects", 3)


def test_a_rejected_post_changes_no_ticket(fake: FakeHalo, client: httpx.Client) -> None:
    body = [{"id": 4711, "summary": "changed"}, {"id": 4712, "status_id": 77}]
    assert post_tickets(client, bearer(client), body).status_code == 400
    assert fake.ticket(4711) == FakeHalo().ticket(4711)


@pytest.mark.parametrize(
    ("shape", "one", "two"),
    [
        ("object", dict, list),
        ("array", list, list),
        ("wrapped", dict, dict),
        ("first", dict, dict),
    ],
)
def test_update_answer_shape_is_configurable(
    fake: FakeHalo, client: httpx.Client, shape: str, one: type[Any], two: type[Any]
) -> None:
    fake.configure(update_answer_shape=shape)
    headers = bearer(client)
    single = post_tickets(client, headers, [{"id": 4711, "summary": "a"}]).json()
    double = post_tickets(client, headers, [{"id": 4711}, {"id": 4712}]).json()
    assert isinstance(single, one)
    assert isinstance(double, two)
    if shape == "wrapped":
        assert [t["id"] for t in double["tickets"]] == [4711, 4712]
        assert single["tickets"][0]["id"] == 4711
    if shape == "first":
        # The first ticket alone, though both were saved.
        assert double["id"] == 4711


def test_answer_for_other_id_fault_answers_another_id_but_saves(
    fake: FakeHalo, client: httpx.Client
) -> None:
    fake.answer_for_other_id_next()
    headers = bearer(client)
    answer = post_tickets(client, headers, [{"id": 4711, "summary": "saved"}])
    assert answer.status_code == 201
    assert answer.json()["id"] != 4711
    assert stored(fake, 4711)["summary"] == "saved"
    assert fake.posts()[-1].fault == "answer_for_other_id"
    again = post_tickets(client, headers, [{"id": 4711, "summary": "again"}])
    assert again.json()["id"] == 4711


# -- lookups ------------------------------------------------------------------------------------


def test_status_list_is_a_plain_array_with_non_contiguous_ids(client: httpx.Client) -> None:
    statuses = client.get("/api/Status", headers=bearer(client)).json()
    by_name = {s["name"]: s["id"] for s in statuses}
    assert by_name["New"] == 1
    assert by_name["In Progress"] == 2
    assert by_name["Closed"] == 9
    assert "Waiting on Customer" in by_name
    assert sorted(by_name.values()) != list(range(1, len(by_name) + 1))


def test_priorities_exist_per_sla_with_guid_ids(client: httpx.Client) -> None:
    headers = bearer(client)
    standard = client.get("/api/Priority?slaid=1", headers=headers).json()
    premium = client.get("/api/Priority?slaid=2", headers=headers).json()
    high_1 = next(p for p in standard if p["name"] == "High")
    high_2 = next(p for p in premium if p["name"] == "High")
    assert (high_1["priorityid"], high_1["slaid"]) == (2, 1)
    assert (high_2["priorityid"], high_2["slaid"]) == (6, 2)
    assert isinstance(high_1["id"], str)
    assert len(high_1["id"]) == 36
    assert high_1["id"] != high_2["id"]
    assert {p["name"] for p in standard} == {"Critical", "High", "Medium", "Low"}


def test_agent_list_has_jane_and_names_that_collide(client: httpx.Client) -> None:
    agents = client.get("/api/Agent", headers=bearer(client)).json()
    assert {"id": 1, "name": "Jane Doe", "email": "jane@msp.example"}.items() <= agents[0].items()
    names = [a["name"] for a in agents]
    assert names.count("Sam Lee") == 2
    assert [n for n in names if n.lower() == "chris park"] == ["Chris Park", "chris park"]


def test_agent_search_filters_by_name_or_email(client: httpx.Client) -> None:
    found = client.get("/api/Agent?search=jane@", headers=bearer(client)).json()
    assert [a["id"] for a in found] == [1]


def test_team_list_is_plain_by_default_and_wrapped_when_configured(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    plain = client.get("/api/Team", headers=headers).json()
    assert [t["name"] for t in plain] == ["Service Desk", "Escalations", "Projects"]
    fake.configure(wrapped_lookups=True)
    assert client.get("/api/Team", headers=headers).json() == {"teams": plain}
    agents = client.get("/api/Agent", headers=headers).json()
    assert agents["record_count"] == len(agents["agents"])
    assert "statuses" in client.get("/api/Status", headers=headers).json()


def test_a_lookup_list_can_change_between_calls(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    statuses = fake.lookup("status")
    for status in statuses:
        if status["id"] == 9:
            status["name"] = "Closed - Resolved"
    fake.set_lookup("status", statuses)
    assert "Closed - Resolved" in [
        s["name"] for s in client.get("/api/Status", headers=headers).json()
    ]
    saved = post_tickets(client, headers, [{"id": 4711, "status_id": 9}]).json()
    assert saved["status_name"] == "Closed - Resolved"


def test_set_lookup_refuses_records_without_id_and_name(fake: FakeHalo) -> None:
    with pytest.raises(ValueError, match="id and a name"):
        fake.set_lookup("team", [{"name": "No id"}])
    with pytest.raises(ValueError, match="unknown lookup"):
        fake.set_lookup("colour", [])


# -- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_halos_text_and_retry_after(clock: ManualClock) -> None:
    fake = FakeHalo(clock=clock, rate_limit="3/300s")
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        headers = bearer(http)  # the token request counts too
        clock.advance(100)
        assert http.get("/api/Status", headers=headers).status_code == 200
        assert http.get("/api/Status", headers=headers).status_code == 200
        refused = http.get("/api/Status", headers=headers)
        assert refused.status_code == 429
        assert refused.text == "Rate Limit Reached - 3 Requests per rolling 5 minute window"
        assert refused.headers["Retry-After"] == "200"
        clock.advance(200)
        assert http.get("/api/Status", headers=headers).status_code == 200
    assert fake.requests()[3].fault == "rate_limited"


def test_rate_limit_can_leave_out_retry_after(clock: ManualClock) -> None:
    fake = FakeHalo(clock=clock, rate_limit="1/10s", rate_limit_retry_after=False)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        assert http.get("/api/authinfo").status_code == 200
        refused = http.get("/api/authinfo")
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.text == "Rate Limit Reached - 1 Requests per rolling 10 second window"


@pytest.mark.parametrize(
    ("spec", "limit"),
    [
        ("300/300s", RateLimit(300, 300.0)),
        ("60/10s", RateLimit(60, 10.0)),
        ("5/2m", RateLimit(5, 120.0)),
    ],
)
def test_rate_limit_specs_parse(spec: str, limit: RateLimit) -> None:
    assert RateLimit.parse(spec) == limit


@pytest.mark.parametrize("spec", ["300", "0/10s", "300/0s", "many/5m", "300/5 minutes"])
def test_bad_rate_limit_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        FakeHalo(rate_limit=spec)


def test_control_endpoints_are_neither_rate_limited_nor_logged(clock: ManualClock) -> None:
    fake = FakeHalo(clock=clock, rate_limit="1/60s")
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE_URL) as http:
        for _ in range(5):
            assert http.get("/_fake/requests").status_code == 200
        assert http.get("/api/authinfo").status_code == 200
    assert [r.path for r in fake.requests()] == ["/api/authinfo"]


# -- injected faults ----------------------------------------------------------------------------


def test_fail_next_answers_a_burst_of_html_errors_then_recovers(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    fake.fail_next(3, status=503)
    answers = [client.get("/api/Tickets/4711", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 503, 200]
    assert answers[0].headers["content-type"].startswith("text/html")
    assert [r.fault for r in fake.requests()[-4:]] == ["fail", "fail", "fail", None]


def test_a_failed_post_is_not_applied(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    fake.fail_next(status=502)
    assert post_tickets(client, headers, [{"id": 4711, "summary": "x"}]).status_code == 502
    assert stored(fake, 4711)["summary"] != "x"


def test_fail_next_can_target_a_method_and_path_prefix(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    fake.fail_next(1, status=408, method="POST", path="/API/Tickets")
    assert client.get("/api/Tickets/4711", headers=headers).status_code == 200
    assert client.get("/api/Status", headers=headers).status_code == 200
    assert post_tickets(client, headers, [{"id": 4711}]).status_code == 408
    assert post_tickets(client, headers, [{"id": 4711}]).status_code == 201


@pytest.mark.parametrize("retry_after", [None, 7])
def test_fail_next_can_answer_429_with_or_without_retry_after(
    fake: FakeHalo, client: httpx.Client, retry_after: int | None
) -> None:
    fake.fail_next(2, status=429, retry_after=retry_after)
    answer = client.get("/api/authinfo")
    assert answer.status_code == 429
    assert answer.text.startswith("Rate Limit Reached - 300 Requests per rolling 5 minute")
    assert answer.headers.get("Retry-After") == (None if retry_after is None else "7")


def test_fail_next_can_answer_truncated_json_with_200(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    fake.fail_next(status=200, body='{"id": 47')
    answer = client.get("/api/Tickets/4711", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        answer.json()


def test_forbidden_can_be_injected(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    fake.fail_next(status=403, body="You do not have permission to edit closed tickets")
    answer = post_tickets(client, headers, [{"id": 4714, "summary": "x"}])
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/plain")


def test_hang_next_raises_read_timeout_in_mock_mode_without_applying(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    fake.hang_next(1, seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        post_tickets(client, headers, [{"id": 4711, "summary": "lost"}])
    assert stored(fake, 4711)["summary"] != "lost"
    assert fake.posts()[-1].status is None
    assert fake.posts()[-1].fault == "hang"


def test_an_applied_hang_saves_the_update_although_the_client_times_out(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    fake.hang_next(1, seconds=30, applied=True)
    with pytest.raises(httpx.ReadTimeout):
        post_tickets(client, headers, [{"id": 4711, "summary": "saved anyway"}])
    assert stored(fake, 4711)["summary"] == "saved anyway"


def test_connect_error_next_raises_connect_error_in_mock_mode(
    fake: FakeHalo, client: httpx.Client
) -> None:
    fake.connect_error_next(2, path="/auth")
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            get_token(client)
    assert get_token(client)
    assert [r.fault for r in fake.requests()] == ["connect_error", "connect_error", None]


def test_mock_latency_is_slept_only_when_asked(fake: FakeHalo, client: httpx.Client) -> None:
    fake.latency_s = 0.3
    started = time.monotonic()
    client.get("/api/authinfo")
    unasked_s = time.monotonic() - started
    fake.configure(mock_latency=True)
    client.get("/api/authinfo")
    asked_s = time.monotonic() - started - unasked_s
    assert unasked_s < 0.3 <= asked_s


def test_bad_fault_arguments_are_refused(fake: FakeHalo) -> None:
    with pytest.raises(ValueError, match="positive"):
        fake.fail_next(0)
    with pytest.raises(ValueError, match="start with"):
        fake.hang_next(1, path="api/tickets")


# -- request log, seeds, reset ---------------------------------------------------------------------


def test_request_log_records_what_halo_saw_without_secrets(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    client.get("/api/Tickets/4711?includedetails=true", headers=headers)
    post_tickets(client, headers, [{"id": 4711, "summary": "x"}])
    token, read, post = fake.requests()
    assert token.form is not None
    assert token.form["client_secret"] == "[REDACTED]"
    assert DEMO_CLIENT_SECRET not in json.dumps([r.to_json() for r in fake.requests()])
    assert (read.method, read.path, read.path_lower) == (
        "GET",
        "/api/Tickets/4711",
        "/api/tickets/4711",
    )
    assert read.query == {"includedetails": "true"}
    assert read.status == 200
    assert post.json == [{"id": 4711, "summary": "x"}]
    assert post.status == 201
    assert token.seq < read.seq < post.seq
    assert token.time_s <= read.time_s


def test_log_helpers_filter_by_method_and_path(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    client.get("/api/Tickets/4711", headers=headers)
    client.get("/api/Status", headers=headers)
    post_tickets(client, headers, [{"id": 4711}])
    assert [r.path for r in fake.requests_to("GET", "/api/tickets")] == ["/api/Tickets/4711"]
    assert len(fake.requests_to("POST", "/auth/token")) == 1
    assert [r.json for r in fake.posts()] == [[{"id": 4711}]]


def test_reset_restores_the_seed_and_clears_log_faults_and_options(
    fake: FakeHalo, client: httpx.Client
) -> None:
    headers = bearer(client)
    post_tickets(client, headers, [{"id": 4711, "summary": "changed"}, {"summary": "new"}])
    fake.fail_next(5)
    fake.configure(update_answer_shape="wrapped")
    fake.reset()
    assert fake.requests() == []
    assert fake.created_tickets() == []
    assert fake.pending_faults() == []
    assert fake.config.update_answer_shape == "object"
    assert client.get("/api/Tickets/4711", headers=headers).json()["summary"] == (
        "Printer on 3rd floor offline"
    )


def test_demo_seed_has_the_documented_tickets(fake: FakeHalo) -> None:
    for ticket_id in (4711, 4712, 4713, 4714, 4715, 4716):
        assert fake.ticket(ticket_id) is not None
    assert fake.ticket(999999) is None
    assert stored(fake, 4713)["sla_id"] == 2
    assert stored(fake, 4714)["status_id"] == 9


def test_empty_seed_has_lookups_but_no_tickets() -> None:
    fake = FakeHalo(seed="empty")
    assert fake.ticket(4711) is None
    assert fake.lookup("team")


def test_unknown_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown seed"):
        FakeHalo(seed="nope")


def test_add_ticket_stores_a_ticket_without_logging_a_creation(
    fake: FakeHalo, client: httpx.Client
) -> None:
    stored = fake.add_ticket(id=5000, summary="Set up for a test", sla_id=2, priority_id=6)
    assert stored["id"] == 5000
    ticket = client.get("/api/Tickets/5000", headers=bearer(client)).json()
    assert ticket["priority_name"] == "High"
    assert ticket["status_name"] == "New"
    assert fake.created_tickets() == []
    assert fake.add_ticket(summary="next")["id"] == 5001


def test_unassigned_ticket_reads_as_agent_zero(client: httpx.Client) -> None:
    ticket = client.get("/api/Tickets/4716", headers=bearer(client)).json()
    assert (ticket["agent_id"], ticket["agent_name"]) == (0, "Unassigned")


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        FakeHalo(colour="blue")


# -- control endpoints ----------------------------------------------------------------------------


def test_control_endpoints_drive_the_fake(fake: FakeHalo, client: httpx.Client) -> None:
    headers = bearer(client)
    faults = {"fail_next": {"n": 1, "status": 500}, "connect_error_next": 1}
    assert client.post("/_fake/faults", json=faults).status_code == 200
    with pytest.raises(httpx.ConnectError):
        client.get("/api/Status", headers=headers)
    assert client.get("/api/Status", headers=headers).status_code == 500
    assert client.post("/_fake/expire-tokens").json() == {"expired": 1}
    assert client.get("/api/Status", headers=headers).status_code == 401
    renamed = [{"id": 1, "name": "Front Line"}]
    assert client.post("/_fake/lookups", json={"team": renamed}).status_code == 200
    assert fake.lookup("team") == renamed
    added = client.post("/_fake/tickets", json={"id": 6000, "summary": "via control"})
    assert added.status_code == 201
    assert client.get("/_fake/tickets/6000").json()["summary"] == "via control"
    assert client.get("/_fake/tickets/999999").status_code == 404
    config = client.post("/_fake/config", json={"rate_limit": "60/10s"}).json()
    assert config["rate_limit"] == "60/10s"
    logged = client.get("/_fake/requests").json()
    assert [r["fault"] for r in logged] == [None, "connect_error", "fail", None]
    assert client.get("/_fake/requests?since=3").json() == logged[3:]
    assert client.post("/_fake/reset").status_code == 200
    assert client.get("/_fake/requests").json() == []
    assert client.get("/_fake/tickets/6000").status_code == 404


def test_control_endpoints_report_creations_and_refuse_bad_input(client: httpx.Client) -> None:
    post_tickets(client, bearer(client), [{"summary": "trap"}])
    [created] = client.get("/_fake/created").json()
    assert created["requested_id"] is None
    assert client.post("/_fake/faults", json={"explode": 1}).status_code == 400
    assert client.post("/_fake/faults", json={"fail_next": {"n": 1, "bogus": 2}}).status_code == 400
    assert client.post("/_fake/config", json={"latency_s": -1}).status_code == 400
    assert client.post("/_fake/faults", content=b"{not json").status_code == 400
    assert client.get("/_fake/nothing").status_code == 404


# -- over a real socket ----------------------------------------------------------------------------


def test_served_fake_answers_over_a_real_socket() -> None:
    fake = FakeHalo()
    with serve_in_thread(fake) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        assert server.url.startswith("http://127.0.0.1:")
        assert http.get("/api/authinfo").json()["auth_url"] == f"{server.url}/auth"
        headers = bearer(http)
        saved = post_tickets(http, headers, [{"id": 4711, "status_id": 9}])
        assert saved.status_code == 201
        assert saved.json()["status_name"] == "Closed"
        assert http.get("/api/Tickets/999999", headers=headers).status_code == 404
        logged = http.get("/_fake/requests").json()
    assert [r["status"] for r in logged] == [200, 200, 201, 404]


async def _raw_get(port: int, path: str, rounds: int) -> list[bytes]:
    """GET `path` `rounds` times over one keep-alive connection; the status lines answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status_lines = []
    try:
        for _ in range(rounds):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            status_lines.append(head.split(b"\r\n", 1)[0])
    finally:
        writer.close()
        await writer.wait_closed()
    return status_lines


def test_served_fake_sustains_300_concurrent_delayed_requests() -> None:
    # A bare asyncio client: httpx's own pool costs seconds of client time at this fan-out,
    # which would measure the client rather than the fake. Every request is in flight at once
    # (300 keep-alive connections, two rounds each); serially they would take 180 s, so the
    # per-test timeout bounds the concurrency.
    fake = FakeHalo(latency_s=0.3)

    async def burst(port: int) -> list[bytes]:
        rounds = await asyncio.gather(*(_raw_get(port, "/api/authinfo", 2) for _ in range(300)))
        return [line for lines in rounds for line in lines]

    with serve_in_thread(fake) as server:
        status_lines = asyncio.run(burst(int(server.url.rsplit(":", 1)[1])))
    assert status_lines == [b"HTTP/1.1 200 OK"] * 600
    assert len(fake.requests()) == 600


def test_served_fake_answers_bursts_through_an_httpx_connection_pool() -> None:
    fake = FakeHalo(latency_s=0.1)

    async def two_bursts(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
            first = await asyncio.gather(*(http.get("/api/authinfo") for _ in range(50)))
            second = await asyncio.gather(*(http.get("/api/Status") for _ in range(50)))
        return [answer.status_code for answer in [*first, *second]]

    with serve_in_thread(fake) as server:
        statuses = asyncio.run(two_bursts(server.url))
    assert statuses == [200] * 50 + [401] * 50


def test_served_hang_makes_the_client_time_out() -> None:
    fake = FakeHalo()
    fake.hang_next(1, seconds=1.0, path="/api/authinfo")
    with serve_in_thread(fake) as server:
        with (
            httpx.Client(base_url=server.url, timeout=0.2) as http,
            pytest.raises(httpx.ReadTimeout),
        ):
            http.get("/api/authinfo")
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/api/authinfo").status_code == 200


def test_served_connect_error_closes_the_socket_without_an_answer() -> None:
    fake = FakeHalo()
    fake.connect_error_next(1)
    with serve_in_thread(fake) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/api/authinfo")
        assert http.get("/api/authinfo").status_code == 200


def test_server_stop_is_idempotent_and_refuses_later_connections() -> None:
    server = serve_in_thread(FakeHalo())
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert http.get("/_fake/health").json() == {"ok": True}
        server.stop()
        server.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/_fake/health")


def test_cli_serves_until_sigterm_and_reads_the_secret_from_the_environment() -> None:
    env = {**os.environ, "FAKE_HALO_SECRET": "from-env"}
    command = [
        sys.executable,
        "-c",
        "from worker.halo.fake.server import main; raise SystemExit(main())",
        "--port", "0", "--seed", "demo", "--client-id", "cli-client",
        "--client-secret-env", "FAKE_HALO_SECRET", "--rate-limit", "300/300s",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("halo-fake listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        with httpx.Client(base_url=url, timeout=10) as http:
            form = {"grant_type": "client_credentials", "client_id": "cli-client"}
            assert http.post("/auth/token", data={**form, "client_secret": "from-env"}).is_success
            assert http.get("/api/authinfo").status_code == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stderr == ""


def test_cli_refuses_a_client_id_without_a_secret_variable() -> None:
    assert main(["--port", "0", "--client-id", "x"]) == 2
    assert main(["--port", "0", "--client-id", "x", "--client-secret-env", "UNSET_VAR_4711"]) == 2


def test_wall_clock_timestamps_are_utc_without_offset() -> None:
    moment = datetime(2026, 11, 29, 13, 0, tzinfo=UTC) + timedelta(hours=0)
    fake = FakeHalo(wall_clock=lambda: moment)
    assert fake.add_ticket(summary="x")["datecreated"] == "2026-11-29T13:00:00.000"


@pytest.mark.parametrize(
    ("argv", "profile", "wrapped"),
    [([], "current", False), (["--profile", "legacy"], "legacy", True)],
)
def test_cli_plays_the_profile_it_is_given(argv: list[str], profile: str, wrapped: bool) -> None:
    command = [
        sys.executable,
        "-c",
        "from worker.halo.fake.server import main; raise SystemExit(main())",
        "--port", "0", *argv,
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        with httpx.Client(base_url=url, timeout=10) as http:
            config = http.get("/_fake/config").json()
            form = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID,
                    "client_secret": DEMO_CLIENT_SECRET, "scope": "all"}  # fmt: skip
            token = http.post("/auth/token", data=form).json()["access_token"]
            teams = http.get("/api/Team", headers={"Authorization": f"Bearer {token}"}).json()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert config["profile"] == profile
    assert isinstance(teams, dict) is wrapped


def test_a_profile_survives_reset_and_can_be_changed_over_http() -> None:
    fake = FakeHalo(profile="strict")
    fake.reset()
    assert fake.config.profile == "strict"
    assert fake.ticket(4720) is not None
    with serve_in_thread(fake) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        answer = http.post("/_fake/profile", json={"profile": "legacy", "latency_s": 0.0})
        assert answer.json()["profile"] == "legacy"
        assert http.post("/_fake/profile", json={"profile": "nope"}).status_code == 400
    assert fake.config.tickets_have_team_id is False
    assert fake.ticket(4720) is None
