"""A released backlog batch: many jobs of one connection, one list read, one POST.

Each job still ends in its own exact record: it is validated, claimed and counted like a single
job, planned against its own ticket, and recorded with its own `changed_fields`, warnings and
disposition. Only Halo's work is shared:

    render all → GET /api/Tickets?ticketids=… → plan each → POST [changed…] → record each

If Halo refuses the combined POST (400/422 or an answer that does not match), every changed job
is sent again on its own, so one bad ticket cannot fail its neighbours. A retryable failure
sends every affected job back to its retry schedule, as a single job would be.

Jobs of one ticket take turns, in the batch as anywhere (`worker.tickets`): a job whose ticket
another job holds, or whose turn has not come, leaves the batch and waits for its turn. (A
runner without ticket lines runs a later job for a ticket that an earlier job of the batch also
updates on its own after the POST: read, plan, POST.)

`halo_requests` in a batched record is the job's share of the batch's requests: those made for
it alone, plus an equal part of each shared one among the jobs still in the batch when it was
made, rounded to 0.001. The shares of a batch add up to the requests it made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import redis

from worker.backlog import Parked
from worker.claims import RedisJournal
from worker.errors import (
    JobError,
    PermanentError,
    RetryableError,
    TicketNotFound,
)
from worker.halo.client import HaloClient, Ticket
from worker.runner import Claimed, JobRunner, RunResult
from worker.tickets import Turn
from worker.update import Plan, Rendered, Updated, apply_plan, plan_update

T = TypeVar("T")


@dataclass
class _Member:
    claimed: Claimed
    rendered: Rendered
    has_turn: bool = True  # False: it follows another member on its ticket (placed only)
    own_requests: int = 0
    shared_requests: float = 0.0
    plan: Plan | None = None


def run_batch(runner: JobRunner, connection: str, parked: list[Parked], prepaid: int) -> int:
    """Run a released batch; returns how many jobs ended with a record.

    Raises:
        redis.RedisError: the result store is unreachable (the caller requeues the batch).
    """
    started_s = time.monotonic()
    recorded = 0
    with ExitStack() as claims:
        members: list[_Member] = []
        for entry in parked:
            held = {m.rendered.ticket_id for m in members}
            member, done = _admit(runner, claims, entry, started_s, held)
            recorded += done
            if member is not None:
                members.append(member)
        if not members:
            return recorded
        client = runner.clients.for_job(
            connection,
            deadline_s=time.monotonic() + runner.config.job_deadline_s,
            prepaid=prepaid,
        )
        batch = _Batch(runner, client, members, started_s)
        try:
            recorded += batch.run()
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, reported, never retried.
            internal = runner.internal_error(connection, exc)
            recorded += batch.fail_all(internal)
    return recorded


def _admit(
    runner: JobRunner, claims: ExitStack, entry: Parked, started_s: float, held: set[int]
) -> tuple[_Member | None, int]:
    """Admit one job of the batch as a single job is (`JobRunner.admit`), without joining the
    backlog it came from; a job whose ticket an earlier member holds (`held`) runs after that
    member (`_Batch._alone`). Returns the member, or None and how many records were written.

    Members keep their claims (in `claims`) until the batch ends; a job that waits for its
    ticket gives its claim up now, so it can run as soon as its turn comes.
    """
    submitted_at = entry.submitted_at or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    admitted = runner.admit(
        entry.job_id, entry.job, submitted_at, started_s, claims, check_backlog=False, held=held
    )
    if isinstance(admitted, RunResult):
        return None, 1 if admitted is RunResult.RECORDED else 0
    return _Member(admitted.claimed, admitted.rendered, has_turn=admitted.has_turn), 0


class _Batch:
    def __init__(
        self, runner: JobRunner, client: HaloClient, members: list[_Member], started_s: float
    ) -> None:
        self.runner = runner
        self.client = client
        self.members = members
        self.started_s = started_s
        self.open = list(members)  # members without a record, deferral or park yet
        self.listed = False  # whether tickets came from a list read (no `*_name` labels)
        self.shared_settled = 0  # shared requests already divided among members

    def run(self) -> int:
        done = 0
        try:
            tickets = self._read()
        except RetryableError as error:
            return self._retry_all(error)
        except PermanentError as error:
            return self.fail_all(error)
        planned: set[int] = set()
        later: list[_Member] = []
        for member in list(self.open):
            ticket = tickets.get(member.rendered.ticket_id)
            if ticket is not None and member.rendered.ticket_id in planned:
                # Planned against the same read, its diff would miss (or undo) what the
                # earlier job writes: it runs alone, after the batch's POST.
                later.append(member)
                continue
            planned.add(member.rendered.ticket_id)
            if ticket is None:
                done += self._fail(member, TicketNotFound(
                    f"Halo has no ticket {member.rendered.ticket_id} on connection "
                    f"{self.client.connection.name!r}",
                    field="ticket_id",
                    http_status=404,
                ))  # fmt: skip
                continue
            try:
                member.plan = self._own(member, partial(self._plan, member, ticket))
            except RetryableError as error:
                done += self._retry(member, error)
            except JobError as error:
                done += self._fail(member, error)
        done += self._write()
        return done + sum(self._alone(member) for member in later)

    def _plan(self, member: _Member, ticket: Ticket) -> Plan:
        job, rendered = member.claimed.job, member.rendered
        return plan_update(job, self.client, rendered=rendered, ticket=ticket)

    def _read(self) -> dict[int, Ticket]:
        ids = sorted({m.rendered.ticket_id for m in self.members})
        self.listed = len(ids) > 1
        if not self.listed:
            # One ticket: the single read carries the `*_name` labels a list read lacks.
            try:
                return {ids[0]: self.client.get_ticket(ids[0])}
            except TicketNotFound:
                return {}
        return self.client.get_tickets(ids)

    def _write(self) -> int:
        done = 0
        changed = [m for m in self.open if m.plan and m.plan.changed_fields]
        unchanged = [m for m in self.open if m.plan and not m.plan.changed_fields]
        saved: dict[int, Ticket] | None = None
        if len(changed) > 1:
            for member in changed:
                self.runner.store.claims.journal(member.claimed.job_id).note(
                    member.plan.changed_fields if member.plan else []
                )
            try:
                saved = self.client.update_tickets([m.plan.payload for m in changed if m.plan])
            except RetryableError as error:
                for member in changed:
                    done += self._retry(member, error)
                changed = []
            except PermanentError:
                saved = None  # fall back to one POST per job below
        for member in changed + unchanged:
            done += self._apply(member, saved)
        return done

    def _apply(self, member: _Member, saved: dict[int, Ticket] | None) -> int:
        plan = member.plan
        assert plan is not None  # only planned members get here
        journal = self.runner.store.claims.journal(member.claimed.job_id)
        try:
            updated = self._own(member, lambda: self._apply_plan(plan, saved, journal))
        except RetryableError as error:
            return self._retry(member, error)
        except JobError as error:
            return self._fail(member, error)
        return self._succeed(member, updated)

    def _alone(self, member: _Member) -> int:
        """Run a member as a single job would run: take its ticket, read it, plan, apply."""
        job, rendered = member.claimed.job, member.rendered
        if not member.has_turn:
            made = self._share(member)
            turn = self.runner.take_turn(
                member.claimed, rendered.ticket_id, check_backlog=False, halo_requests=made
            )
            if turn is not Turn.GO:
                # A job ahead of it (the member before it, deferred) keeps the ticket: it
                # waits for its turn outside the batch.
                self.open.remove(member)
                return 0
        journal = self.runner.store.claims.journal(member.claimed.job_id)

        def update() -> Updated:
            plan = plan_update(job, self.client, rendered=rendered)
            return apply_plan(plan, self.client, journal=journal)

        try:
            updated = self._own(member, update)
        except RetryableError as error:
            return self._retry(member, error)
        except JobError as error:
            return self._fail(member, error)
        return self._succeed(member, updated)

    def _succeed(self, member: _Member, updated: Updated) -> int:
        record = self.runner.success(member.claimed, updated, self._share(member))
        self.open.remove(member)
        self.runner.finish(record, member.claimed.payload, self.started_s, claimed=member.claimed)
        return 1

    def _apply_plan(
        self, plan: Plan, saved: dict[int, Ticket] | None, journal: RedisJournal
    ) -> Updated:
        if self.listed and not plan.changed_fields:
            # A list read lacks the labels the record shows: read this ticket alone.
            plan = replace(plan, ticket=self.client.get_ticket(plan.ticket_id))
        own_saved = saved.get(plan.ticket_id) if saved else None
        return apply_plan(plan, self.client, journal=journal, saved=own_saved)

    def _own(self, member: _Member, work: Callable[[], T]) -> T:
        """Run `work`, charging the requests it makes to `member` alone."""
        before = self.client.requests_made
        try:
            return work()
        finally:
            member.own_requests += self.client.requests_made - before

    def _share(self, member: _Member) -> float:
        """The requests `member` made so far; call it before the member leaves `open`."""
        # Shared requests made since the last call are divided among the members still open:
        # members leave only through here, so those are the ones that were in when they were
        # made, and every shared request is divided exactly once.
        shared = self.client.requests_made - sum(m.own_requests for m in self.members)
        if shared > self.shared_settled and self.open:
            part = (shared - self.shared_settled) / len(self.open)
            for other in self.open:
                other.shared_requests += part
            self.shared_settled = shared
        return member.own_requests + member.shared_requests

    def _fail(self, member: _Member, error: JobError) -> int:
        made = self._share(member)
        self.open.remove(member)
        record = self.runner.failure(member.claimed, error, made)
        self.runner.finish(record, member.claimed.payload, self.started_s, claimed=member.claimed)
        return 1

    def _retry(self, member: _Member, error: RetryableError) -> int:
        made = self._share(member)
        self.open.remove(member)
        result = self.runner.retry_or_fail(member.claimed, error, made, self.started_s)
        return 1 if result is RunResult.RECORDED else 0

    def _retry_all(self, error: RetryableError) -> int:
        return sum(self._retry(member, error) for member in list(self.open))

    def fail_all(self, error: JobError) -> int:
        return sum(self._fail(member, error) for member in list(self.open))
