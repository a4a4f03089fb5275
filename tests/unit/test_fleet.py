"""Start-up and liveness checks that keep jobs off queues nobody consumes (no Redis needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import heartbeat
from worker.fleet import HomeQueueMissing, require_home_queue
from worker.models import QUEUE


def test_a_worker_consuming_halo_among_other_queues_may_start() -> None:
    require_home_queue({"halo", "other", "celery@host.dq2"})


@pytest.mark.parametrize("consumed", [set(), {"other"}, {"celery"}, {"halo.batch"}])
def test_a_worker_not_consuming_halo_is_refused_with_the_command_to_run(
    consumed: set[str],
) -> None:
    with pytest.raises(HomeQueueMissing) as refused:
        require_home_queue(consumed)
    assert "celery -A worker.app worker -Q halo" in str(refused.value)


def test_a_heartbeat_without_halo_among_its_queues_is_unhealthy(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    heartbeat.stamp(beat, detail=heartbeat.Detail(["celery@h.dq2"], 0.1))
    verdict = heartbeat.check(beat, 60, home_queue=QUEUE)
    assert not verdict.healthy
    assert "no longer consumes the queue 'halo'" in verdict.reason


def test_a_heartbeat_whose_mover_is_stale_is_unhealthy(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    heartbeat.stamp(beat, detail=heartbeat.Detail([QUEUE], 120.0))
    verdict = heartbeat.check(beat, 60, home_queue=QUEUE)
    assert not verdict.healthy
    assert "mover last finished a round 120 s ago" in verdict.reason


def test_a_fresh_heartbeat_consuming_halo_is_healthy_and_an_empty_one_claims_nothing(
    tmp_path: Path,
) -> None:
    beat = tmp_path / "beat"
    heartbeat.stamp(beat, detail=heartbeat.Detail([QUEUE, "celery@h.dq2"], None))
    assert heartbeat.check(beat, 60, home_queue=QUEUE).healthy
    empty = tmp_path / "empty"
    heartbeat.stamp(empty)
    assert heartbeat.check(empty, 60, home_queue=QUEUE).healthy
