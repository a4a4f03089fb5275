"""A released backlog batch: many jobs of one connection, one list read, one POST.

Each job goes through the single job's steps and ends in its own exact record: it is admitted
like a single job (`worker.members`), planned against its own ticket, and ended by the single
job's end-of-run steps (`worker.endings`) with its own `changed_fields`, warnings and
disposition. The batch changes only how the reads and the writes are grouped:

    admit each → read all (`worker.batchread`) → resolve and diff each
      → POST [changed…] → end each

Batching never costs correctness (`worker.learned` keeps what each tenant has shown):

- The read is checked (`worker.batchread`): a ticket a list read left out is read on its own.
- A change is never POSTed twice. Before the combined POST every job's fields go to its write
  journal. A job whose ticket Halo's answer does not list (an answer with the first ticket
  only, no body, or a refusal of the whole POST) is read back on its own, and re-planned
  against what Halo now holds: nothing left to change means the POST applied it (its record
  reports the journal's fields); only fields still different are POSTed, once, alone. After
  such an answer the tenant's batches POST job by job, whose answers are conclusive.
- A connection with ``batching = "off"``, or a tenant that ignores `ticketids`, reads and
  writes each job's ticket on its own even inside a batch.

An error ends the jobs it affects as it would end a single job: a retryable one sends each back
to its retry schedule (or to the backlog, without budget), a permanent one records its
failure; a job whose POST may have gone out finds its fields in its journal when it runs again.
An error of the shared read or POST affects every job in it. An unclassified exception (a bug)
ends every job still open in the batch with `internal_error`.

Jobs of one ticket take turns, in the batch as anywhere (`worker.tickets`): a job whose ticket
another job holds, or whose turn has not come, leaves the batch and waits for its turn. (A
runner without ticket lines runs a later job for a ticket that an earlier job of the batch also
updates on its own after the POST: read, plan, POST.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import TypeVar

import redis

from worker.backlog import Parked
from worker.batchread import BatchRead, read_batch
from worker.claims import RedisJournal
from worker.endings import attempt
from worker.errors import JobError, RetryableError
from worker.halo.client import HaloClient, Ticket
from worker.learned import Learned
from worker.members import Member, Shares, admit
from worker.runner import JobRunner
from worker.runs import RunResult
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
        batch = _Batch(runner, client, members, started_s, Learned(runner.store.redis))
        try:
            recorded += batch.run()
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, reported, never retried.
            internal = runner.ends.internal_error(connection, exc)
            recorded += sum(batch.end(member, internal) for member in list(batch.shares.open))
    return recorded


class _Batch:
    """The Halo work of one batch past admission: its read, each job's plan, its writes."""

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
        self.facts = learned.facts(client.connection.name)
        self.shares = Shares(client, members)

    def run(self) -> int:
        done = 0
        ids = sorted({m.rendered.ticket_id for m in self.members})
        read = attempt(lambda: read_batch(self.client, ids, self.learned, self.facts))
        if isinstance(read, JobError):
            return sum(self.end(member, read) for member in list(self.shares.open))
        planned: set[int] = set()
        later: list[Member] = []
        for member in list(self.shares.open):
            ticket_id = member.rendered.ticket_id
            if ticket_id in planned:
                # Planned against the same read, its diff would miss (or undo) what the
                # earlier job writes: it runs alone, after the batch's POST.
                later.append(member)
                continue
            planned.add(ticket_id)
            member.listed = read.from_list(ticket_id)
            plan = self._planned(member, read)
            if isinstance(plan, JobError):
                done += self.end(member, plan)
            else:
                member.plan = plan
        done += self._write()
        return done + sum(self._alone(member) for member in later)

    def end(self, member: Member, outcome: Updated | JobError) -> int:
        """End a member's run as a single job's would end (`worker.endings`), charged its
        share of the batch's requests; 1 when the job now has its record."""
        made = self.shares.leave(member)
        ended = self.runner.ends.end(member.claimed, outcome, made, self.started_s)
        return 1 if ended in (RunResult.RECORDED, RunResult.DUPLICATE) else 0

    def _attempt(self, member: Member, work: Callable[[], T]) -> T | JobError:
        """Run steps of one member alone: their requests are charged to it, and a `JobError`
        they raise is their outcome (`worker.endings.attempt`)."""
        return self.shares.own(member, lambda: attempt(work))

    def _planned(self, member: Member, read: BatchRead) -> Plan | JobError:
        """Resolve and diff a member against its ticket from the batch read."""
        job, rendered = member.claimed.job, member.rendered

        def plan() -> Plan:
            ticket = read.ticket(rendered.ticket_id, self.client)
            return plan_update(job, self.client, rendered=rendered, ticket=ticket)

        return self._attempt(member, plan)

    def _write(self) -> int:
        done = 0
        changed = [m for m in self.shares.open if m.plan and m.plan.changed_fields]
        unchanged = [m for m in self.shares.open if m.plan and not m.plan.changed_fields]
        combined = (
            len(changed) > 1
            and self.client.connection.batching != "off"
            and self.facts.combined_posts
        )
        saved: dict[int, Ticket] = {}
        unsure: list[Member] = []
        if combined:
            for member in changed:
                self.runner.store.claims.journal(member.claimed.job_id).note(
                    member.plan.changed_fields if member.plan else []
                )
            payloads = [m.plan.payload for m in changed if m.plan]
            posted = attempt(lambda: self.client.post_updates(payloads))
            if isinstance(posted, RetryableError):
                done += sum(self.end(member, posted) for member in changed)
                changed = []
            elif isinstance(posted, JobError):
                # Refused as a whole; whether Halo saved any element first is not known.
                unsure = list(changed)
            else:
                self.learned.saw_post_answer(self.client.connection.name, every=posted.every)
                saved = posted.saved
                unsure = [m for m in changed if m.plan and m.plan.ticket_id not in saved]
                if unsure:
                    log.warning(
                        "Halo's answer to a POST of several tickets left some out: they are "
                        "read back, and this connection's batches POST job by job",
                        extra={
                            "connection": self.client.connection.name,
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
        return self.end(
            member, self._attempt(member, lambda: self._apply_plan(member, plan, saved, journal))
        )

    def _settle(self, member: Member) -> int:
        """Finish a member whose change went out in the combined POST without Halo's answer
        confirming it (`worker.update.settle_unconfirmed`)."""
        plan = member.plan
        assert plan is not None  # only planned members get here
        journal = self.runner.store.claims.journal(member.claimed.job_id)
        job, rendered = member.claimed.job, member.rendered
        settled = self._attempt(
            member, lambda: settle_unconfirmed(plan, job, rendered, self.client, journal)
        )
        return self.end(member, settled)

    def _alone(self, member: Member) -> int:
        """Run a member as a single job would run: take its ticket, read it, plan, apply."""
        job, rendered = member.claimed.job, member.rendered
        if not member.has_turn:
            made = self.shares.share(member)
            turn = self.runner.admission.take_turn(
                member.claimed, rendered.ticket_id, check_backlog=False, halo_requests=made
            )
            if turn is not Turn.GO:
                # A job ahead of it (the member before it, deferred) keeps the ticket: it
                # waits for its turn outside the batch.
                self.shares.open.remove(member)
                return 0
        journal = self.runner.store.claims.journal(member.claimed.job_id)

        def update() -> Updated:
            plan = plan_update(job, self.client, rendered=rendered)
            return apply_plan(plan, self.client, journal=journal)

        return self.end(member, self._attempt(member, update))

    def _apply_plan(
        self, member: Member, plan: Plan, saved: Ticket | None, journal: RedisJournal
    ) -> Updated:
        if member.listed and not plan.changed_fields:
            # A list read lacks the labels the record shows: read this ticket alone.
            plan = replace(plan, ticket=self.client.get_ticket(plan.ticket_id))
        return apply_plan(plan, self.client, journal=journal, saved=saved)
