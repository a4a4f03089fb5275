"""A released batch's jobs: each admitted as a single job is, and charged its share of the
batch's Halo requests.

Each parked job goes through the single job's admission (`worker.admission`): a job already
recorded is skipped, an invalid or unrenderable one is recorded now, and a job whose ticket
another job holds, or whose turn has not come, leaves the batch and waits for its turn. A job
whose ticket an earlier member of the same batch holds only takes its place in the line, and
runs after that member. Only the backlog check is skipped: the batch is that backlog.

`halo_requests` in a batched record is the job's share of the batch's requests: those made for
it alone, plus an equal part of each shared one among the jobs still in the batch when it was
made, rounded to 0.001. The shares of a batch add up to the requests it made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

from worker.backlog import Parked
from worker.halo.client import HaloClient
from worker.runner import JobRunner
from worker.runs import Claimed, RunResult
from worker.update import Plan, Rendered

T = TypeVar("T")


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
    admitted = runner.admission.admit(
        entry.job_id, entry.job, submitted_at, started_s, claims, check_backlog=False, held=held
    )
    if isinstance(admitted, RunResult):
        return None, 1 if admitted is RunResult.RECORDED else 0
    return Member(admitted.claimed, admitted.rendered, has_turn=admitted.has_turn), 0


class Shares:
    """The members of a batch still without an ending, and each one's share of the requests
    the batch's client made."""

    def __init__(self, client: HaloClient, members: list[Member]) -> None:
        self.client = client
        self.members = members
        self.open = list(members)  # members without a record, deferral or park yet
        self.settled = 0  # shared requests already divided among members

    def own(self, member: Member, work: Callable[[], T]) -> T:
        """Run `work`, charging the requests it makes to `member` alone."""
        before = self.client.requests_made
        try:
            return work()
        finally:
            member.own_requests += self.client.requests_made - before

    def share(self, member: Member) -> float:
        """The requests `member` made so far; call it before the member leaves `open`."""
        # Shared requests made since the last call are divided among the members still open:
        # members leave only after a call, so those are the ones that were in when they were
        # made, and every shared request is divided exactly once.
        shared = self.client.requests_made - sum(m.own_requests for m in self.members)
        if shared > self.settled and self.open:
            part = (shared - self.settled) / len(self.open)
            for other in self.open:
                other.shared_requests += part
            self.settled = shared
        return member.own_requests + member.shared_requests

    def leave(self, member: Member) -> float:
        """Take `member` out of the batch; returns its share of the batch's requests."""
        made = self.share(member)
        self.open.remove(member)
        return made
