"""A released batch's jobs, taken in one by one before the batch touches Halo.

Each parked job is validated, claimed and counted like a single job, rendered, and given its
ticket's turn (`worker.tickets`): a job already recorded is skipped, an invalid or
unrenderable one is recorded now, and a job whose ticket another job holds, or whose turn has
not come, leaves the batch and waits for its turn. A job whose ticket an earlier member of
the same batch holds only takes its place in the line, and runs after that member.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

from worker.backlog import Parked
from worker.errors import JobError
from worker.runner import Claimed, JobRunner
from worker.tickets import Turn
from worker.update import Plan, Rendered, render_job


@dataclass
class Member:
    """A job of a batch, claimed and rendered, with what the batch did for it so far."""

    claimed: Claimed
    rendered: Rendered
    has_turn: bool = True  # False: it follows another member on its ticket (placed only)
    listed: bool = False  # its ticket came from a list read (no `*_name` labels)
    own_requests: int = 0
    shared_requests: float = 0.0
    plan: Plan | None = None


def admit(
    runner: JobRunner, claims: ExitStack, entry: Parked, started_s: float, held: set[int]
) -> tuple[Member | None, int]:
    """Validate, claim and count one job of the batch, render it, and take its ticket (only a
    place in its line when an earlier member has the ticket: `held`)."""
    if runner.store.get(entry.job_id) is not None:
        return None, 0
    submitted_at = entry.submitted_at or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    job = runner.validate(entry.job_id, entry.job, submitted_at, started_s)
    if job is None:
        return None, 1
    with ExitStack() as own:
        if not own.enter_context(runner.store.claim(entry.job_id, lease_s=runner.lease_s)):
            runner.busy(entry.job_id, entry.job, submitted_at)
            return None, 0
        claimed = runner.begin(job, entry.job_id, entry.job, submitted_at, started_s)
        member, done = _take_turn(runner, claimed, started_s, held) if claimed else (None, 0)
        if member is not None:
            # Members keep their claims until the batch ends; a job that waits for its ticket
            # gives its claim up now, so it can run as soon as its turn comes.
            claims.enter_context(own.pop_all())
        return member, done


def _take_turn(
    runner: JobRunner, claimed: Claimed, started_s: float, held: set[int]
) -> tuple[Member | None, int]:
    """Render a claimed job and take its ticket: a member, or None (recorded or waiting)."""
    try:
        rendered = render_job(claimed.job)
    except JobError as error:
        runner.finish(runner.failure(claimed, error, 0), claimed.payload, started_s)
        return None, 1
    placed = replace(claimed, ticket_id=rendered.ticket_id)
    if rendered.ticket_id in held:
        # It runs after the member holding its ticket (`_Batch._alone`); its place in line
        # keeps later jobs from taking the ticket in between.
        runner.take_turn(claimed, rendered.ticket_id, check_backlog=False, place_only=True)
        return Member(placed, rendered, has_turn=False), 0
    if runner.take_turn(claimed, rendered.ticket_id, check_backlog=False) is not Turn.GO:
        return None, 0
    return Member(placed, rendered), 0
