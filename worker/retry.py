"""When to run a failed job again: exponential backoff with full jitter, inside a budget.

Pure functions of the attempt number and elapsed time, so the schedule is unit-tested without
a clock. Only `RetryableError`s are ever retried (timeouts, connection errors, 408, 429, 5xx).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from worker.errors import RetryableError


@dataclass(frozen=True)
class RetryPolicy:
    """A job's retry budget: at most `max_attempts` runs within `max_total_s` seconds.

    The defaults (12 runs, 15 minutes, waits of up to a minute) outlast Halo's rolling
    5-minute rate window three times over.
    """

    max_attempts: int = 12
    max_total_s: float = 900.0
    base_s: float = 2.0
    cap_s: float = 60.0

    def backoff_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after run number `attempt` (1-based): uniform in [0, min(cap, base·2ⁿ⁻¹)].

        Full jitter spreads a burst of failures over the whole interval, so a fleet that hit
        Halo's limit together does not come back together.
        """
        ceiling_s = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 32))
        return rand() * ceiling_s

    def next_delay_s(
        self,
        error: RetryableError,
        *,
        attempt: int,
        elapsed_s: float,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """How long to wait before the next run, or None when the budget is spent.

        A ``Retry-After`` from Halo is a floor under the jittered backoff, never shortened.

        Args:
            error: what made run number `attempt` fail.
            attempt: runs made so far, this one included.
            elapsed_s: seconds since the job's first run started.
        """
        if attempt >= self.max_attempts:
            return None
        delay_s = self.backoff_s(attempt, rand)
        if error.retry_after_s is not None:
            delay_s = max(delay_s, error.retry_after_s)
        if elapsed_s + delay_s > self.max_total_s:
            return None
        return delay_s
