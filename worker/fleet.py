"""The fleet as Redis sees it: which worker consumes which queue, and work that is not moving.

Every message the fleet publishes for itself (a retry that came due, a recheck, a released
backlog batch, a job the broker lost) goes to the contract's queue, `halo`, the queue the jobs
arrive on. So however a worker is started (`-Q halo`, `-Q halo,other`, autoscaled), a worker
that takes jobs can also run everything its jobs turn into, and no job waits on an internal
queue that nothing consumes. A worker that would not consume `halo` at all (`-Q other`,
`-X halo`) refuses to start (`require_home_queue`), naming the command to run instead.

What start-up checks cannot see is a consumer cancelled at run time (Flower's
"cancel consumer", `celery control cancel_consumer halo`) or a fleet with no worker left. So
each worker announces what it consumes whenever its liveness canary runs, in the hash
``halo:workers`` (hostname → ``{"queues": [...], "seen_ms": ...}``), and `stalled_work` reads
it beside the queues, the retry set and the backlogs: `halo-jobs health` prints what it finds,
the metrics exporter exports `halo_queue_consumers`, and the Prometheus rules in
`ops/prometheus/alerts.yml` fire on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from worker.celeryconfig import RETIRED_BATCH_QUEUE
from worker.keys import BACKLOGS, DEFERRED, TICKET_WAITING, WORKERS, backlog_key
from worker.models import QUEUE

# An announcement older than this is a worker that stopped or was scaled away: forgotten, so
# the hash stays as small as the fleet. Far above any health bound, which must see it stale.
_FORGET_AFTER_S: Final = 86_400
# Messages moved from the retired batch queue per call: a mover tick stays short.
_DRAIN_BATCH: Final = 500


class HomeQueueMissing(SystemExit):
    """Raised at worker start when the worker would not consume the `halo` queue."""


def require_home_queue(consumed: Collection[str]) -> None:
    """Refuse a worker that would not consume `halo`, where every job and retry waits.

    Args:
        consumed: the names of the queues the worker was started to consume.

    Raises:
        HomeQueueMissing: `halo` is not among them; the message says what to run.
    """
    if QUEUE in consumed:
        return
    shown = ", ".join(sorted(consumed)) or "none"
    raise HomeQueueMissing(
        f"this worker would consume only [{shown}], not the queue {QUEUE!r}: every job, retry "
        f"and released batch of the service waits there, so it would strand them. Start it "
        f"with `celery -A worker.app worker -Q {QUEUE}` (or `-Q {QUEUE},<other queues>`), "
        f"and do not exclude {QUEUE!r} with -X."
    )


def announce(client: redis.Redis, hostname: str, queues: Iterable[str]) -> None:
    """Record that `hostname` consumes `queues` now (called on each canary run)."""
    entry = {"queues": sorted(set(queues)), "seen_ms": int(time.time() * 1000)}
    client.hset(WORKERS, hostname, json.dumps(entry))


@dataclass(frozen=True)
class Worker:
    """One worker's last announcement."""

    hostname: str
    queues: tuple[str, ...]
    age_s: float


def workers(client: redis.Redis, now_s: float | None = None) -> list[Worker]:
    """Every worker's last announcement; forgets those older than a day."""
    now_s = time.time() if now_s is None else now_s
    found, forgotten = [], []
    for raw_name, raw in cast(dict[Any, Any], client.hgetall(WORKERS)).items():
        name = _text(raw_name)
        try:
            entry = json.loads(_text(raw))
            age_s = max(0.0, now_s - float(entry["seen_ms"]) / 1000)
            queues = tuple(str(q) for q in entry["queues"])
        except (ValueError, KeyError, TypeError):
            forgotten.append(name)
            continue
        if age_s > _FORGET_AFTER_S:
            forgotten.append(name)
        else:
            found.append(Worker(name, queues, age_s))
    if forgotten:
        client.hdel(WORKERS, *forgotten)
    return sorted(found, key=lambda w: w.hostname)


def consumers(found: Iterable[Worker], queue: str, max_age_s: float) -> list[str]:
    """The workers seen within `max_age_s` that consume `queue`."""
    return [w.hostname for w in found if w.age_s <= max_age_s and queue in w.queues]


def drain_retired_queue(broker: redis.Redis) -> int:
    """Move messages left on the retired batch queue to `halo`, oldest first.

    Earlier releases published released batches to ``halo.batch``; after an upgrade no worker
    consumes it. Each message is moved whole and atomically (LMOVE), so none is lost or
    doubled. Returns how many were moved.
    """
    moved = 0
    # kombu publishes with LPUSH and consumes with BRPOP: the oldest message is on the right.
    while moved < _DRAIN_BATCH and broker.lmove(RETIRED_BATCH_QUEUE, QUEUE, "RIGHT", "LEFT"):
        moved += 1
    return moved


def stalled_work(
    broker: redis.Redis, results: redis.Redis, *, max_age_s: float, now_s: float | None = None
) -> list[str]:
    """Work that waits where nothing will move it; one sentence per finding, none when healthy.

    Looks for: jobs on the `halo` queue while no worker announced within `max_age_s` that it
    consumes it; messages left on the retired batch queue with no worker to move them; retries
    overdue by more than `max_age_s` (the movers that publish them are not running); parked
    jobs, and jobs waiting for their ticket's turn, while no worker runs (nothing releases a
    backlog or hands a ticket on).
    """
    now_s = time.time() if now_s is None else now_s
    fleet = workers(results, now_s)
    live = [w for w in fleet if w.age_s <= max_age_s]
    findings = []
    waiting = int(broker.llen(QUEUE))
    if waiting and not consumers(fleet, QUEUE, max_age_s):
        findings.append(
            f"{waiting} message(s) wait on the queue {QUEUE!r} and no worker has consumed it "
            f"within {max_age_s:.0f} s ({_seen(fleet)}): start a worker, or restart the ones "
            f"whose consumer was cancelled"
        )
    retired = int(broker.llen(RETIRED_BATCH_QUEUE))
    if retired and not live:
        findings.append(
            f"{retired} batch message(s) wait on the retired queue {RETIRED_BATCH_QUEUE!r} and "
            f"no worker runs to move them to {QUEUE!r}: start a worker"
        )
    first_due = cast(list[tuple[Any, float]], results.zrange(DEFERRED, 0, 0, withscores=True))
    if first_due and now_s - first_due[0][1] / 1000 > max_age_s:
        overdue_s = now_s - first_due[0][1] / 1000
        findings.append(
            f"{results.zcard(DEFERRED)} retr(ies) wait in the retry set and the oldest is "
            f"{overdue_s:.0f} s overdue: no worker is publishing them ({_seen(fleet)})"
        )
    parked = {
        name: int(results.zcard(backlog_key(name)))
        for name in sorted(_text(n) for n in cast(set[Any], results.smembers(BACKLOGS)))
    }
    parked = {name: size for name, size in parked.items() if size}
    if parked and not live:
        listed = ", ".join(f"{name}: {size}" for name, size in parked.items())
        findings.append(
            f"jobs are parked for Halo budget ({listed}) and no worker runs to release them: "
            "start a worker"
        )
    waiting_turn = int(results.hlen(TICKET_WAITING))
    if waiting_turn and not live:
        findings.append(
            f"{waiting_turn} job(s) wait for their ticket's turn and no worker runs to hand "
            "the tickets on: start a worker"
        )
    return findings


def _seen(fleet: list[Worker]) -> str:
    if not fleet:
        return "no worker has announced itself"
    newest = min(fleet, key=lambda w: w.age_s)
    return f"the last worker seen, {newest.hostname}, {newest.age_s:.0f} s ago, consumed " + (
        ", ".join(newest.queues) or "nothing"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
