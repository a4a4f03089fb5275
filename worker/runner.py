"""One delivery of one job: from a queue payload to exactly one record, a deferral or a park.

    admit: validate → already recorded? → claim → count the run → render → its ticket's turn
      → update Halo → record                       ├→ its connection has a backlog → park
          ├→ no budget → park                      ├→ a burst of its connection → park
          └→ retryable → defer                     └→ another job's turn → wait for it

A burst (`worker.burst`): more jobs of one connection than `Bursts.threshold` running in this
process at once. The job then takes its place in its ticket's line and joins the backlog, to be
batched at once; a lone job runs straight through.

A job of a released batch (`worker.batch`) is admitted by the same steps (`JobRunner.admit`)
and ends through the same ones (`success`/`failure`, `retry_or_fail`, `finish`); the batch only
groups the reads and the writes of its jobs.

Jobs of one ticket take turns (`worker.tickets`): a job whose ticket is taken, or whose turn
has not come, waits without a worker slot and is published again when its turn comes.

The runner knows Redis and Halo but not Celery: `worker.tasks` hands it the payload and acts
on what it returns. Delivery is at-least-once (Redis transport, late acks), so every step here
is safe to repeat: a recorded job is never run again, a claimed job is not run twice at once,
and a run that crashed after its POST is finished from the write journal without a second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final, Protocol

import redis

from worker.backlog import Backlogs
from worker.burst import Bursts
from worker.claims import RunState
from worker.errors import (
    BudgetExhausted,
    InternalError,
    InvalidJob,
    JobError,
    RetryableError,
)
from worker.halo.client import HaloClient, HaloClients
from worker.learned import Learned
from worker.logs import job_finished
from worker.models import (
    Job,
    ResultRecord,
    failed_record,
    parse_job,
    succeeded_record,
    utc_now_iso,
)
from worker.results import ResultStore
from worker.retry import RetryPolicy
from worker.tickets import TicketLines, Turn
from worker.update import Rendered, Updated, apply_plan, plan_update, render_job
from worker.writable import check_task_id, invalid_job_meta, record_key_of

log = logging.getLogger("halo.runner")

# A claim outlives the longest run (deadline plus one request timeout) by this margin, so a
# live worker never loses its claim, and a dead one blocks its job only briefly.
_CLAIM_MARGIN_S: Final = 10.0
# A delivery of a job held elsewhere is looked at again after at most this long.
_BUSY_RECHECK_S: Final = 5.0


class RunResult(StrEnum):
    """What became of one delivery."""

    RECORDED = "recorded"  # the job ended: its record is written
    DEFERRED = "deferred"  # a retryable error: waiting to run again after a backoff
    PARKED = "parked"  # no Halo budget: waiting in its connection's backlog
    DUPLICATE = "duplicate"  # the job already had a record: nothing was done
    BUSY = "busy"  # another worker holds the job now: looked at again when its claim ends
    WAITING = "waiting"  # another job has its ticket, or comes first: waiting for its turn


@dataclass(frozen=True)
class RunnerConfig:
    """The parts of the settings a runner needs."""

    job_deadline_s: float
    request_timeout_s: float
    max_deliveries: int
    policy: RetryPolicy


def claim_lease_s(config: RunnerConfig) -> float:
    """How long a run's claim (and its ticket hold) lasts: the longest run, plus a margin."""
    return config.job_deadline_s + config.request_timeout_s + _CLAIM_MARGIN_S


@dataclass(frozen=True)
class Claimed:
    """A job this process holds the claim of, with what its earlier runs left."""

    job: Job
    job_id: str
    payload: Any
    state: RunState
    # The ticket in whose line this run has its turn (or, in a batch, a place behind another
    # of the batch's jobs): its record ends that turn in the same call.
    ticket_id: int | None = None


@dataclass(frozen=True)
class Admitted:
    """A job past `JobRunner.admit`: claimed, counted, rendered, and holding its ticket."""

    claimed: Claimed  # its `ticket_id` is the rendered ticket's
    rendered: Rendered
    # False: it only has a place in its ticket's line, behind another job of its batch, and
    # takes the ticket once that one is done.
    has_turn: bool = True


class JobObserver(Protocol):
    """Told what becomes of jobs (metrics, error reporting); called in the job's thread."""

    def job_finished(
        self, record: ResultRecord, *, connection: str | None, duration_s: float
    ) -> None:
        """A job's record was written (once per job); `duration_s` is its last run's."""
        ...

    def job_deferred(self, connection: str, code: str, *, due_s: float) -> None:
        """A job waits to run again after a retryable error with this code, until `due_s`
        (Unix time)."""
        ...

    def job_parked(self, connection: str) -> None:
        """A job waits in its connection's backlog for Halo budget."""
        ...


class JobRunner:
    """Runs deliveries of jobs; one per process, shared by all worker threads."""

    def __init__(
        self,
        store: ResultStore,
        clients: HaloClients,
        config: RunnerConfig,
        backlogs: Backlogs | None = None,
        tickets: TicketLines | None = None,
        *,
        bursts: Bursts | None = None,
    ) -> None:
        """`tickets` runs the jobs of one ticket one at a time, in submission order; without
        it (tests of other parts) jobs of one ticket may interleave. `bursts` counts this
        process's jobs per connection; without it (or `backlogs`) no job parks for a burst."""
        self.store = store
        self.clients = clients
        self.config = config
        self.backlogs = backlogs
        self.tickets = tickets
        self.bursts = bursts or Bursts(threshold=0)
        self.lease_s = claim_lease_s(config)
        self.observers: list[JobObserver] = []

    def run(self, payload: Any, *, task_id: str, submitted_at: str | None = None) -> RunResult:
        """Run one delivery of a job.

        Args:
            payload: the job as it came off the queue (any JSON value: it is validated here).
            task_id: the Celery task id, which is the job_id; the record's key when the
                payload carries no usable job_id.
            submitted_at: when the producer accepted the job (ISO 8601), if it said.

        Raises:
            redis.RedisError: the result store is unreachable; nothing was recorded and the
                delivery must be retried (the caller requeues the message).
        """
        started_s = time.monotonic()
        job_id = job_id_of(payload, task_id)
        submitted_at = submitted_at or utc_now_iso()
        with ExitStack() as claims:
            claims.enter_context(self.bursts.running(_connection_of(payload)))
            admitted = self.admit(job_id, payload, submitted_at, started_s, claims, task_id=task_id)
            if isinstance(admitted, RunResult):
                return admitted
            return self._update(admitted.claimed, admitted.rendered, started_s)

    def reject_malformed(self, task_id: str, reason: str) -> RunResult:
        """Record a delivery whose task arguments are not ``(job)``: it can never run."""
        task_id = job_id_of(None, task_id)
        if self.store.records.get(task_id) is not None:
            return RunResult.DUPLICATE
        error = InvalidJob(f"task arguments: {reason}; expected one argument, the job object")
        record = failed_record(
            task_id, error, job=None, attempts=1, halo_requests=0, submitted_at=utc_now_iso()
        )
        return self.finish(record, None, time.monotonic())

    # -- steps shared with the batch path ----------------------------------------------------

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
                return self.busy(job_id, payload, submitted_at)
            claimed = self.begin(job, job_id, payload, submitted_at, started_s)
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
            return self.finish(record, payload, started_s)
        return job

    def begin(
        self, job: Job, job_id: str, payload: Any, submitted_at: str, started_s: float
    ) -> Claimed | None:
        """Count a run of a claimed job; None when it needs no run (recorded meanwhile, or
        failed now because its runs keep killing their worker)."""
        state = self.store.claims.begin_run(job_id, submitted_at)
        if state is None:
            return None
        claimed = Claimed(job, job_id, payload, state)
        if state.crashes >= self.config.max_deliveries:
            crash = InternalError(
                f"the job's runs ended {state.crashes} times without finishing (the worker "
                "process died each time); it is not run again"
            )
            self.finish(self.failure(claimed, crash, 0), payload, started_s)
            return None
        return claimed

    def success(self, claimed: Claimed, updated: Updated, made: float) -> ResultRecord:
        """The record of a claimed job that succeeded, after `made` Halo requests in this run."""
        return succeeded_record(
            claimed.job,
            claimed.job_id,
            ticket=updated.ticket,
            changed_fields=updated.changed_fields,
            warnings=updated.warnings,
            attempts=claimed.state.attempts,
            halo_requests=_total(claimed.state.halo_requests, made),
            submitted_at=claimed.state.submitted_at,
        )

    def failure(self, claimed: Claimed, error: JobError, made: float) -> ResultRecord:
        """The record of a claimed job that failed, after `made` Halo requests in this run."""
        return failed_record(
            claimed.job_id,
            error,
            job=claimed.job,
            attempts=claimed.state.attempts,
            halo_requests=_total(claimed.state.halo_requests, made),
            submitted_at=claimed.state.submitted_at,
        )

    def retry_or_fail(
        self, claimed: Claimed, error: RetryableError, made: float, started_s: float
    ) -> RunResult:
        """Park (no budget), defer (inside the retry budget), or record the failure."""
        if isinstance(error, BudgetExhausted) and self.backlogs is not None:
            return self.park(claimed, halo_requests=made)
        delay_s = self.config.policy.next_delay_s(
            error,
            attempt=claimed.state.attempts,
            elapsed_s=time.time() - claimed.state.first_started_s,
        )
        if delay_s is None:
            record = self.failure(claimed, error, made)
            return self.finish(record, claimed.payload, started_s, claimed=claimed)
        due_s = time.time() + delay_s
        self.store.deferred.defer(
            claimed.job_id,
            {"job": claimed.payload, "submitted_at": claimed.state.submitted_at},
            due_s=due_s,
            halo_requests=made,
        )
        # It keeps its place in its ticket's line while it waits: no later job overtakes it.
        self._leave_turn(claimed)
        log.info(
            "job deferred",
            extra={
                "job_id": claimed.job_id,
                "connection": claimed.job.connection,
                "code": error.code.value,
                "attempts": claimed.state.attempts,
                "delay_s": round(delay_s, 3),
            },
        )
        for observer in self.observers:
            observer.job_deferred(claimed.job.connection, error.code.value, due_s=due_s)
        return RunResult.DEFERRED

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

    def _leave_turn(self, claimed: Claimed) -> None:
        """End the turn of a job that will run again, keeping its place in the line."""
        if self.tickets is not None and claimed.ticket_id is not None:
            self.tickets.leave(
                claimed.job.connection, claimed.ticket_id, claimed.job_id, finished=False
            )

    def park(self, claimed: Claimed, *, halo_requests: float) -> RunResult:
        """End this run and put the job in its connection's backlog.

        A run that made no Halo request does not count as an attempt: waiting in line is
        not a retry.
        """
        assert self.backlogs is not None
        self.store.claims.end_run(
            claimed.job_id, halo_requests=halo_requests, counted=halo_requests > 0
        )
        self.backlogs.park(
            claimed.job.connection, claimed.job_id, claimed.payload, claimed.state.submitted_at
        )
        self._leave_turn(claimed)
        for observer in self.observers:
            observer.job_parked(claimed.job.connection)
        return RunResult.PARKED

    def finish(
        self,
        record: ResultRecord,
        payload: Any,
        started_s: float,
        *,
        claimed: Claimed | None = None,
    ) -> RunResult:
        """Write a record (once), keeping a failed job's payload for replay, and log the
        outcome. A `claimed` job's turn on its ticket ends in the same call."""
        if self.tickets is not None and claimed is not None and claimed.ticket_id is not None:
            written = self.tickets.write_and_leave(
                self.store.records, record, payload, claimed.job.connection, claimed.ticket_id
            )
        else:
            written = self.store.records.write(record, payload)
        if not written:
            return RunResult.DUPLICATE
        fields = payload if isinstance(payload, Mapping) else {}
        connection, ticket_id = fields.get("connection"), fields.get("ticket_id")
        connection = connection if isinstance(connection, str) else None
        duration_s = time.monotonic() - started_s
        job_finished(
            record,
            connection=connection,
            ticket_id=str(ticket_id) if isinstance(ticket_id, str | int) else None,
            duration_s=duration_s,
        )
        for observer in self.observers:
            observer.job_finished(record, connection=connection, duration_s=duration_s)
        return RunResult.RECORDED

    def internal_error(self, job_id: str, exc: Exception) -> InternalError:
        """Log an unclassified exception (a bug) and describe it for the record."""
        log.error(
            "job failed on an internal error",
            extra={"job_id": job_id, "code": "internal_error"},
            exc_info=exc,
        )
        return InternalError(
            "the worker hit an internal error running this job; it was reported to the "
            "operators and the job was not retried"
        )

    def busy(self, job_id: str, payload: Any, submitted_at: str) -> RunResult:
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
        try:
            rendered = render_job(claimed.job)
        except JobError as error:
            return self.finish(self.failure(claimed, error, 0), claimed.payload, started_s)
        placed = replace(claimed, ticket_id=rendered.ticket_id)
        if check_backlog and self._in_burst(claimed.job.connection):
            # Its place in line keeps a later job of its ticket, arriving once the backlog is
            # released and run straight through, from overtaking it.
            self.take_turn(claimed, rendered.ticket_id, check_backlog=False, place_only=True)
            log.info(
                "job joins its connection's backlog: a burst",
                extra={"job_id": claimed.job_id, "connection": claimed.job.connection},
            )
            return self.park(claimed, halo_requests=0)
        if rendered.ticket_id in held:
            # Its place in line keeps later jobs from taking the ticket in between.
            self.take_turn(claimed, rendered.ticket_id, check_backlog=False, place_only=True)
            return Admitted(placed, rendered, has_turn=False)
        # A connection that already waits for budget: the job joins that line instead.
        turn = self.take_turn(claimed, rendered.ticket_id, check_backlog=check_backlog)
        if turn is Turn.BACKLOG:
            return self.park(claimed, halo_requests=0)
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

    # -- the single-job update ---------------------------------------------------------------

    def _update(self, claimed: Claimed, rendered: Rendered, started_s: float) -> RunResult:
        client: HaloClient | None = None
        try:
            client = self.clients.for_job(
                claimed.job.connection,
                deadline_s=time.monotonic() + self.config.job_deadline_s,
            )
            plan = plan_update(claimed.job, client, rendered=rendered)
            updated = apply_plan(plan, client, journal=self.store.claims.journal(claimed.job_id))
            record = self.success(claimed, updated, client.requests_made)
        except RetryableError as error:
            made = client.requests_made if client else 0
            return self.retry_or_fail(claimed, error, made, started_s)
        except JobError as error:
            record = self.failure(claimed, error, client.requests_made if client else 0)
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, reported, never retried.
            internal = self.internal_error(claimed.job_id, exc)
            record = self.failure(claimed, internal, client.requests_made if client else 0)
        return self.finish(record, claimed.payload, started_s, claimed=claimed)


def job_id_of(payload: Any, task_id: str) -> str:
    """The job's own id when it carries a valid one, else the task id it was sent under when
    that is a valid job id, else a safe key derived from it (`worker.writable`)."""
    return record_key_of(payload, task_id)


def _connection_of(payload: Any) -> str | None:
    """The connection a payload names, before it is validated (None: none, or not a name)."""
    connection = payload.get("connection") if isinstance(payload, Mapping) else None
    return connection if isinstance(connection, str) else None


def _total(before: float, now: float) -> int | float:
    total = before + now
    return int(total) if float(total).is_integer() else round(total, 3)
