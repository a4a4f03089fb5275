"""A file of jobs (`halo-jobs submit --jsonl`): the summary, the exit code, and progress."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pytest

from operators.bulk import EXIT_FAILED, EXIT_SUCCEEDED, EXIT_UNFINISHED, Progress, Tally


def succeeded() -> dict[str, Any]:
    return {"job_id": "j", "outcome": "succeeded", "error": None}


def failed(code: str) -> dict[str, Any]:
    return {"job_id": "j", "outcome": "failed", "error": {"code": code, "message": "..."}}


def tally_of(
    records: Sequence[dict[str, Any] | None],
    wait_s: float = 60,
    refused: int = 0,
    not_submitted: int = 0,
) -> Tally:
    tally = Tally(
        wait_s=wait_s, submitted=len(records), refused=refused, not_submitted=not_submitted
    )
    for record in records:
        tally.count(record)
    return tally


def test_the_summary_counts_jobs_by_outcome_and_failures_by_error_code_most_first() -> None:
    records: list[dict[str, Any] | None] = [succeeded()] * 190
    records += [failed("lookup_not_found")] * 3 + [failed("ticket_not_found")] * 5 + [None] * 3

    tally = tally_of(records)

    assert tally.summary() == (
        "201 jobs: 190 succeeded, 8 failed (ticket_not_found 5, lookup_not_found 3), "
        "3 not finished within 60 s"
    )


def test_error_codes_with_equal_counts_are_listed_by_name() -> None:
    tally = tally_of([failed("halo_rejected"), failed("halo_forbidden")], wait_s=2.5)

    assert tally.summary() == (
        "2 jobs: 0 succeeded, 2 failed (halo_forbidden 1, halo_rejected 1), "
        "0 not finished within 2.5 s"
    )


def test_the_summary_adds_the_lines_refused_and_not_submitted() -> None:
    tally = tally_of([succeeded()], refused=1, not_submitted=7)

    assert tally.summary() == (
        "1 job: 1 succeeded, 0 failed, 0 not finished within 60 s; "
        "1 line refused; 7 lines not submitted"
    )
    assert tally.submit_summary() == "1 submitted, 1 refused, 7 not submitted"


def test_a_failed_record_without_an_error_code_counts_as_unknown() -> None:
    tally = tally_of([{"job_id": "j", "outcome": "failed", "error": None}])

    assert tally.failed_by_code == {"unknown": 1}


@pytest.mark.parametrize(
    ("records", "lines", "code"),
    [
        ([succeeded(), succeeded()], {}, EXIT_SUCCEEDED),
        ([succeeded(), failed("ticket_not_found")], {}, EXIT_FAILED),
        ([succeeded(), None], {}, EXIT_UNFINISHED),
        ([failed("ticket_not_found"), None], {}, EXIT_UNFINISHED),
        ([succeeded()], {"refused": 1}, EXIT_UNFINISHED),
        ([failed("ticket_not_found")], {"refused": 1}, EXIT_UNFINISHED),
        ([succeeded()], {"not_submitted": 3}, EXIT_UNFINISHED),
        ([], {}, EXIT_SUCCEEDED),
    ],
    ids=[
        "all succeeded: 0",
        "one failed: 1",
        "one not finished: 2",
        "not finished wins over failed",
        "a refused line: 2",
        "a refused line wins over failed",
        "lines not submitted: 2",
        "an empty file: 0",
    ],
)
def test_the_exit_code_is_2_when_any_outcome_is_unknown_else_1_when_any_failed_else_0(
    records: list[dict[str, Any] | None], lines: dict[str, int], code: int
) -> None:
    assert (EXIT_SUCCEEDED, EXIT_FAILED, EXIT_UNFINISHED) == (0, 1, 2)
    assert tally_of(records, **lines).exit_code() == code


def test_without_a_wait_the_exit_code_says_whether_every_line_was_submitted() -> None:
    assert Tally(submitted=3).exit_code() == EXIT_SUCCEEDED
    assert Tally(submitted=2, refused=1).exit_code() == EXIT_UNFINISHED


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_a_line_of_counts_every_few_seconds() -> None:
    clock, stream = Clock(), io.StringIO()
    progress = Progress("finished", 40, stream, every_s=5, clock=clock)

    for second, done in enumerate([0, 3, 8, 8, 9, 15, 20, 20, 21, 30, 31], start=1):
        clock.now_s = 100.0 + second
        progress.update(done, note=f"{60 - second} s left")
    progress.close()

    assert stream.getvalue().splitlines() == [
        "halo-jobs: 9/40 finished, 55 s left",
        "halo-jobs: 30/40 finished, 50 s left",
    ]


def test_on_a_terminal_progress_is_one_bar_redrawn_in_place_and_ended_by_close() -> None:
    clock, stream = Clock(), Terminal()
    progress = Progress("submitted", 4, stream, clock=clock)

    for done in range(1, 5):
        clock.now_s += 1
        progress.update(done)
    progress.close()

    output = stream.getvalue()
    assert output.count("\r") == 4
    assert output.count("\n") == 1
    assert output.endswith("\r[" + "#" * 30 + "] 4/4 submitted\033[K\n")
    assert "\r[" + "#" * 15 + "." * 15 + "] 2/4 submitted" in output
