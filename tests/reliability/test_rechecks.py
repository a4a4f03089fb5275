"""Races between a delivery that comes back busy and the mover that published it.

Found by the SIGKILL run (`test_worker_kills`): a job whose dead holder's claim had not lapsed
yet was looked at again every few seconds, and once, the look-again request was dropped.
"""

from __future__ import annotations

import time

from tests.reliability.fleet import Fleet
from worker.deferred import DeferredJobs
from worker.keys import DEFERRED, DEFERRED_JOBS


def test_a_busy_recheck_outlives_the_mover_releasing_the_delivery_it_answers(
    fleet: Fleet,
) -> None:
    store = DeferredJobs(fleet.redis)
    payload = {"job": {"job_id": "held"}, "submitted_at": "2026-11-29T00:00:00.000Z"}
    store.recheck_later("held", payload, due_s=time.time() - 1)
    [due] = store.take_due(limit=10, lease_s=30)
    # The mover has published the delivery; it is taken at once and is busy again (the
    # claim of a dead worker has not lapsed), before the mover releases its lease.
    store.recheck_later("held", payload, due_s=time.time() + 5.5)
    store.release_moved(due)

    assert fleet.redis.zscore(DEFERRED, "held") is not None, "the job was dropped"
    assert fleet.redis.hexists(DEFERRED_JOBS, "held")
