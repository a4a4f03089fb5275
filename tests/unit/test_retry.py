"""The retry schedule: exponential backoff with full jitter, inside an attempt and time budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import HaloRateLimited, HaloUnavailable, RetryableError
from worker.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=6, max_total_s=100.0, base_s=2.0, cap_s=10.0)
UNAVAILABLE = HaloUnavailable("Halo answered 503")


@pytest.mark.parametrize(
    ("attempt", "ceiling_s"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (5, 10.0), (40, 10.0), (10_000, 10.0)],
)
def test_the_backoff_ceiling_doubles_per_attempt_up_to_the_cap(
    attempt: int, ceiling_s: float
) -> None:
    assert POLICY.backoff_s(attempt, rand=lambda: 1.0) == ceiling_s
    assert POLICY.backoff_s(attempt, rand=lambda: 0.0) == 0.0


@given(attempt=st.integers(1, 10_000), rand=st.floats(0.0, 1.0))
def test_full_jitter_spans_zero_to_the_ceiling_and_never_leaves_it(
    attempt: int, rand: float
) -> None:
    ceiling_s = min(POLICY.cap_s, POLICY.base_s * 2 ** min(attempt - 1, 32))

    delay_s = POLICY.backoff_s(attempt, rand=lambda: rand)

    assert delay_s == pytest.approx(rand * ceiling_s)
    assert 0.0 <= delay_s <= POLICY.cap_s


def test_the_default_jitter_is_random_within_the_range() -> None:
    delays = {POLICY.backoff_s(3) for _ in range(200)}

    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(delays) > 100  # spread, not one fixed value
    assert min(delays) < 2.0
    assert max(delays) > 6.0


def test_a_retry_after_is_a_floor_under_the_jittered_backoff() -> None:
    limited = HaloRateLimited("429", http_status=429, retry_after_s=7.0)

    assert POLICY.next_delay_s(limited, attempt=1, elapsed_s=0, rand=lambda: 0.0) == 7.0
    # A backoff longer than Retry-After is kept: Retry-After never shortens it.
    assert POLICY.next_delay_s(limited, attempt=4, elapsed_s=0, rand=lambda: 1.0) == 10.0


def test_a_retry_after_beyond_the_cap_is_still_honoured() -> None:
    limited = HaloRateLimited("429", http_status=429, retry_after_s=30.0)

    assert POLICY.next_delay_s(limited, attempt=1, elapsed_s=0, rand=lambda: 0.5) == 30.0


def test_without_retry_after_the_delay_is_the_jittered_backoff() -> None:
    delay_s = POLICY.next_delay_s(UNAVAILABLE, attempt=2, elapsed_s=0, rand=lambda: 0.25)

    assert delay_s == 1.0


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_attempts_below_the_cap_are_retried(attempt: int) -> None:
    assert POLICY.next_delay_s(UNAVAILABLE, attempt=attempt, elapsed_s=0) is not None


@pytest.mark.parametrize("attempt", [6, 7, 100])
def test_no_retry_once_the_attempt_cap_is_reached(attempt: int) -> None:
    assert POLICY.next_delay_s(UNAVAILABLE, attempt=attempt, elapsed_s=0) is None


def test_a_single_attempt_policy_never_retries() -> None:
    once = RetryPolicy(max_attempts=1)

    assert once.next_delay_s(UNAVAILABLE, attempt=1, elapsed_s=0) is None


def test_no_retry_when_the_wait_would_end_past_the_total_time_cap() -> None:
    # 95 s spent; a 4 s wait ends at 99 s (inside), a 6 s wait at 101 s (past 100 s).
    assert POLICY.next_delay_s(UNAVAILABLE, attempt=3, elapsed_s=95, rand=lambda: 0.5) == 4.0
    assert POLICY.next_delay_s(UNAVAILABLE, attempt=3, elapsed_s=95, rand=lambda: 0.75) is None


def test_a_retry_after_that_would_outlast_the_total_time_cap_ends_the_retries() -> None:
    limited = HaloRateLimited("429", http_status=429, retry_after_s=60.0)

    assert POLICY.next_delay_s(limited, attempt=1, elapsed_s=50, rand=lambda: 0.0) is None
    assert POLICY.next_delay_s(limited, attempt=1, elapsed_s=40, rand=lambda: 0.0) == 60.0


def test_time_already_past_the_total_cap_ends_the_retries() -> None:
    assert POLICY.next_delay_s(UNAVAILABLE, attempt=1, elapsed_s=101, rand=lambda: 0.0) is None


@given(
    attempt=st.integers(1, 50),
    elapsed_s=st.floats(0.0, 200.0),
    rand=st.floats(0.0, 1.0),
    retry_after_s=st.one_of(st.none(), st.floats(0.0, 120.0)),
)
def test_every_scheduled_wait_fits_both_budgets_and_respects_retry_after(
    attempt: int, elapsed_s: float, rand: float, retry_after_s: float | None
) -> None:
    error = RetryableError("transient", retry_after_s=retry_after_s)

    delay_s = POLICY.next_delay_s(error, attempt=attempt, elapsed_s=elapsed_s, rand=lambda: rand)

    if delay_s is not None:
        assert attempt < POLICY.max_attempts
        assert elapsed_s + delay_s <= POLICY.max_total_s
        assert delay_s >= (retry_after_s or 0.0)
        assert delay_s <= max(POLICY.cap_s, retry_after_s or 0.0)


def test_the_defaults_outlast_halos_five_minute_rate_window() -> None:
    default = RetryPolicy()
    # The largest waits the attempt cap allows, ignoring jitter, must be able to reach 300 s.
    longest_s = sum(default.backoff_s(n, rand=lambda: 1.0) for n in range(1, default.max_attempts))

    assert longest_s > 300.0
    assert default.max_total_s > 300.0
