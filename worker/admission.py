"""Admission: every step of a run before Halo, for a single job and for each job of a batch.

    validate → recorded already? → claim → count the run → render → its ticket's turn
       │       (these three: one call to Redis)    │             │          ├→ a burst, or its
       ▼                               │           ▼             ▼          │  connection has a
    record                             ▼      crashed too   record        │  backlog → park
    invalid_job                   busy: look  often: record template/     └→ another job's
                                  again later internal_error ticket id       turn → wait
                                                             error

An admitted job holds its claim (until the caller's run ends) and its ticket; a job that is
not admitted has released its claim, and its run has ended (records and parks go through
`worker.endings`).

A batch's jobs are admitted by the same steps (`worker.members`). Only the backlog check is
skipped, since the batch is that backlog; and a job whose ticket an earlier job of the same
batch holds only takes its place in the line, to run after that one.

A burst (`worker.burst`): more jobs of one connection than `Bursts.threshold` running in this
process at once. A single job of a burst takes its place in its ticket's line and joins the
backlog, to be batched at once; a lone job runs straight through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, Final

from worker.backlog import Backlogs
from worker.burst import Bursts
from worker.endings import Endings, attempt
from worker.errors import InternalError, InvalidJob, JobError
from worker.halo.client import HaloClients
from worker.learned import Learned
from worker.models import Job, failed_record, parse_job
from worker.results import ResultStore
from worker.runs import Claimed, RunResult
from worker.tickets import TicketLines, Turn
from worker.update import Rendered, render_job
from worker.writable import check_task_id, invalid_job_meta

log = logging.getLogger("halo.runner")

# A delivery of a job held elsewhere is looked at again after at most this long.
_BUSY_RECHECK_S: Final = 5.0


@dataclass(frozen=True)
class Admitted:
    """A job past `Admission.admit`: claimed, counted, rendered, and holding its ticket."""

    claimed: Claimed  # its `ticket_id` is the rendered ticket's
    rendered: Rendered
    # False: it only has a place in its ticket's line, behind another job of its batch, and
    # takes the ticket once that one is done.
    has_turn: bool = True


class Admission:
    """Admits jobs to their runs; one per runner."""

    def __init__(
        self,
        store: ResultStore,
        clients: HaloClients,
        ends: Endings,
        *,
        lease_s: float,
        max_deliveries: int,
        backlogs: Backlogs | None,
        tickets: TicketLines | None,
        bursts: Bursts,
    ) -> None:
        """`lease_s` is a run's claim lease (and its ticket hold's); a job whose runs ended
        `max_deliveries` times without finishing is failed instead of run again."""
        self.store = store
        self.clients = clients
        self.ends = ends
        self.lease_s = lease_s
        self.max_deliveries = max_deliveries
        self.backlogs = backlogs
        self.tickets = tickets
        self.bursts = bursts

    def admit(
        self,
        job_id: str,
        payload: Any,
        submitted_at: str,
        started_s: float,
        claims: ExitStack,
        *,
        task_id: str | None = None,
        check_backlog: bool = True,
        held: Collection[int] = (),
    ) -> Admitted | RunResult:
        """Take a job through every step before Halo: validate → already recorded? → claim →
        count the run (those three in one call) → render → its ticket's turn.

        Args:
            claims: where an admitted job's claim is kept, to be released when the caller's
                run ends; a job that is not admitted has released its claim on return.
            task_id: the task id the job was sent under (a single job; see `validate`).
            check_backlog: join the connection's backlog when it has one (a single job; a
                batch's jobs are that backlog).
            held: tickets an earlier job of the batch holds: a job for one of them only takes
                its place in the line (`Admitted.has_turn` is False).

        Returns:
            The admitted job, or what became of the delivery when it ended here.
        """
        # Whether the job has a record is asked with its claim (one call, `Claims.claim`).
        job = self.validate(job_id, payload, submitted_at, started_s, task_id)
        if isinstance(job, RunResult):
            return job
        with ExitStack() as own:
            claim = self.store.claims.claim(job_id, lease_s=self.lease_s, submitted_at=submitted_at)
            if not own.enter_context(claim):
                return self._busy(job_id, payload, submitted_at)
            claimed = self._begin(job, job_id, payload, submitted_at, started_s)
            if claimed is None:
                return RunResult.DUPLICATE
            admitted = self._render_and_take_turn(claimed, started_s, check_backlog, held)
            if isinstance(admitted, Admitted):
                claims.enter_context(own.pop_all())
            return admitted

    def validate(
        self,
        job_id: str,
        payload: Any,
        submitted_at: str,
        started_s: float,
        task_id: str | None = None,
    ) -> Job | RunResult:
        """The job, or what recording it as `invalid_job` did (also when it has no job_id and
        `task_id`, the task id it was sent under, is not a valid one): RECORDED, or DUPLICATE
        when it had a record already."""
        try:
            job = parse_job(payload)
            check_task_id(job, task_id)
        except InvalidJob as error:
            meta, warnings = invalid_job_meta(payload)
            record = failed_record(
                job_id,
                error,
                job=None,
                attempts=1,
                halo_requests=0,
                submitted_at=submitted_at,
                warnings=warnings,
                meta=meta,
            )
            return self.ends.write(record, payload, started_s)
        return job

    def take_turn(
        self,
        claimed: Claimed,
        ticket_id: int,
        *,
        check_backlog: bool,
        place_only: bool = False,
        halo_requests: float = 0,
    ) -> Turn:
        """Take the job's ticket, or park it until its turn, ending this run (counted as an
        attempt only if it made `halo_requests`, as a park for budget is).

        With `check_backlog`, a connection that has a backlog answers `Turn.BACKLOG`: the
        job has its place in the line but not the ticket (the caller parks it there). With
        `place_only`, the job only takes its place in the ticket's line (`Turn.PLACED`).
        """
        job = claimed.job
        if self.tickets is None:
            if place_only:
                return Turn.PLACED
            backlogged = (
                check_backlog
                and self.backlogs is not None
                and self.backlogs.size(job.connection) > 0
            )
            return Turn.BACKLOG if backlogged else Turn.GO
        entry = self.tickets.enter(
            job.connection,
            ticket_id,
            claimed.job_id,
            {"job": claimed.payload, "submitted_at": claimed.state.submitted_at},
            hold_s=self.lease_s,
            check_backlog=check_backlog and self.backlogs is not None,
            place_only=place_only,
        )
        if entry.turn is Turn.WAIT:
            # Waiting for a turn is not an attempt, like waiting for budget.
            self.store.claims.end_run(
                claimed.job_id, halo_requests=halo_requests, counted=halo_requests > 0
            )
            log.info(
                "job waits for its ticket",
                extra={
                    "job_id": claimed.job_id,
                    "connection": job.connection,
                    "ticket_id": ticket_id,
                    "ahead": entry.ahead,
                },
            )
        return entry.turn

    def _begin(
        self, job: Job, job_id: str, payload: Any, submitted_at: str, started_s: float
    ) -> Claimed | None:
        """Count a run of a claimed job; None when it needs no run (recorded meanwhile, or
        failed now because its runs keep killing their worker)."""
        state = self.store.claims.begin_run(job_id, submitted_at)
        if state is None:
            return None
        claimed = Claimed(job, job_id, payload, state)
        if state.crashes >= self.max_deliveries:
            crash = InternalError(
                f"the job's runs ended {state.crashes} times without finishing (the worker "
                "process died each time); it is not run again"
            )
            self.ends.end(claimed, crash, 0, started_s)
            return None
        return claimed

    def _busy(self, job_id: str, payload: Any, submitted_at: str) -> RunResult:
        """Answer a delivery of a job another worker holds: look at it again later."""
        # The holder may be running this job, or may have died holding it: look again soon,
        # and again, until it has a record or its claim is free. Often the holder is just
        # releasing the claim of a run it deferred a moment ago.
        due_s = time.time() + min(self.store.claims.claim_ttl_s(job_id), _BUSY_RECHECK_S) + 0.5
        self.store.deferred.recheck_later(
            job_id, {"job": payload, "submitted_at": submitted_at}, due_s=due_s
        )
        return RunResult.BUSY

    def _render_and_take_turn(
        self, claimed: Claimed, started_s: float, check_backlog: bool, held: Collection[int]
    ) -> Admitted | RunResult:
        rendered = attempt(lambda: render_job(claimed.job))
        if isinstance(rendered, JobError):
            return self.ends.end(claimed, rendered, 0, started_s)
        placed = replace(claimed, ticket_id=rendered.ticket_id)
        if check_backlog and self._in_burst(claimed.job.connection):
            # Its place in line keeps a later job of its ticket, arriving once the backlog is
            # released and run straight through, from overtaking it.
            self.take_turn(claimed, rendered.ticket_id, check_backlog=False, place_only=True)
            log.info(
                "job joins its connection's backlog: a burst",
                extra={"job_id": claimed.job_id, "connection": claimed.job.connection},
            )
            return self.ends.park(claimed, halo_requests=0)
        if rendered.ticket_id in held:
            # Its place in line keeps later jobs from taking the ticket in between.
            self.take_turn(claimed, rendered.ticket_id, check_backlog=False, place_only=True)
            return Admitted(placed, rendered, has_turn=False)
        # A connection that already waits for budget: the job joins that line instead.
        turn = self.take_turn(claimed, rendered.ticket_id, check_backlog=check_backlog)
        if turn is Turn.BACKLOG:
            return self.ends.park(claimed, halo_requests=0)
        if turn is Turn.WAIT:
            return RunResult.WAITING
        return Admitted(placed, rendered)

    def _in_burst(self, connection: str) -> bool:
        """Whether a single job of `connection` should join its backlog to be batched: this
        process runs more of its jobs than the burst threshold, and batching can help."""
        if self.backlogs is None or not self.bursts.crowded(connection):
            return False
        settings = self.clients.connections.get(connection)
        if settings is None or settings.batching == "off":
            return False  # released job by job: parking would only add a wait
        # A tenant that ignores `ticketids` is released job by job too. (Read only in a
        # burst: a lone job's path makes no Redis call for it.)
        return Learned(self.store.redis).facts(connection).ticketids != "ignored"
