"""A released batch's jobs, taken in one by one before the batch touches Halo.

Each parked job goes through the single job's steps (`JobRunner.admit`): a job already
recorded is skipped, an invalid or unrenderable one is recorded now, and a job whose ticket
another job holds, or whose turn has not come, leaves the batch and waits for its turn. A job
whose ticket an earlier member of the same batch holds only takes its place in the line, and
runs after that member. Only the backlog check is skipped: the batch is that backlog.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

from worker.backlog import Parked
from worker.runner import Claimed, JobRunner, RunResult
from worker.update import Plan, Rendered


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
    """Admit one job of the batch as a single job is admitted, without joining the backlog it
    came from. Returns the member, or None and how many records were written.

    Members keep their claims (in `claims`) until the batch ends; a job that waits for its
    ticket gives its claim up now, so it can run as soon as its turn comes.
    """
    submitted_at = entry.submitted_at or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    admitted = runner.admit(
        entry.job_id, entry.job, submitted_at, started_s, claims, check_backlog=False, held=held
    )
    if isinstance(admitted, RunResult):
        return None, 1 if admitted is RunResult.RECORDED else 0
    return Member(admitted.claimed, admitted.rendered, has_turn=admitted.has_turn), 0
