"""The job and result record of the wire contract (CONTRACT §1-§2), as `worker.models` has them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from worker.errors import ErrorCode, HaloForbidden, InvalidJob, TicketNotFound
from worker.models import (
    MAX_JOB_BYTES,
    MAX_NESTING_DEPTH,
    MAX_SHORT_TEXT_CHARS,
    MAX_TEXT_CHARS,
    RESULT_TICKET_KEYS,
    ErrorHandling,
    Job,
    Outcome,
    failed_record,
    json_kind,
    parse_job,
    succeeded_record,
)

RECORD_KEYS = {
    "job_id",
    "outcome",
    "disposition",
    "result",
    "variables",
    "changed_fields",
    "warnings",
    "error",
    "attempts",
    "halo_requests",
    "submitted_at",
    "finished_at",
    "meta",
}
CONTRACT_RESULT_KEYS = [
    "id", "summary", "details", "client_id", "client_name", "user_id", "user_name", "site_id",
    "site_name", "tickettype_id", "status_id", "status_name", "priority_id", "priority_name",
    "agent_id", "agent_name", "team_id", "team_name", "datecreated", "datelastupdated",
]  # fmt: skip
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def job(**changes: Any) -> dict[str, Any]:
    """A minimal valid job with `changes` applied; a value of `...` removes the key."""
    data: dict[str, Any] = {"connection": "acme", "ticket_id": "{{custom.ticket.id}}"}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


def invalid(raw: Any) -> InvalidJob:
    with pytest.raises(InvalidJob) as caught:
        parse_job(raw)
    assert caught.value.code is ErrorCode.INVALID_JOB
    assert caught.value.retryable is False
    return caught.value


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- jobs --------------------------------------------------------------------------------------


def test_the_contract_example_job_validates() -> None:
    example = {
        "job_id": "rule-7f3a:step-2:msg-20261127-0042",
        "connection": "acme",
        "ticket_id": "{{custom.ticket.id}}",
        "summary": "[Escalated] {{custom.existingTicket[0].summary}}",
        "details": "",
        "status": "Closed",
        "priority": "High",
        "agent": "jane@msp.example",
        "team": "Escalations",
        "error_handling": "exception",
        "result_variable": "myVariable",
        "variables": {"custom": {"ticket": {"id": 4711}}, "email": {"subject": "..."}},
        "meta": {"message_id": "<abc@mail>", "rule_id": "r-17"},
    }
    parsed = parse_job(json.dumps(example))
    assert parsed.job_id == example["job_id"]
    assert parsed.status == "Closed"
    assert parsed.error_handling is ErrorHandling.EXCEPTION
    assert parsed.meta == example["meta"]


def test_json_text_bytes_and_decoded_objects_give_the_same_job() -> None:
    data = job(summary="hi", meta={"k": 1})
    assert parse_job(data) == parse_job(json.dumps(data)) == parse_job(json.dumps(data).encode())


def test_optional_keys_default_to_leaving_everything_unchanged() -> None:
    parsed = parse_job(job())
    assert parsed.job_id is None
    assert (parsed.summary, parsed.details, parsed.status) == (None, None, None)
    assert (parsed.priority, parsed.agent, parsed.team) == (None, None, None)
    assert parsed.error_handling is ErrorHandling.EXCEPTION
    assert parsed.result_variable is None
    assert parsed.variables == {}
    assert parsed.meta == {}


def test_an_unknown_key_is_rejected_with_a_message_naming_it() -> None:
    error = invalid(job(ticketId="42"))
    assert "job.ticketId: unknown key" in error.message
    assert "ticket_id" in error.message  # the allowed keys are listed
    assert error.field == "ticketId"


@pytest.mark.parametrize("key", ["connection", "ticket_id"])
def test_a_missing_required_key_is_named(key: str) -> None:
    error = invalid(job(**{key: ...}))
    assert error.message == f"job.{key}: required key is missing"
    assert error.field == key


def test_every_problem_of_a_job_is_listed() -> None:
    error = invalid({"ticket_id": "1", "colour": "red"})
    assert "job.connection: required key is missing" in error.message
    assert "job.colour: unknown key" in error.message


@pytest.mark.parametrize(
    "job_id",
    ["a", "rule-7f3a:step-2:msg-20261127-0042", "A.b_c:d-e", "0" * 128, "3f1c2b9e-uuid4"],
)
def test_a_job_id_of_up_to_128_safe_characters_is_accepted(job_id: str) -> None:
    assert parse_job(job(job_id=job_id)).job_id == job_id


@pytest.mark.parametrize("job_id", ["", "a b", "a/b", "ä", "x" * 129, "a\nb", "{{id}}"])
def test_a_job_id_outside_the_format_is_rejected(job_id: str) -> None:
    error = invalid(job(job_id=job_id))
    assert error.message == "job.job_id: must be 1-128 characters of A-Z a-z 0-9 . _ : -"
    assert error.field == "job_id"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("exception", ErrorHandling.EXCEPTION),
        ("bounce", ErrorHandling.BOUNCE),
        ("continue", ErrorHandling.CONTINUE),
        ("stop", ErrorHandling.STOP),
        ("stop_all", ErrorHandling.STOP_ALL),
        ("Exception", ErrorHandling.EXCEPTION),
        ("Bounce", ErrorHandling.BOUNCE),
        ("Continue", ErrorHandling.CONTINUE),
        ("Stop", ErrorHandling.STOP),
        ("Stop All", ErrorHandling.STOP_ALL),
    ],
)
def test_error_handling_accepts_wire_and_display_names(given: str, expected: ErrorHandling) -> None:
    assert parse_job(job(error_handling=given)).error_handling is expected


def test_stop_all_display_name_becomes_the_wire_value() -> None:
    assert parse_job(job(error_handling="Stop All")).error_handling.value == "stop_all"


@pytest.mark.parametrize("given", ["halt", "Stop Everything", "", 3])
def test_an_unknown_error_handling_is_rejected(given: object) -> None:
    error = invalid(job(error_handling=given))
    assert error.message.startswith("job.error_handling: ")
    assert error.field == "error_handling"


def test_integers_are_accepted_for_ticket_id_and_lookup_fields() -> None:
    parsed = parse_job(job(ticket_id=4711, status=9, priority=2, agent=5, team=1))
    assert (parsed.ticket_id, parsed.status, parsed.priority) == ("4711", "9", "2")
    assert (parsed.agent, parsed.team) == ("5", "1")


@pytest.mark.parametrize("given", [True, 12.5, [1], {"id": 1}])
def test_a_ticket_id_that_is_neither_text_nor_integer_is_rejected(given: object) -> None:
    error = invalid(job(ticket_id=given))
    assert error.message.startswith("job.ticket_id: ")


@pytest.mark.parametrize("key", ["summary", "details", "status", "priority", "agent", "team"])
def test_null_leaves_a_field_unset(key: str) -> None:
    assert getattr(parse_job(job(**{key: None})), key) is None


@pytest.mark.parametrize("name", ["myVariable", "_x", "a1", "A_b_2"])
def test_result_variable_accepts_identifiers(name: str) -> None:
    assert parse_job(job(result_variable=name)).result_variable == name


@pytest.mark.parametrize("name", ["1a", "my-var", "my var", "", "a.b", "ä"])
def test_result_variable_must_be_an_identifier(name: str) -> None:
    error = invalid(job(result_variable=name))
    assert error.message == (
        "job.result_variable: must be an identifier (letters, digits, _; not a digit first)"
    )


def test_variables_and_meta_must_be_objects() -> None:
    assert invalid(job(variables=[1])).message.startswith("job.variables: ")
    assert invalid(job(meta="x")).message.startswith("job.meta: ")


def test_a_job_that_is_not_an_object_is_invalid() -> None:
    assert invalid("[1, 2]").message == "job: expected a JSON object, got an array"
    assert invalid('"x"').message == "job: expected a JSON object, got a string"
    assert invalid("null").message == "job: expected a JSON object, got null"


def test_text_that_is_not_json_is_invalid() -> None:
    assert invalid('{"connection": ').message.startswith("job: not valid JSON")


# -- size limits -------------------------------------------------------------------------------


def test_a_job_over_256_kib_is_refused_before_parsing() -> None:
    big = json.dumps(job(variables={"blob": "x" * MAX_JOB_BYTES}))
    assert MAX_JOB_BYTES == 256 * 1024
    error = invalid(big)
    assert error.message == f"job: {len(big)} bytes is larger than the limit of {MAX_JOB_BYTES}"
    assert "larger than the limit" in invalid(big.encode()).message


def test_a_decoded_job_over_256_kib_is_refused_too() -> None:
    error = invalid(job(variables={"blob": "x" * MAX_JOB_BYTES}))
    assert "larger than the limit of 262144" in error.message


def test_the_size_limit_counts_bytes_not_characters() -> None:
    # 100 K three-byte characters are under the limit as characters, over it as UTF-8.
    text = json.dumps(job(variables={"blob": "€" * 100_000}), ensure_ascii=False)
    assert len(text) < MAX_JOB_BYTES < len(text.encode())
    assert "larger than the limit" in invalid(text).message


@pytest.mark.parametrize("key", ["summary", "details"])
def test_summary_and_details_may_hold_64_kib(key: str) -> None:
    assert MAX_TEXT_CHARS == 64 * 1024
    assert len(getattr(parse_job(job(**{key: "x" * MAX_TEXT_CHARS})), key)) == MAX_TEXT_CHARS


@pytest.mark.parametrize("key", ["summary", "details"])
def test_summary_and_details_over_64_kib_are_refused(key: str) -> None:
    error = invalid(job(**{key: "x" * (MAX_TEXT_CHARS + 1)}))
    assert error.message == f"job.{key}: longer than the limit of {MAX_TEXT_CHARS} characters"
    assert error.field == key


@pytest.mark.parametrize("key", ["ticket_id", "status", "priority", "agent", "team"])
def test_short_fields_over_1_kib_are_refused(key: str) -> None:
    assert MAX_SHORT_TEXT_CHARS == 1024
    assert parse_job(job(**{key: "x" * MAX_SHORT_TEXT_CHARS}))
    error = invalid(job(**{key: "x" * (MAX_SHORT_TEXT_CHARS + 1)}))
    assert error.message == f"job.{key}: longer than the limit of 1024 characters"


@pytest.mark.parametrize("key", ["variables", "meta"])
def test_nesting_up_to_the_limit_is_accepted(key: str) -> None:
    assert parse_job(job(**{key: nested(MAX_NESTING_DEPTH)}))


@pytest.mark.parametrize("key", ["variables", "meta"])
def test_nesting_past_the_limit_is_refused(key: str) -> None:
    error = invalid(job(**{key: nested(MAX_NESTING_DEPTH + 1)}))
    assert error.message == f"job.{key}: Value error, nested deeper than 32 levels"
    assert error.field == key


def test_lists_count_towards_the_nesting_depth() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_NESTING_DEPTH + 1):
        deep = [deep]
    assert "nested deeper than 32 levels" in invalid(job(variables={"x": deep})).message


def test_absurd_nesting_in_json_text_is_invalid_not_a_crash() -> None:
    text = '{"connection": "a", "ticket_id": "1", "variables": {"x": ' + "[" * 100_000
    text += "]" * 100_000 + "}}"
    assert invalid(text).message.startswith("job: not valid JSON")


def test_absurd_nesting_in_a_decoded_object_is_invalid_not_a_crash() -> None:
    message = invalid(job(variables=nested(5_000))).message
    assert message.startswith("job: not representable as JSON (maximum recursion depth")


def test_an_integer_too_long_to_print_is_invalid_not_a_crash() -> None:
    assert invalid(job(ticket_id=10**5000)).message.startswith("job: not representable as JSON")
    assert invalid('{"connection": "a", "ticket_id": ' + "9" * 5000 + "}").message.startswith(
        "job: not valid JSON"
    )


def test_a_circular_object_is_invalid_not_a_crash() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert invalid(job(meta=loop)).message.startswith("job: not representable as JSON")


def test_a_job_is_immutable() -> None:
    parsed = parse_job(job())
    with pytest.raises(ValueError, match="frozen"):
        parsed.connection = "other"  # type: ignore[misc]


# -- result records ----------------------------------------------------------------------------


def a_ticket() -> dict[str, Any]:
    return dict.fromkeys(RESULT_TICKET_KEYS) | {"id": 4711, "status_id": 9}


def test_the_result_keys_are_the_contracts_twenty_in_order() -> None:
    assert list(RESULT_TICKET_KEYS) == CONTRACT_RESULT_KEYS


def test_a_succeeded_record_has_the_contract_shape() -> None:
    parsed = parse_job(job(result_variable="myVariable", meta={"rule_id": "r-17"}))
    record = succeeded_record(
        parsed,
        "j-1",
        ticket=a_ticket(),
        changed_fields=["status_id"],
        warnings=["details: rendered empty, so it was left unchanged"],
        attempts=1,
        halo_requests=2,
        submitted_at="2026-11-27T10:00:00.000Z",
    )
    wire = json.loads(record.model_dump_json())
    assert set(wire) == RECORD_KEYS
    assert wire["outcome"] == "succeeded"
    assert wire["disposition"] is None
    assert wire["error"] is None
    assert wire["result"] == [a_ticket()]
    assert wire["variables"] == {"custom": {"myVariable": [a_ticket()]}}
    assert wire["changed_fields"] == ["status_id"]
    assert wire["warnings"] == ["details: rendered empty, so it was left unchanged"]
    assert (wire["attempts"], wire["halo_requests"]) == (1, 2)
    assert wire["meta"] == {"rule_id": "r-17"}
    assert ISO_UTC.match(wire["finished_at"])
    assert wire["finished_at"] >= wire["submitted_at"]


def test_a_succeeded_record_without_result_variable_has_empty_variables() -> None:
    record = succeeded_record(
        parse_job(job()),
        "j-1",
        ticket=a_ticket(),
        changed_fields=[],
        warnings=[],
        attempts=1,
        halo_requests=1,
        submitted_at="2026-11-27T10:00:00.000Z",
    )
    assert record.variables == {}
    assert record.outcome is Outcome.SUCCEEDED


def test_a_failed_record_carries_the_error_and_the_jobs_disposition() -> None:
    parsed = parse_job(job(error_handling="Stop All", result_variable="v", meta={"m": 1}))
    error = TicketNotFound("Halo has no ticket 9", field="ticket_id", http_status=404)
    record = failed_record(
        "j-2", error, job=parsed, attempts=1, halo_requests=2, submitted_at="2026-11-27T10:00Z"
    )
    wire = json.loads(record.model_dump_json())
    assert set(wire) == RECORD_KEYS
    assert wire["outcome"] == "failed"
    assert wire["disposition"] == "stop_all"
    assert wire["result"] is None
    assert wire["variables"] == {}  # even with result_variable set
    assert wire["changed_fields"] == []
    assert wire["error"] == {
        "code": "ticket_not_found",
        "message": "Halo has no ticket 9",
        "retryable": False,
        "http_status": 404,
        "field": "ticket_id",
    }
    assert wire["meta"] == {"m": 1}


def test_a_failed_record_of_an_unreadable_job_defaults_to_exception() -> None:
    error = invalid({"connection": "acme"})
    record = failed_record(
        "j-3",
        error,
        job=None,
        attempts=1,
        halo_requests=0,
        submitted_at="2026-11-27T10:00:00.000Z",
        meta={"echo": True},
    )
    assert record.disposition is ErrorHandling.EXCEPTION
    assert record.error is not None
    assert record.error.code is ErrorCode.INVALID_JOB
    assert record.meta == {"echo": True}


def test_a_failed_record_keeps_warnings_and_http_status() -> None:
    record = failed_record(
        "j-4",
        HaloForbidden("no", http_status=403),
        job=parse_job(job(error_handling="bounce")),
        attempts=2,
        halo_requests=3,
        submitted_at="2026-11-27T10:00:00.000Z",
        warnings=["team: rendered empty, so it was left unchanged"],
    )
    assert record.disposition is ErrorHandling.BOUNCE
    assert record.warnings == ["team: rendered empty, so it was left unchanged"]
    assert record.error is not None
    assert (record.error.code, record.error.http_status) == (ErrorCode.HALO_FORBIDDEN, 403)


def test_a_record_round_trips_through_its_json() -> None:
    record = succeeded_record(
        parse_job(job(result_variable="v")),
        "j-5",
        ticket=a_ticket(),
        changed_fields=["summary"],
        warnings=[],
        attempts=1,
        halo_requests=2,
        submitted_at="2026-11-27T10:00:00.000Z",
    )
    assert type(record).model_validate_json(record.model_dump_json()) == record


def test_job_keys_are_exactly_the_contracts() -> None:
    assert set(Job.model_fields) == {
        "job_id",
        "connection",
        "ticket_id",
        "summary",
        "details",
        "status",
        "priority",
        "agent",
        "team",
        "error_handling",
        "result_variable",
        "variables",
        "meta",
    }


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"a": 1}, "an object"),
        ({}, "an object"),
        ([1, 2], "an array"),
        ("text", "a string"),
        ("", "a string"),
        (0, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
        (False, "a boolean"),
        (None, "null"),
    ],
)
def test_every_json_type_is_named_without_quoting_the_value(value: Any, kind: str) -> None:
    assert json_kind(value) == kind
    assert json_kind(json.loads(json.dumps(value))) == kind
