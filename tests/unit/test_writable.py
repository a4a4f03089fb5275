"""A record is always writable: an invalid job's meta is echoed only within the job limits, and
a record holding what JSON cannot carry is written with those values replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import HaloUnexpectedResponse, InvalidJob
from worker.models import (
    JOB_ID_PATTERN,
    MAX_JOB_BYTES,
    MAX_NESTING_DEPTH,
    Job,
    failed_record,
    succeeded_record,
)
from worker.writable import (
    CUT,
    INVALID_TASK_ID_PREFIX,
    WRITTEN_CUT,
    check_task_id,
    invalid_job_meta,
    record_json,
    record_key_of,
)


def nested(depth: int, leaf: Any = "leaf") -> dict[str, Any]:
    """``{"a": {"a": ... leaf}}``, `depth` objects deep."""
    value: dict[str, Any] = {"a": leaf}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def depth_of(value: Any) -> int:
    level = 0
    while isinstance(value, dict) and value:
        value, level = next(iter(value.values())), level + 1
    return level


def invalid_record(meta: dict[str, Any], warnings: list[str]) -> str:
    record = failed_record(
        "job-1",
        InvalidJob("job.colour: unknown key"),
        job=None,
        attempts=1,
        halo_requests=0,
        submitted_at="2026-11-27T10:00:00.000Z",
        warnings=warnings,
        meta=meta,
    )
    return record_json(record)


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 256, 300, 900, 5000])
def test_an_invalid_jobs_meta_nested_too_deeply_is_not_echoed_and_the_record_says_so(
    depth: int,
) -> None:
    meta, warnings = invalid_job_meta({"colour": "red", "meta": nested(depth)})

    assert meta == {}
    too_deep = f"nested deeper than {MAX_NESTING_DEPTH} levels"
    assert warnings == [f"meta: not copied to this record: {too_deep}"]
    json.loads(invalid_record(meta, warnings))


def test_an_invalid_jobs_meta_larger_than_a_job_may_be_is_not_echoed() -> None:
    meta, warnings = invalid_job_meta({"meta": {"note": "x" * MAX_JOB_BYTES}})

    assert meta == {}
    assert "more than the job limit" in warnings[0]


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"x": "\ud800"}, "not valid Unicode"),
        ({"\udfff": 1}, "not valid Unicode"),
        ({"x": 10**5000}, "not representable as JSON"),
    ],
)
def test_an_invalid_jobs_meta_that_no_record_can_hold_is_not_echoed(
    meta: dict[str, Any], says: str
) -> None:
    echoed, warnings = invalid_job_meta({"meta": meta})

    assert echoed == {}
    assert says in warnings[0]


@pytest.mark.parametrize(
    "payload", [{"meta": nested(MAX_NESTING_DEPTH)}, {"meta": {"rule_id": "r-1"}}]
)
def test_an_invalid_jobs_meta_within_the_job_limits_is_echoed_as_sent(
    payload: dict[str, Any],
) -> None:
    assert invalid_job_meta(payload) == (payload["meta"], [])


@pytest.mark.parametrize("payload", [None, [1], {"meta": [1]}, {"meta": "x"}, {}])
def test_no_meta_object_echoes_nothing_and_warns_of_nothing(payload: Any) -> None:
    assert invalid_job_meta(payload) == ({}, [])


def test_a_success_whose_halo_answer_nests_too_deeply_is_written_with_the_depth_cut() -> None:
    job = Job(connection="acme", ticket_id="4711", result_variable="r", meta={"rule": "r-1"})
    ticket = {"id": 4711, "summary": "Printer", "client_name": nested(300)}
    record = succeeded_record(
        job,
        "job-1",
        ticket=ticket,
        changed_fields=["status_id"],
        warnings=[],
        attempts=1,
        halo_requests=2,
        submitted_at="2026-11-27T10:00:00.000Z",
    )

    written = json.loads(record_json(record))

    assert written["outcome"] == "succeeded"
    assert written["result"][0]["summary"] == "Printer"
    assert written["meta"] == {"rule": "r-1"}
    client_name = written["result"][0]["client_name"]
    assert depth_of(client_name) < MAX_NESTING_DEPTH
    assert CUT in json.dumps(client_name)
    assert written["warnings"] == [WRITTEN_CUT]


def test_a_failure_quoting_text_that_is_not_unicode_is_written_with_it_replaced() -> None:
    error = HaloUnexpectedResponse("Halo answered another ticket: caf\udce9")
    record = failed_record(
        "job-1", error, job=None, attempts=1, halo_requests=1, submitted_at="2026-11-27T10:00:00Z"
    )

    written = json.loads(record_json(record))

    assert written["error"]["message"] == "Halo answered another ticket: caf\ufffd"
    assert written["error"]["code"] == "halo_unexpected_response"
    assert WRITTEN_CUT in written["warnings"]


def test_a_record_that_can_be_written_is_written_unchanged() -> None:
    record = failed_record(
        "job-1",
        InvalidJob("job.colour: unknown key"),
        job=None,
        attempts=1,
        halo_requests=0,
        submitted_at="2026-11-27T10:00:00.000Z",
        meta=nested(MAX_NESTING_DEPTH),
    )

    assert record_json(record) == record.model_dump_json()


# -- the key a delivery is recorded under ------------------------------------------------------

BAD_TASK_IDS = [
    "has space",
    "a/b",
    "glob*?[x]",
    "x" * 129,
    "x" * 100_000,
    "",
    "é",
    "\ud800",
    "a\nb",
]


@pytest.mark.parametrize("task_id", BAD_TASK_IDS, ids=range(len(BAD_TASK_IDS)))
def test_a_task_id_that_is_not_a_valid_job_id_is_recorded_under_a_derived_key(
    task_id: str,
) -> None:
    key = record_key_of({"connection": "acme"}, task_id)

    assert JOB_ID_PATTERN.fullmatch(key)
    assert key.startswith(INVALID_TASK_ID_PREFIX)
    assert key == record_key_of(None, task_id), "redeliveries find the same record"


def test_different_bad_task_ids_get_different_keys() -> None:
    keys = {record_key_of(None, task_id) for task_id in BAD_TASK_IDS}

    assert len(keys) == len(BAD_TASK_IDS)


def test_a_valid_job_id_or_task_id_is_the_key_as_it_is() -> None:
    assert record_key_of({"job_id": "rule-7:step-2"}, "has space") == "rule-7:step-2"
    assert record_key_of({"job_id": "has space"}, "task-1") == "task-1"
    assert record_key_of([], "c0ffee-4711") == "c0ffee-4711"


def test_a_job_without_a_job_id_sent_under_a_bad_task_id_is_refused_naming_the_job_id() -> None:
    job = Job(connection="acme", ticket_id="4711")

    with pytest.raises(InvalidJob) as caught:
        check_task_id(job, "has space")

    assert caught.value.message.startswith("job.job_id: ")
    assert caught.value.field == "job_id"
    check_task_id(job, "task-1")
    check_task_id(Job(job_id="own-id", connection="acme", ticket_id="4711"), "has space")
