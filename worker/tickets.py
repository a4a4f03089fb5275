"""One job at a time per ticket, in the order the jobs were submitted.

Two jobs for one ticket (two rules matching one email, a rule run twice on a thread) must not
interleave their read, diff and write: the second would diff against what it read before the
first wrote, and skip or undo the first one's change. So, per connection and ticket:

- a **line**: every job that reached the ticket, ordered by when it was submitted (its
  `submitted_at`, else when a worker first saw it; job_id breaks ties). A job keeps its place
  while it waits to run again (a 429 backoff, a budget wait), so a later job cannot overtake it;
- a **hold**: the one job running its read, diff and write now, with a lease as long as a
  run's claim, so a holder that died blocks the ticket no longer than its claim would.

A job takes the hold when nobody holds the ticket and it is first among the line's live jobs.
Otherwise it *waits*: its payload is kept here, its message is acked and its worker slot freed
(as a job waiting for budget does, `worker.backlog`). A holder that ends its run (record
written, deferred, parked for budget) drops the hold and hands the ticket to the first live job
of the line if that job is waiting: it is moved to `halo:deferred`, due now, and the mover
publishes it. A job already on its way (deferred, in the backlog, queued) takes the hold when
it arrives, since it is first.

A place is live while its job shows a sign of life: a claim (it runs), a deferral, a backlog
place, a wait here, or a visit within `quiet_s` (a job on a queue shows no other sign). A place
without one for `quiet_s` is skipped and dropped, so a lost job cannot block its ticket for
ever; `quiet_s` is the lost-job net's own bound (visibility timeout + claim lease), the longest
silence of a job that is not lost. `reap` (a mover step) hands tickets on whose holder died or
whose first place went quiet.

Keys (a ticket's keys live as long as it is used, and a day after):
    halo:ticket:<connection>:<ticket_id>          the hold: the job_id running now (string, PX)
    halo:ticket:<connection>:<ticket_id>:line     places (sorted set: job_id, score =
                                                  submitted ms; equal scores sort by job_id)
    halo:ticket:<connection>:<ticket_id>:seen     when each place's job was last seen (hash, ms)
    halo:ticket:<connection>:<ticket_id>:parked   payloads of the jobs waiting here (hash)
    halo:ticket:waiting                           job_id → its ticket's hold key, for every
                                                  waiting job (hash); a sign of life for
                                                  `DeferredJobs.take_lost`
    halo:ticket:lines                             hold keys of tickets with waiting jobs (set)

Every change to them is one atomic script (`worker.ticketscripts`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, cast

import redis

from worker.keys import (
    BACKLOG_JOBS,
    CLAIM_PREFIX,
    DEFERRED,
    DEFERRED_JOBS,
    RESULT_PREFIX,
    TICKET_LINES,
    TICKET_WAITING,
    backlog_key,
    backlog_taken_key,
    ticket_hold_key,
)
from worker.models import ResultRecord
from worker.records import Records
from worker.ticketscripts import ENTER, LEAVE, REAP, WRITE_AND_LEAVE

# A ticket's line outlives any wait of its jobs (a retry budget is 15 minutes), and is gone a
# day after its last use, so tickets that are never touched again leave nothing behind.
_KEEP_MS: Final = 24 * 3600 * 1000


class Turn(StrEnum):
    """What a job found at its ticket."""

    GO = "go"  # it holds the ticket: read, diff and write now
    WAIT = "wait"  # another job holds it or comes first: parked here
    BACKLOG = "backlog"  # its connection has a backlog: placed in line only, join the backlog
    PLACED = "placed"  # it took a place in the line only (`TicketLines.place`)


@dataclass(frozen=True)
class Entry:
    """The answer to `TicketLines.enter`: the turn, and the job holding the ticket or first in
    its line when the job waits (for logs)."""

    turn: Turn
    ahead: str | None = None


class TicketLines:
    """The per-ticket holds and lines of one fleet, in the result Redis."""

    def __init__(self, client: redis.Redis, *, quiet_s: float) -> None:
        """Keep lines in `client`; a place whose job shows no sign of life for `quiet_s` is
        skipped (see the module docstring for why that bound)."""
        self._redis = client
        self._quiet_ms = int(quiet_s * 1000)
        self._enter = client.register_script(ENTER)
        self._leave = client.register_script(LEAVE)
        self._write_and_leave = client.register_script(WRITE_AND_LEAVE)
        self._reap = client.register_script(REAP)

    @property
    def quiet_s(self) -> float:
        """How long a place may show no sign of life before it is skipped."""
        return self._quiet_ms / 1000

    def enter(
        self,
        connection: str,
        ticket_id: int,
        job_id: str,
        payload: dict[str, Any],
        *,
        hold_s: float,
        check_backlog: bool,
        place_only: bool = False,
    ) -> Entry:
        """Take a place in the ticket's line (kept from an earlier run), and the hold if it is
        this job's turn; else park the job here, with `payload` to publish it again by.

        One script call. Idempotent for a job that holds the ticket (a rerun keeps its hold).

        Args:
            payload: ``{"job": ..., "submitted_at": ...}``, as the deferred set keeps jobs;
                its `submitted_at` orders the line.
            hold_s: the hold's lease: a run's claim lease.
            check_backlog: answer `Turn.BACKLOG`, taking a place in the line but not the
                hold, while the connection has a backlog (a single job joins it; a batch's
                jobs are that backlog).
            place_only: take a place in the line and nothing else (`Turn.PLACED`): a batch
                does this for a job that follows another of its jobs on the same ticket, and
                enters it once that one is done.
        """
        keys = [ticket_hold_key(connection, ticket_id), TICKET_WAITING, TICKET_LINES, DEFERRED]
        keys += [DEFERRED_JOBS, BACKLOG_JOBS]
        keys += [backlog_key(connection), backlog_taken_key(connection)]
        raw = cast(
            list[Any],
            self._enter(
                keys=keys,
                args=[
                    job_id,
                    submitted_ms(payload.get("submitted_at")),
                    int(hold_s * 1000),
                    self._quiet_ms,
                    json.dumps(payload),
                    RESULT_PREFIX,
                    CLAIM_PREFIX,
                    "1" if check_backlog else "0",
                    _KEEP_MS,
                    "1" if place_only else "0",
                ],
            ),
        )
        return Entry(Turn(str(raw[0])), str(raw[1]) if raw[1] else None)

    def leave(self, connection: str, ticket_id: int, job_id: str, *, finished: bool) -> bool:
        """End a job's turn: drop its hold, and its place too when `finished` (it has its
        record); a job that will run again keeps its place. Hands the ticket to the next job
        if it waits here.

        One script call; idempotent. Returns whether a waiting job was handed the ticket.
        """
        keys, args = self._leave_call(connection, ticket_id, job_id, finished=finished)
        return bool(self._leave(keys=keys, args=args))

    def write_and_leave(
        self,
        records: Records,
        record: ResultRecord,
        job: Any,
        connection: str,
        ticket_id: int,
    ) -> bool:
        """`records.write(record, job)` and `leave(..., finished=True)`, in one atomic call.

        Returns:
            False when the job already had a record (nothing was written; its turn ended).

        Raises:
            NotReplicated: as `records.write`: the record and the turn's end are on the
                primary, but the replicas required did not confirm them in time.
        """
        write_keys, write_args = records.write_call(record, job)
        keys, args = self._leave_call(connection, ticket_id, record.job_id, finished=True)
        counts = [len(write_keys), len(write_args)]
        # The record waits for replicas as `records.write` does (worker.replication).
        written = records.acks.write(
            self._redis,
            f"the record of job {record.job_id}",
            lambda pipe: self._write_and_leave(
                keys=write_keys + keys, args=write_args + args + counts, client=pipe
            ),
        )
        records.written(record, write_args)
        return bool(written)

    def _leave_call(
        self, connection: str, ticket_id: int, job_id: str, *, finished: bool
    ) -> tuple[list[str], list[Any]]:
        keys = [ticket_hold_key(connection, ticket_id), TICKET_WAITING, TICKET_LINES, DEFERRED]
        keys += [DEFERRED_JOBS, BACKLOG_JOBS]
        args = [job_id, "1" if finished else "0", self._quiet_ms, RESULT_PREFIX, CLAIM_PREFIX]
        return keys, args

    def reap(self) -> int:
        """Hand on every ticket whose holder died or whose first places went quiet, to the job
        waiting first; returns how many jobs were handed a ticket (a mover step)."""
        moved = self._reap(
            keys=[TICKET_WAITING, TICKET_LINES, DEFERRED, DEFERRED_JOBS, BACKLOG_JOBS],
            args=[self._quiet_ms, RESULT_PREFIX, CLAIM_PREFIX],
        )
        return int(cast(int, moved))


def submitted_ms(submitted_at: object) -> int:
    """Milliseconds since the epoch of an ISO 8601 submission time; now when there is none or
    it cannot be read (a producer that sends none is ordered by when a worker first saw it)."""
    if isinstance(submitted_at, str):
        try:
            return int(datetime.fromisoformat(submitted_at).timestamp() * 1000)
        except ValueError:
            pass
    return int(time.time() * 1000)
