"""The worker's start-up heap is frozen, so the garbage deliveries leave stays bounded.

`worker.heap.freeze_startup` runs once the worker is ready (`worker.app`). What a delivery
leaves in reference cycles (a waiting delivery: Celery's retry traceback, about 45 KiB) must be
collected after a number of deliveries that does not grow with what start-up built.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterator

import pytest
from celery import signals

from worker import heap


class _Delivery:
    """What one delivery leaves behind: a reference cycle holding container objects."""

    alive = 0

    def __init__(self) -> None:
        _Delivery.alive += 1
        self.cycle = self
        self.frames = [[n] for n in range(100)]

    def __del__(self) -> None:
        _Delivery.alive -= 1


@pytest.fixture
def thawed() -> Iterator[None]:
    """Leave the collector as the test found it: nothing frozen."""
    gc.collect()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()
    gc.collect()


def _uncollected_at_worst(startup_objects: int, deliveries: int = 20_000) -> int:
    """The most deliveries' garbage waiting for the collector at once, after a start-up that
    built `startup_objects` container objects and froze them. Eight deliveries are in flight
    at a time, so their objects live through young collections, as a worker's do."""
    startup = [[n] for n in range(startup_objects)]
    heap.freeze_startup()
    in_flight: deque[_Delivery] = deque()
    worst = 0
    for _ in range(deliveries):
        in_flight.append(_Delivery())
        if len(in_flight) > 8:
            in_flight.popleft()
        worst = max(worst, _Delivery.alive - len(in_flight))
    in_flight.clear()
    del startup
    gc.unfreeze()
    gc.collect()
    return worst


@pytest.mark.usefixtures("thawed")
def test_freeze_startup_freezes_what_is_alive_and_still_collects_what_comes_after() -> None:
    startup = [[n] for n in range(1000)]
    assert heap.freeze_startup() >= len(startup)
    later = _Delivery()
    del later
    assert gc.collect() > 0
    assert _Delivery.alive == 0


@pytest.mark.usefixtures("thawed")
def test_garbage_of_deliveries_waits_for_no_more_deliveries_when_startup_is_larger() -> None:
    small = _uncollected_at_worst(100_000)
    large = _uncollected_at_worst(400_000)
    # Unfrozen, a start-up four times larger lets about four times more garbage pile up
    # (CPython 3.11: a full collection waits for a quarter of the survivors of the last).
    assert large <= small * 1.5 + 50
    assert large < 500


def test_the_worker_freezes_its_startup_heap_once_ready() -> None:
    from worker import app  # noqa: PLC0415 - connects the worker's signal hooks

    receivers = [getattr(r(), "__name__", "") for _, r in signals.worker_ready.receivers]
    assert app._freeze_startup_heap.__name__ in receivers
