"""What a run left behind, job by job: records, feed entries, Halo writes, and anything stuck.

"Effective update": a ticket POST that changed the stored summary. Each test job writes a
summary of its own to a ticket of its own, so per ticket the request log tells the job's first
write (effective), any repeat of the same values (a duplicate POST: harmless for an update,
counted and reported), and any write after an agent edited the ticket once the job had its
record (effective again: a double write, which must never happen).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import redis

from fakehalo import FakeHalo
from fakehalo.seeds import plain_ticket
from tests.reliability.fleet import Fleet, Record, summary_of
from worker.keys import (
    DEFERRED,
    DEFERRED_JOBS,
    RESULTS_STREAM,
    TICKET_WAITING,
    UNFINISHED,
    UNFINISHED_JOBS,
)
from worker.models import QUEUE

# Kombu's Redis transport keeps delivered, unacknowledged messages here (kombu 5.7.0,
# `transport/redis.py`, `unacked_key`), and a queue's messages of priority p > 0 in the list
# "<queue>\x06\x16<p>" (`Channel.sep`).
UNACKED: Final = "unacked"
_PRIORITY_SEP: Final = "\x06\x16"
# The job queue and the backlog batches' queue (`worker.app.BATCH_QUEUE`).
JOB_QUEUES: Final = frozenset({QUEUE, "halo.batch"})


def edited_summary(job_id: str) -> str:
    """What the simulated agent writes over a job's summary once the job has its record."""
    return f"edited by an agent after {job_id} finished"


class AgentEdits(threading.Thread):
    """Plays an agent who edits each ticket as soon as its job's record is in the feed.

    A run of the job after its record (a redelivery that is not recognised as done) would
    POST the job's summary again over the edit: an effective second write, which the audit
    reports as a double write.
    """

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(name="agent-edits", daemon=True)
        self._fake = fleet.fake
        self._tickets = dict(fleet.tickets)
        self._redis = fleet.client()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._edited_at: dict[str, float] = {}

    def run(self) -> None:
        last = "0"
        while not self._halt.is_set():
            try:
                batches = cast(
                    list[Any], self._redis.xread({RESULTS_STREAM: last}, count=500, block=200)
                )
            except redis.RedisError:
                self._halt.wait(0.5)  # Redis is restarting: pick up where we were
                continue
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._edit(str(fields["job_id"]))

    def _edit(self, job_id: str) -> None:
        ticket_id = self._tickets.get(job_id)
        if ticket_id is None or job_id in self.edited_at():
            return
        ticket = self._fake.ticket(ticket_id) or plain_ticket(ticket_id)
        self._fake.add_ticket(**{**ticket, "summary": edited_summary(job_id)})
        with self._lock:
            self._edited_at[job_id] = time.monotonic()

    def edited_at(self) -> dict[str, float]:
        """When each edited job's ticket was edited (this process's monotonic clock, the
        clock of the fake's request log)."""
        with self._lock:
            return dict(self._edited_at)

    def wait_for(self, job_ids: Iterable[str], timeout_s: float = 10.0) -> None:
        """Wait until every job in `job_ids` that has a feed entry was edited."""
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fed = set(feed_job_ids(self._redis))
            if (fed & wanted) <= set(self.edited_at()):
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self._redis.close()


@dataclass
class Writes:
    """The ticket POSTs of one job, read from the fake's request log."""

    posts: int = 0  # POSTs answered with success
    effective: int = 0  # those that changed the stored summary
    failed: int = 0  # POSTs answered with an error (not saved)

    @property
    def duplicates(self) -> int:
        return self.posts - self.effective


def writes_of(
    fake: FakeHalo, tickets: Mapping[str, int], edited_at: Mapping[str, float]
) -> dict[str, Writes]:
    """Per job: its POSTs, walked in order against the stored summary (and the agent's edit)."""
    by_ticket = {ticket_id: job_id for job_id, ticket_id in tickets.items()}
    events: dict[str, list[tuple[float, str, int | None]]] = {j: [] for j in tickets}
    for request in fake.posts():
        elements = request.json if isinstance(request.json, list) else [request.json]
        for element in elements:
            if not isinstance(element, dict) or element.get("id") not in by_ticket:
                continue
            job_id = by_ticket[element["id"]]
            events[job_id].append((request.time_s, str(element.get("summary")), request.status))
    found: dict[str, Writes] = {}
    for job_id, posts in events.items():
        if job_id in edited_at:
            posts.append((edited_at[job_id], edited_summary(job_id), -1))
        stored = f"ticket {tickets[job_id]}"
        writes = Writes()
        for _, summary, status in sorted(posts, key=lambda event: event[0]):
            if status == -1:
                stored = summary
            elif status is None or not 200 <= status < 300:
                writes.failed += 1  # refused or dropped: nothing was saved
            else:
                # Answered with success, even if the worker died before reading the answer.
                writes.posts += 1
                if summary != stored:
                    writes.effective += 1
                    stored = summary
        found[job_id] = writes
    return found


def feed_job_ids(client: redis.Redis) -> list[str]:
    """The job_id of every completion-feed entry, in order."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(RESULTS_STREAM))
    return [fields["job_id"] for _, fields in entries]


def stuck(client: redis.Redis) -> dict[str, int]:
    """What is still waiting in Redis: deferrals, claims, jobs waiting for their ticket and
    ticket holds, backlogs, queued and unacked messages. All zero once a run has settled."""
    counts: Counter[str] = Counter()
    counts["deferred"] = int(client.zcard(DEFERRED)) + int(client.hlen(DEFERRED_JOBS))
    counts["unfinished"] = int(client.zcard(UNFINISHED)) + int(client.hlen(UNFINISHED_JOBS))
    counts["unacked"] = int(client.hlen(UNACKED))
    counts["ticket_waits"] = int(client.hlen(TICKET_WAITING))
    for key in client.scan_iter(count=1000):
        name = str(key)
        if name.startswith("halo:claim:"):
            counts["claims"] += 1
        elif name.startswith("halo:ticket:") and client.type(name) == "string":
            counts["ticket_holds"] += 1
        elif name.startswith("halo:backlog") and client.type(name) == "zset":
            counts["backlogged"] += int(client.zcard(name))
        elif name.split(_PRIORITY_SEP, maxsplit=1)[0] in JOB_QUEUES:
            counts["queued"] += int(client.llen(name))
    return {
        name: counts[name]
        for name in (
            "deferred",
            "unfinished",
            "claims",
            "ticket_waits",
            "ticket_holds",
            "backlogged",
            "queued",
            "unacked",
        )
    }


def settle(client: redis.Redis, timeout_s: float) -> tuple[dict[str, int], float]:
    """Wait until nothing is stuck, or `timeout_s`; returns the last counts and the wait."""
    started = time.monotonic()
    while True:
        counts = stuck(client)
        waited = time.monotonic() - started
        if not any(counts.values()) or waited > timeout_s:
            return counts, waited
        time.sleep(0.2)


def latency_s(record: Record) -> float:
    """Seconds from submission to the record."""
    submitted = datetime.fromisoformat(str(record["submitted_at"]))
    finished = datetime.fromisoformat(str(record["finished_at"]))
    return (finished - submitted).total_seconds()


@dataclass
class Audit:
    """Every job of a run, checked one by one; `summary()` gives the figures."""

    jobs: int
    records: dict[str, Record]
    feed: Counter[str]
    writes: dict[str, Writes]
    stuck: dict[str, int]
    created_tickets: int
    values_kept: dict[str, bool] = field(default_factory=dict)

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.writes) - set(self.records))

    @property
    def feed_wrong(self) -> list[str]:
        """Jobs without exactly one completion-feed entry."""
        return sorted(j for j in self.writes if self.feed[j] != 1)

    @property
    def double_writes(self) -> int:
        return sum(max(0, w.effective - 1) for w in self.writes.values())

    @property
    def never_written(self) -> list[str]:
        return sorted(j for j, w in self.writes.items() if w.effective == 0)

    @property
    def duplicate_posts(self) -> int:
        return sum(w.duplicates for w in self.writes.values())

    @property
    def rerun(self) -> list[str]:
        """Jobs that took more than one run (a run was cut short, or retried)."""
        return sorted(j for j, r in self.records.items() if int(r["attempts"]) > 1)

    def summary(self) -> dict[str, Any]:
        outcomes = Counter(str(r["outcome"]) for r in self.records.values())
        rerun = [latency_s(self.records[j]) for j in self.rerun]
        first = [latency_s(r) for j, r in self.records.items() if j not in set(self.rerun)]
        return {
            "jobs": self.jobs,
            "records": len(self.records),
            "outcomes": dict(outcomes),
            "lost": len(self.lost),
            "feed_not_once": len(self.feed_wrong),
            "jobs_rerun": len(rerun),
            "double_writes": self.double_writes,
            "duplicate_posts": self.duplicate_posts,
            "failed_posts": sum(w.failed for w in self.writes.values()),
            "tickets_created": self.created_tickets,
            "stuck": self.stuck,
            "latency_s_first_run_median": _round(statistics.median(first)) if first else None,
            "latency_s_rerun_median": _round(statistics.median(rerun)) if rerun else None,
            "latency_s_rerun_max": _round(max(rerun)) if rerun else None,
        }


def audit(fleet: Fleet, job_ids: Iterable[str], agent: AgentEdits | None, settle_s: float) -> Audit:
    """Check a finished run: wait (up to `settle_s`) for Redis to settle, then look at every job."""
    ids = list(job_ids)
    counts, _ = settle(fleet.redis, settle_s)
    feed = Counter(feed_job_ids(fleet.redis))
    if agent is not None:
        agent.wait_for(ids)
        agent.stop()
    edited = agent.edited_at() if agent is not None else {}
    tickets = {j: fleet.tickets[j] for j in ids}
    kept = {}
    for job_id, ticket_id in tickets.items():
        ticket = fleet.fake.ticket(ticket_id) or {}
        expected = edited_summary(job_id) if job_id in edited else summary_of(job_id)
        kept[job_id] = ticket.get("summary") == expected
    return Audit(
        jobs=len(ids),
        records=fleet.records(ids),
        feed=feed,
        writes=writes_of(fleet.fake, tickets, edited),
        stuck=counts,
        created_tickets=len(fleet.fake.created_tickets()),
        values_kept=kept,
    )


def _round(value: float) -> float:
    return round(value, 2)


def wait_for_records(fleet: Fleet, job_ids: Iterable[str], timeout_s: float) -> float:
    """Wait until every job has a record; returns the seconds waited (fails the test after
    `timeout_s`, naming how many are missing)."""
    ids = list(job_ids)
    started = time.monotonic()
    missing = ids
    while missing:
        with contextlib.suppress(redis.ConnectionError):
            found = fleet.records(missing)
            missing = [j for j in missing if j not in found]
        waited = time.monotonic() - started
        assert waited < timeout_s or not missing, (
            f"{len(missing)} of {len(ids)} jobs have no record after {timeout_s:g} s, "
            f"e.g. {missing[:3]}; stuck: {stuck(fleet.redis)}"
        )
        if missing:
            time.sleep(0.25)
    return time.monotonic() - started
