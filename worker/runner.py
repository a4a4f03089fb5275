"""One delivery of one job: from a queue payload to exactly one record, a deferral or a park.

Every job, single or in a batch, goes through the same named steps, each in one place:

    claim, render   `worker.admission`  recorded already? → validate → claim → count the run
                                        → render → its ticket's turn
    read, resolve,  `worker.update`     read the ticket → resolve names → diff → POST the
    diff, write                         changes (or nothing)
    record          `worker.endings`    success → record; an error → retry, park or record

          admit ─────────────────► update Halo ─────────────► end
            ├→ its connection has a backlog, or a burst → park     ├→ a record
            ├→ another job's turn → wait for it                    ├→ retryable → defer
            └→ invalid, unrenderable → record                      └→ no budget → park

The runner takes a single job through them (`JobRunner.run`); a released batch
(`worker.batch`) takes each of its jobs through the same ones, and changes only how their
reads and writes are grouped.

Jobs of one ticket take turns (`worker.tickets`): a job whose ticket is taken, or whose turn
has not come, waits without a worker slot and is published again when its turn comes.

The runner knows Redis and Halo but not Celery: `worker.tasks` hands it the payload and acts
on what it returns. Delivery is at-least-once (Redis transport, late acks), so every step here
is safe to repeat: a recorded job is never run again, a claimed job is not run twice at once,
and a run that crashed after its POST is finished from the write journal without a second one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final

import redis

from worker.admission import Admission
from worker.backlog import Backlogs
from worker.burst import Bursts
from worker.endings import Endings, attempt
from worker.errors import InvalidJob, JobError
from worker.halo.client import HaloClient, HaloClients
from worker.models import failed_record, utc_now_iso
from worker.results import ResultStore
from worker.retry import RetryPolicy
from worker.runs import Claimed, JobObserver, RunResult
from worker.tickets import TicketLines
from worker.update import Rendered, Updated, apply_plan, plan_update
from worker.writable import record_key_of

# `RunResult` is the runner's answer to its callers, who know it from here.
__all__ = ["JobRunner", "RunResult", "RunnerConfig", "claim_lease_s", "job_id_of"]

# A claim outlives the longest run (deadline plus one request timeout) by this margin, so a
# live worker never loses its claim, and a dead one blocks its job only briefly.
_CLAIM_MARGIN_S: Final = 10.0


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
        # The steps of every run, single or batched: before Halo, and at its end.
        self.ends = Endings(
            store, config.policy, backlogs=backlogs, tickets=tickets, observers=self.observers
        )
        self.admission = Admission(
            store,
            clients,
            self.ends,
            lease_s=self.lease_s,
            max_deliveries=config.max_deliveries,
            backlogs=backlogs,
            tickets=tickets,
            bursts=self.bursts,
        )

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
            admitted = self.admission.admit(
                job_id, payload, submitted_at, started_s, claims, task_id=task_id
            )
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
        return self.ends.write(record, None, time.monotonic())

    def _update(self, claimed: Claimed, rendered: Rendered, started_s: float) -> RunResult:
        """Read, resolve, diff and write the job's ticket on its own, then end the run."""
        client: HaloClient | None = None

        def update() -> Updated:
            nonlocal client
            client = self.clients.for_job(
                claimed.job.connection,
                deadline_s=time.monotonic() + self.config.job_deadline_s,
            )
            plan = plan_update(claimed.job, client, rendered=rendered)
            return apply_plan(plan, client, journal=self.store.claims.journal(claimed.job_id))

        outcome: Updated | JobError
        try:
            outcome = attempt(update)
        except redis.RedisError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, reported, never retried.
            outcome = self.ends.internal_error(claimed.job_id, exc)
        made = client.requests_made if client else 0
        return self.ends.end(claimed, outcome, made, started_s)


def job_id_of(payload: Any, task_id: str) -> str:
    """The job's own id when it carries a valid one, else the task id it was sent under when
    that is a valid job id, else a safe key derived from it (`worker.writable`)."""
    return record_key_of(payload, task_id)


def _connection_of(payload: Any) -> str | None:
    """The connection a payload names, before it is validated (None: none, or not a name)."""
    connection = payload.get("connection") if isinstance(payload, Mapping) else None
    return connection if isinstance(connection, str) else None
