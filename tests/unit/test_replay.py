"""Replay's pure parts: the job_id of a replay, and the times its filters accept."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from operators.failed import replay_job_id
from operators.replay import parse_when
from worker.models import JOB_ID_PATTERN


def test_a_replay_id_is_the_original_with_its_replay_number() -> None:
    assert replay_job_id("rule-7f3a:step-2", 1) == "rule-7f3a:step-2:replay-1"
    assert replay_job_id("rule-7f3a:step-2:replay-1", 3) == "rule-7f3a:step-2:replay-1:replay-3"


@pytest.mark.parametrize(
    "original", ["r" * 128, "r" * 119, "r" * 120 + "-a", "task id with spaces/and slashes"]
)
def test_a_replay_id_that_would_not_fit_the_job_id_format_is_hashed_into_it(
    original: str,
) -> None:
    replayed = replay_job_id(original, 12)

    assert JOB_ID_PATTERN.fullmatch(replayed)
    assert replayed.endswith(":replay-12")
    assert replayed != replay_job_id(original + "b", 12)


def test_long_ids_that_share_a_prefix_get_different_replay_ids() -> None:
    assert replay_job_id("p" * 126 + "-a", 1) != replay_job_id("p" * 126 + "-b", 1)


def test_a_time_filter_takes_iso_times_in_utc_unless_they_say_otherwise() -> None:
    assert parse_when("2026-11-27T10:00:00Z") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_when("2026-11-27T10:00") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_when("2026-11-27T12:00+02:00") == datetime(2026, 11, 27, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "age"),
    [("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)),
     ("7d", timedelta(days=7)), ("1w", timedelta(weeks=1))],
)  # fmt: skip
def test_a_time_filter_takes_an_age_before_now(text: str, age: timedelta) -> None:
    expected = datetime.now(UTC) - age
    assert abs(parse_when(text) - expected) < timedelta(seconds=5)


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-3h", "", "2026-13-01"])
def test_a_time_filter_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        parse_when(text)
