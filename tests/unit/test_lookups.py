"""Names to Halo ids (FACTS, Lookups): matching rules, errors, list shapes and the cache."""

from __future__ import annotations

from typing import Any

import pytest

from fakehalo import FakeHalo
from worker.errors import ErrorCode, HaloUnexpectedResponse, LookupAmbiguous, LookupNotFound
from worker.halo.client import HaloClient
from worker.halo.lookups import (
    LookupKind,
    Records,
    Resolved,
    name_of,
    resolve,
    resolve_refreshing,
    unwrap_records,
)

STATUSES: Records = [
    {"id": 1, "name": "New"},
    {"id": 2, "name": "In Progress"},
    {"id": 9, "name": "Closed"},
    {"id": 21, "name": "Waiting on Customer"},
]
AGENTS: Records = [
    {"id": 5, "name": "Jane Doe", "email": "jane@msp.example"},
    {"id": 6, "name": "John Roe", "email": "john@msp.example"},
]
# Priorities of two SLAs: same names, different integer `priorityid`s, GUID `id`s.
PRIORITIES_SLA_1: Records = [
    {"id": "8a0e9f0c-0000-4000-8000-000000000001", "priorityid": 1, "name": "High", "slaid": 1},
    {"id": "8a0e9f0c-0000-4000-8000-000000000002", "priorityid": 2, "name": "Low", "slaid": 1},
]
PRIORITIES_SLA_2: Records = [
    {"id": "8a0e9f0c-0000-4000-8000-000000000011", "priorityid": 11, "name": "High", "slaid": 2},
    {"id": "8a0e9f0c-0000-4000-8000-000000000012", "priorityid": 12, "name": "Low", "slaid": 2},
]


def not_found(kind: Any, value: str, records: Records, **kw: Any) -> LookupNotFound:
    with pytest.raises(LookupNotFound) as caught:
        resolve(kind, value, records, **kw)
    assert caught.value.code is ErrorCode.LOOKUP_NOT_FOUND
    assert caught.value.retryable is False
    assert caught.value.field == kind
    return caught.value


@pytest.mark.parametrize("value", ["Closed", "closed", "CLOSED", "  Closed  ", "\tcLoSeD\n"])
def test_names_match_case_insensitively_ignoring_whitespace(value: str) -> None:
    assert resolve("status", value, STATUSES) == Resolved("status", 9, "Closed")


def test_record_names_with_stray_whitespace_match_too() -> None:
    records = [{"id": 3, "name": " Escalations  "}]
    assert resolve("team", "escalations", records) == Resolved("team", 3, "Escalations")


@pytest.mark.parametrize("value", ["9", " 9 ", "09"])
def test_a_numeric_value_is_an_id(value: str) -> None:
    assert resolve("status", value, STATUSES) == Resolved("status", 9, "Closed")


def test_a_numeric_id_must_exist() -> None:
    error = not_found("status", "99", STATUSES)
    assert error.message == (
        "status id 99 is not a Halo status; "
        "valid: 1 (New), 2 (In Progress), 9 (Closed), 21 (Waiting on Customer)"
    )


def test_ids_given_as_text_by_halo_are_compared_as_numbers() -> None:
    assert resolve("status", "9", [{"id": "9", "name": "Closed"}]).id == 9


def test_a_non_ascii_digit_is_a_name_not_an_id() -> None:
    # "²".isdigit() is true, but it is no id: it must fail as a name, not crash.
    assert "'²' matches no Halo status" in not_found("status", "²", STATUSES).message


@pytest.mark.parametrize("value", ["jane@msp.example", "JANE@MSP.EXAMPLE ", "Jane Doe", "5"])
def test_an_agent_matches_by_name_email_or_id(value: str) -> None:
    assert resolve("agent", value, AGENTS) == Resolved("agent", 5, "Jane Doe")


def test_only_agents_match_by_email() -> None:
    teams = [{"id": 1, "name": "Escalations", "email": "esc@msp.example"}]
    not_found("team", "esc@msp.example", teams)


def test_priority_high_resolves_to_different_ids_under_two_slas() -> None:
    under_1 = resolve("priority", "High", PRIORITIES_SLA_1, sla_id=1)
    under_2 = resolve("priority", "High", PRIORITIES_SLA_2, sla_id=2)
    assert under_1 == Resolved("priority", 1, "High")
    assert under_2 == Resolved("priority", 11, "High")


def test_a_priority_id_is_its_priorityid_never_its_guid() -> None:
    assert resolve("priority", "11", PRIORITIES_SLA_2, sla_id=2).id == 11
    error = not_found("priority", "1", PRIORITIES_SLA_2, sla_id=2)
    assert "priority id 1 is not a Halo priority of SLA 2" in error.message


def test_a_priority_without_an_integer_priorityid_is_unexpected() -> None:
    with pytest.raises(HaloUnexpectedResponse, match="no integer 'priorityid'"):
        resolve("priority", "High", [{"id": "guid", "priorityid": "guid", "name": "High"}])


def test_not_found_lists_the_closest_names() -> None:
    error = not_found("status", "Closd", STATUSES)
    assert error.message == "status 'Closd' matches no Halo status; closest: 'Closed'"


def test_not_found_lists_at_most_three_close_names() -> None:
    names = ["Open", "Opened", "Reopened", "Open Again", "Zz"]
    records = [{"id": i, "name": n} for i, n in enumerate(names)]
    error = not_found("status", "opne", records)
    assert error.message == (
        "status 'opne' matches no Halo status; closest: 'Opened', 'Open', 'Reopened'"
    )


def test_not_found_without_close_names_lists_valid_names() -> None:
    error = not_found("status", "xyzzy", STATUSES)
    assert error.message.endswith(
        "valid names: 'Closed', 'In Progress', 'New', 'Waiting on Customer'"
    )


def test_a_long_list_of_valid_names_is_cut_short() -> None:
    records = [{"id": i, "name": f"Team {i:02}"} for i in range(25)]
    error = not_found("team", "qqqqqqqqqqqqqqq", records)
    assert "'Team 09'" in error.message
    assert "'Team 10'" not in error.message
    assert error.message.endswith("and 15 more")


def test_agent_suggestions_include_emails() -> None:
    assert "'jane@msp.example'" in not_found("agent", "jane@msp.exmaple", AGENTS).message


def test_a_priority_miss_names_the_sla() -> None:
    error = not_found("priority", "Critical", PRIORITIES_SLA_1, sla_id=1)
    assert error.message.startswith("priority 'Critical' matches no Halo priority of SLA 1")


def test_an_empty_list_says_halo_returned_nothing() -> None:
    assert not_found("team", "Escalations", []).message.endswith("Halo returned no records")


def test_a_name_matching_two_records_is_ambiguous() -> None:
    records = [*STATUSES, {"id": 30, "name": "closed "}]
    with pytest.raises(LookupAmbiguous) as caught:
        resolve("status", "Closed", records)
    assert caught.value.code is ErrorCode.LOOKUP_AMBIGUOUS
    assert caught.value.field == "status"
    assert caught.value.message == (
        "status 'Closed' matches 2 Halo status records (ids 9, 30); use the id instead"
    )


def test_an_agent_whose_email_is_anothers_name_is_ambiguous() -> None:
    records = [*AGENTS, {"id": 7, "name": "jane@msp.example", "email": "other@msp.example"}]
    with pytest.raises(LookupAmbiguous, match=r"ids 5, 7"):
        resolve("agent", "jane@msp.example", records)


def test_the_same_record_listed_twice_is_not_ambiguous() -> None:
    assert resolve("status", "Closed", [*STATUSES, {"id": 9, "name": "Closed"}]).id == 9


# -- list shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        STATUSES,
        {"records": STATUSES},
        {"statuses": STATUSES, "record_count": 4},
        {"record_count": 4, "anything": STATUSES},
    ],
)
def test_plain_and_wrapped_list_answers_give_the_records(answer: Any) -> None:
    assert unwrap_records(answer, "status") == STATUSES


def test_a_tickets_answer_is_unwrapped() -> None:
    assert unwrap_records({"record_count": 1, "tickets": [{"id": 4}]}, "tickets") == [{"id": 4}]


def test_non_object_entries_are_dropped() -> None:
    assert unwrap_records([{"id": 1}, "junk", 3, None], "team") == [{"id": 1}]


@pytest.mark.parametrize("answer", [None, "text", 3, {"record_count": 0}, {"team": "x"}])
def test_an_answer_without_a_list_is_unexpected(answer: Any) -> None:
    with pytest.raises(HaloUnexpectedResponse, match="team list answer holds no list"):
        unwrap_records(answer, "team")


def test_name_of_finds_labels_by_id() -> None:
    assert name_of(STATUSES, "status", 9) == "Closed"
    assert name_of(STATUSES, "status", "9") == "Closed"
    assert name_of(PRIORITIES_SLA_2, "priority", 11) == "High"
    assert name_of(STATUSES, "status", 99) is None
    assert name_of(STATUSES, "status", None) is None


# -- refresh on a miss -------------------------------------------------------------------------


class Loader:
    """`load(fresh)` over a list that Halo changes between loads."""

    def __init__(self, cached: Records | None, fresh: Records) -> None:
        self.cached = cached
        self.fresh = fresh
        self.calls: list[bool] = []

    def __call__(self, fresh: bool) -> tuple[Records, bool]:
        self.calls.append(fresh)
        if not fresh and self.cached is not None:
            return self.cached, True
        return self.fresh, False


def test_a_miss_on_a_cached_list_reloads_it_once() -> None:
    renamed = [{"id": 9, "name": "Resolved"}]
    load = Loader(cached=STATUSES, fresh=renamed)
    assert resolve_refreshing("status", "Resolved", load) == Resolved("status", 9, "Resolved")
    assert load.calls == [False, True]


def test_a_hit_on_a_cached_list_does_not_reload() -> None:
    load = Loader(cached=STATUSES, fresh=[])
    assert resolve_refreshing("status", "Closed", load).id == 9
    assert load.calls == [False]


def test_a_miss_after_the_reload_fails_without_reloading_again() -> None:
    load = Loader(cached=STATUSES, fresh=STATUSES)
    with pytest.raises(LookupNotFound):
        resolve_refreshing("status", "Nope", load)
    assert load.calls == [False, True]


def test_a_miss_on_a_just_fetched_list_is_not_reloaded() -> None:
    load = Loader(cached=None, fresh=STATUSES)
    with pytest.raises(LookupNotFound):
        resolve_refreshing("status", "Nope", load)
    assert load.calls == [False]


def test_an_ambiguous_name_is_not_reloaded() -> None:
    load = Loader(cached=[*STATUSES, {"id": 10, "name": "CLOSED"}], fresh=STATUSES)
    with pytest.raises(LookupAmbiguous):
        resolve_refreshing("status", "closed", load)
    assert load.calls == [False]


# -- against the fake Halo, through the client's cache -----------------------------------------


def loader(client: HaloClient, kind: LookupKind, sla_id: int | None = None) -> Any:
    def load(fresh: bool) -> tuple[Records, bool]:
        return client.lookup(kind, sla_id=sla_id, fresh=fresh)

    return load


def status_reads(fake: FakeHalo) -> int:
    return len(fake.requests_to("GET", "/api/Status"))


def test_a_status_renamed_in_halo_is_found_after_one_refresh(
    fake: FakeHalo, client: HaloClient
) -> None:
    assert resolve_refreshing("status", "Closed", loader(client, "status")).id == 9
    renamed = [
        {**s, "name": "Closed - Resolved"} if s["id"] == 9 else s for s in fake.lookup("status")
    ]
    fake.set_lookup("status", renamed)
    found = resolve_refreshing("status", "closed - resolved", loader(client, "status"))
    assert found == Resolved("status", 9, "Closed - Resolved")
    assert status_reads(fake) == 2
    # The refreshed list is cached: the next job finds the new name without a request.
    assert resolve_refreshing("status", "Closed - Resolved", loader(client, "status")).id == 9
    assert status_reads(fake) == 2


def test_a_name_missing_after_the_refresh_fails_without_a_second_refresh(
    fake: FakeHalo, client: HaloClient
) -> None:
    client.lookup("status")
    with pytest.raises(LookupNotFound, match="closest: 'Closed'"):
        resolve_refreshing("status", "Closd", loader(client, "status"))
    assert status_reads(fake) == 2


def test_a_miss_on_a_cold_cache_is_not_refreshed(fake: FakeHalo, client: HaloClient) -> None:
    with pytest.raises(LookupNotFound):
        resolve_refreshing("status", "Closd", loader(client, "status"))
    assert status_reads(fake) == 1


def test_priority_high_differs_between_the_fakes_two_slas(client: HaloClient) -> None:
    standard = resolve_refreshing("priority", "high", loader(client, "priority", 1), sla_id=1)
    premium = resolve_refreshing("priority", "HIGH", loader(client, "priority", 2), sla_id=2)
    assert (standard.id, premium.id) == (2, 6)


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("status", "Waiting on Customer", 5),
        ("agent", "priya.patel@msp.example", 7),
        ("team", " projects ", 3),
        ("priority", "Critical", 1),
    ],
)
def test_plain_and_wrapped_answers_of_the_fake_resolve_alike(
    fake: FakeHalo,
    client: HaloClient,
    *,
    wrapped: bool,
    kind: LookupKind,
    value: str,
    expected: int,
) -> None:
    fake.configure(wrapped_lookups=wrapped)
    sla_id = 1 if kind == "priority" else None
    assert (
        resolve_refreshing(kind, value, loader(client, kind, sla_id), sla_id=sla_id).id == expected
    )


def test_the_fakes_duplicate_agent_names_are_ambiguous(client: HaloClient) -> None:
    with pytest.raises(LookupAmbiguous, match=r"ids 3, 4"):
        resolve_refreshing("agent", "sam lee", loader(client, "agent"))
    with pytest.raises(LookupAmbiguous, match=r"ids 5, 6"):
        resolve_refreshing("agent", "Chris Park", loader(client, "agent"))
    assert resolve_refreshing("agent", "sam.lee@msp.example", loader(client, "agent")).id == 3
