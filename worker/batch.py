"""A released backlog batch: many jobs of one connection, one list read, one POST.

Each job still ends in its own exact record: it is validated, claimed and counted like a single
job, planned against its own ticket, and recorded with its own `changed_fields`, warnings and
disposition. Only Halo's work is shared:

    render all → GET /api/Tickets?ticketids=… (paged, checked) → plan each
      → POST [changed…] → record each

Batching never costs correctness (`worker.learned` keeps what each tenant has shown):

- The list read is checked: a ticket Halo did not list is read on its own, and only a 404 there
  fails its job as `ticket_not_found`; an answer holding tickets not asked for shows that the
  tenant ignores `ticketids`, and its backlog is released one job at a time from then on.
- A change is never POSTed twice. Before the combined POST every job's fields go to its write
  journal. A job whose ticket Halo's answer does not list (an answer with the first ticket
  only, no body, or a refusal of the whole POST) is read back on its own, and re-planned
  against what Halo now holds: nothing left to change means the POST applied it (its record
  reports the journal's fields); only fields still different are POSTed, once, alone. After
  such an answer the tenant's batches POST job by job, whose answers are conclusive.
- A connection with ``batching = "off"``, or a tenant that ignores `ticketids`, reads and
  writes each job's ticket on its own even inside a batch.

A retryable failure sends every affected job back to its retry schedule, as a single job would
be; a job whose POST may have gone out finds its fields in its journal when it runs again.

Jobs of one ticket take turns, in the batch as anywhere (`worker.tickets`): a job whose ticket
another job holds, or whose turn has not come, leaves the batch and waits for its turn. (A
runner without ticket lines runs a later job for a ticket that an earlier job of the batch also
updates on its own after the POST: read, plan, POST.)

`halo_requests` in a batched record is the job's share of the batch's requests: those made for
it alone, plus an equal part of each shared one among the jobs still in the batch when it was
made, rounded to 0.001. The shares of a batch add up to the requests it made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import TypeVar

import redis

from worker.admission import Member, admit
from worker.backlog import Parked
from worker.claims import RedisJournal
from worker.errors import (
    JobError,
    PermanentError,
    RetryableError,
    TicketNotFound,
)
from worker.halo.client import HaloClient, Ticket
from worker.learned import Learned
from worker.runner import JobRunner, RunResult
from worker.tickets import Turn
from worker.update import Plan, Updated, apply_plan, plan_update, settle_unconfirmed

T = TypeVar("T")
log = logging.getLogger("halo.batch")


def of_other_connections(connection: str, parked: list[Parked]) -> list[Parked]:
    """The jobs of a batch that name another connection than the batch's.

    Only a worker's dispatcher publishes batches, each from one connection's backlog, so such
    a job comes from a malformed or forged message. It must not run against this batch's
    tenant (its credentials, its tickets): the caller sends it on as a single job, which runs
    against the connection it names. A job that is no object, or names no connection, stays:
    validation records it as `invalid_job` before anything reaches Halo.
    """
    return [
        p
        for p in parked
        if isinstance(p.job, dict)
        and isinstance(p.job.get("connection"), str)
        and p.job["connection"] != connection
    ]


def run_batch(runner: JobRunner, connection: str, parked: list[Parked], prepaid: int) -> int:
    """Run a released batch; returns how many jobs ended with a record.

    Raises:
        redis.RedisError: the result store is unreachable (the caller requeues the batch).
    """
    started_s = time.monotonic()
    recorded = 0
    with ExitStack() as claims:
        # Its jobs are a burst's: one of the connection's arriving meanwhile joins the backlog.
        claims.enter_context(runner.bursts.running(connection, len(parked)))
        members: list[Member] = []
        for entry in parked:
            held = {m.rendered.ticket_id for m in members}
            member, done = admit(runner, claims, entry, started_s, held)
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
        learned = Learned(runner.store.redis)
        batch = _Batch(runner, client, members, started_s, learned)
        try:
            recorded += batch.run()
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, reported, never retried.
            internal = runner.internal_error(connection, exc)
            recorded += batch.fail_all(internal)
    return recorded


class _Batch:
    def __init__(
        self,
        runner: JobRunner,
        client: HaloClient,
        members: list[Member],
        started_s: float,
        learned: Learned,
    ) -> None:
        self.runner = runner
        self.client = client
        self.members = members
        self.started_s = started_s
        self.learned = learned
        self.name = client.connection.name
        self.facts = learned.facts(self.name)
        self.forced_off = client.connection.batching == "off"
        self.open = list(members)  # members without a record, deferral or park yet
        self.listed = False  # whether the batch read was a list read
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
        later: list[Member] = []
        for member in list(self.open):
            ticket_id = member.rendered.ticket_id
            if ticket_id in planned:
                # Planned against the same read, its diff would miss (or undo) what the
                # earlier job writes: it runs alone, after the batch's POST.
                later.append(member)
                continue
            planned.add(ticket_id)
            member.listed = tickets.get(ticket_id) is not None and self.listed
            try:
                ticket = self._own(member, partial(self._ticket, ticket_id, tickets))
                member.plan = self._own(member, partial(self._plan, member, ticket))
            except RetryableError as error:
                done += self._retry(member, error)
            except JobError as error:
                done += self._fail(member, error)
        done += self._write()
        return done + sum(self._alone(member) for member in later)

    def _ticket(self, ticket_id: int, tickets: dict[int, Ticket | None]) -> Ticket:
        """The member's ticket from the batch read, else read on its own: a ticket a list
        read left out is not proof that Halo has none, a 404 on its own read is.

        Raises:
            TicketNotFound: Halo answered 404 for this ticket.
        """
        if ticket_id in tickets:
            ticket = tickets[ticket_id]
            if ticket is None:
                raise TicketNotFound(
                    f"Halo has no ticket {ticket_id} on connection {self.name!r}",
                    field="ticket_id",
                    http_status=404,
                )
            return ticket
        return self.client.get_ticket(ticket_id)

    def _plan(self, member: Member, ticket: Ticket) -> Plan:
        job, rendered = member.claimed.job, member.rendered
        return plan_update(job, self.client, rendered=rendered, ticket=ticket)

    def _read(self) -> dict[int, Ticket | None]:
        """The batch's tickets: by id, None for one a single read found missing; ids absent
        are read by their own job."""
        ids = sorted({m.rendered.ticket_id for m in self.members})
        # A tenant that has not shown whether it honours `ticketids` is asked with a checked
        # list read even for one ticket: the probe, at the price of the single read.
        probe = not self.forced_off and self.facts.ticketids is None
        self.listed = not self.forced_off and self.facts.ticketids != "ignored"
        self.listed = self.listed and (len(ids) > 1 or probe)
        if not self.listed:
            if len(ids) > 1:
                return {}  # each job reads its own ticket
            # One ticket: the single read carries the `*_name` labels a list read lacks.
            try:
                return {ids[0]: self.client.get_ticket(ids[0])}
            except TicketNotFound:
                return {ids[0]: None}
        read = self.client.get_tickets(ids)
        self.learned.saw_list_read(self.name, honoured=read.honoured, page_cap=read.page_cap)
        if not read.honoured:
            log.warning(
                "Halo ignores ticketids on this connection: its backlog is released one job "
                "at a time",
                extra={"connection": self.name, "tickets": len(ids)},
            )
        return dict(read.tickets)

    def _write(self) -> int:
        done = 0
        changed = [m for m in self.open if m.plan and m.plan.changed_fields]
        unchanged = [m for m in self.open if m.plan and not m.plan.changed_fields]
        combined = len(changed) > 1 and not self.forced_off and self.facts.combined_posts
        saved: dict[int, Ticket] = {}
        unsure: list[Member] = []
        if combined:
            for member in changed:
                self.runner.store.claims.journal(member.claimed.job_id).note(
                    member.plan.changed_fields if member.plan else []
                )
            try:
                posted = self.client.post_updates([m.plan.payload for m in changed if m.plan])
            except RetryableError as error:
                for member in changed:
                    done += self._retry(member, error)
                changed = []
            except PermanentError:
                # Refused as a whole; whether Halo saved any element first is not known.
                unsure = list(changed)
            else:
                self.learned.saw_post_answer(self.name, every=posted.every)
                saved = posted.saved
                unsure = [m for m in changed if m.plan and m.plan.ticket_id not in saved]
                if unsure:
                    log.warning(
                        "Halo's answer to a POST of several tickets left some out: they are "
                        "read back, and this connection's batches POST job by job",
                        extra={
                            "connection": self.name,
                            "sent": len(changed),
                            "answered": len(saved),
                        },
                    )
        for member in changed + unchanged:
            if member in unsure:
                done += self._settle(member)
            else:
                own = saved.get(member.rendered.ticket_id) if combined else None
                done += self._apply(member, own)
        return done

    def _apply(self, member: Member, saved: Ticket | None) -> int:
        plan = member.plan
        assert plan is not None  # only planned members get here
        journal = self.runner.store.claims.journal(member.claimed.job_id)
        try:
            updated = self._own(member, lambda: self._apply_plan(member, plan, saved, journal))
        except RetryableError as error:
            return self._retry(member, error)
        except JobError as error:
            return self._fail(member, error)
        return self._succeed(member, updated)

    def _settle(self, member: Member) -> int:
        """Finish a member whose change went out in the combined POST without Halo's answer
        confirming it (`worker.update.settle_unconfirmed`)."""
        plan = member.plan
        assert plan is not None  # only planned members get here
        journal = self.runner.store.claims.journal(member.claimed.job_id)
        job, rendered = member.claimed.job, member.rendered
        try:
            updated = self._own(
                member, lambda: settle_unconfirmed(plan, job, rendered, self.client, journal)
            )
        except RetryableError as error:
            return self._retry(member, error)
        except JobError as error:
            return self._fail(member, error)
        return self._succeed(member, updated)

    def _alone(self, member: Member) -> int:
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

    def _succeed(self, member: Member, updated: Updated) -> int:
        record = self.runner.success(member.claimed, updated, self._share(member))
        self.open.remove(member)
        self.runner.finish(record, member.claimed.payload, self.started_s, claimed=member.claimed)
        return 1

    def _apply_plan(
        self, member: Member, plan: Plan, saved: Ticket | None, journal: RedisJournal
    ) -> Updated:
        if member.listed and not plan.changed_fields:
            # A list read lacks the labels the record shows: read this ticket alone.
            plan = replace(plan, ticket=self.client.get_ticket(plan.ticket_id))
        return apply_plan(plan, self.client, journal=journal, saved=saved)

    def _own(self, member: Member, work: Callable[[], T]) -> T:
        """Run `work`, charging the requests it makes to `member` alone."""
        before = self.client.requests_made
        try:
            return work()
        finally:
            member.own_requests += self.client.requests_made - before

    def _share(self, member: Member) -> float:
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

    def _fail(self, member: Member, error: JobError) -> int:
        made = self._share(member)
        self.open.remove(member)
        record = self.runner.failure(member.claimed, error, made)
        self.runner.finish(record, member.claimed.payload, self.started_s, claimed=member.claimed)
        return 1

    def _retry(self, member: Member, error: RetryableError) -> int:
        made = self._share(member)
        self.open.remove(member)
        result = self.runner.retry_or_fail(member.claimed, error, made, self.started_s)
        return 1 if result is RunResult.RECORDED else 0

    def _retry_all(self, error: RetryableError) -> int:
        return sum(self._retry(member, error) for member in list(self.open))

    def fail_all(self, error: JobError) -> int:
        return sum(self._fail(member, error) for member in list(self.open))
