"""The mover's step throttle (worker.deferrals.every)."""

from __future__ import annotations

import time

from worker.deferrals import every


def test_a_throttled_step_runs_at_most_once_per_interval() -> None:
    calls: list[float] = []

    def step() -> int:
        calls.append(time.monotonic())
        return 1

    throttled = every(0.2, step)

    assert throttled() == 1  # the first tick runs at once
    assert [throttled() for _ in range(50)] == [0] * 50
    time.sleep(0.25)
    assert throttled() == 1
    assert len(calls) == 2
