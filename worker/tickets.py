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
    TICKET_LINE_SUFFIX,
    TICKET_LINES,
    TICKET_PARKED_SUFFIX,
    TICKET_SEEN_SUFFIX,
    TICKET_WAITING,
    backlog_key,
    backlog_taken_key,
    ticket_hold_key,
)
from worker.models import ResultRecord
from worker.records import WRITE_RECORD_LUA, Records

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


# Shared by the scripts. G holds the global key names: result and claim prefixes, deferred
# set and payloads, backlog payloads, waiting hash, lines set. A ticket's other keys are its
# hold key (`base`) plus LINE, SEEN or PARKED.
_COMMON = (
    (
        f"local LINE, SEEN, PARKED = '{TICKET_LINE_SUFFIX}', '{TICKET_SEEN_SUFFIX}', "
        f"'{TICKET_PARKED_SUFFIX}'\n"
    )
    + """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function alive(base, job_id, now, quiet_ms, g)
  if redis.call('EXISTS', g.result .. job_id) == 1 then return false end
  if redis.call('EXISTS', g.claim .. job_id) == 1 then return true end
  if redis.call('ZSCORE', g.deferred, job_id) then return true end
  if redis.call('HEXISTS', g.backlog, job_id) == 1 then return true end
  if redis.call('HEXISTS', base .. PARKED, job_id) == 1 then return true end
  local seen = redis.call('HGET', base .. SEEN, job_id)
  return seen and now - tonumber(seen) < quiet_ms
end

local function forget(base, job_id, g)
  redis.call('ZREM', base .. LINE, job_id)
  redis.call('HDEL', base .. SEEN, job_id)
  redis.call('HDEL', base .. PARKED, job_id)
  redis.call('HDEL', g.waiting, job_id)
end

-- The first live place of the line, dropping dead ones before it; false for an empty line.
local function first_live(base, now, quiet_ms, g)
  while true do
    local first = redis.call('ZRANGE', base .. LINE, 0, 0)
    if #first == 0 then return false end
    if alive(base, first[1], now, quiet_ms, g) then return first[1] end
    forget(base, first[1], g)
  end
end

-- The job holding the ticket, or false. A hold whose job has a record is over.
local function holder(base, g)
  local job_id = redis.call('GET', base)
  if job_id and redis.call('EXISTS', g.result .. job_id) == 0 then return job_id end
  if job_id then redis.call('DEL', base) end
  return false
end

local function tidy(base, g)
  if redis.call('HLEN', base .. PARKED) == 0 then redis.call('SREM', g.lines, base) end
  if redis.call('ZCARD', base .. LINE) == 0 then redis.call('DEL', base .. SEEN) end
end

-- Give a free ticket to the first live job of its line if that job waits here: it is moved
-- to the deferred set, due now, for the mover to publish. Returns 1 if a job was moved.
local function hand_off(base, now, quiet_ms, g)
  local moved = 0
  if not holder(base, g) then
    local first = first_live(base, now, quiet_ms, g)
    local payload = first and redis.call('HGET', base .. PARKED, first)
    if payload then
      redis.call('HSET', g.deferred_jobs, first, payload)
      redis.call('ZADD', g.deferred, now, first)
      redis.call('HDEL', base .. PARKED, first)
      redis.call('HDEL', g.waiting, first)
      redis.call('HSET', base .. SEEN, first, now)
      moved = 1
    end
  end
  tidy(base, g)
  return moved
end
"""
)

# KEYS: hold, waiting, lines, deferred, deferred jobs, backlog jobs, backlog, backlog taken
# ARGV: job_id, submitted_ms, hold_ms, quiet_ms, payload, result prefix, claim prefix,
#       check backlog (1/0), keep_ms, only take a place (1/0)
_ENTER = (
    _COMMON
    + """
local base, job = KEYS[1], ARGV[1]
local g = {result = ARGV[6], claim = ARGV[7], deferred = KEYS[4], deferred_jobs = KEYS[5],
           backlog = KEYS[6], waiting = KEYS[2], lines = KEYS[3]}
local now, quiet = now_ms(), tonumber(ARGV[4])
redis.call('ZADD', base .. LINE, 'NX', ARGV[2], job)
redis.call('HSET', base .. SEEN, job, now)
redis.call('PEXPIRE', base .. LINE, ARGV[9])
redis.call('PEXPIRE', base .. SEEN, ARGV[9])
if ARGV[10] == '1' then return {'placed', false} end
-- A job joining its connection's backlog keeps its place: a later job of its ticket that
-- arrives once the backlog is released cannot overtake it.
if ARGV[8] == '1' and redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) > 0 then
  return {'backlog', false}
end
local ahead = holder(base, g)
if not ahead then ahead = first_live(base, now, quiet, g) end
if ahead == job then
  redis.call('SET', base, job, 'PX', ARGV[3])
  redis.call('HDEL', base .. PARKED, job)
  redis.call('HDEL', KEYS[2], job)
  tidy(base, g)
  return {'go', false}
end
redis.call('HSET', base .. PARKED, job, ARGV[5])
redis.call('PEXPIRE', base .. PARKED, ARGV[9])
redis.call('HSET', KEYS[2], job, base)
redis.call('SADD', KEYS[3], base)
return {'wait', ahead}
"""
)

# KEYS: hold, waiting, lines, deferred, deferred jobs, backlog jobs
# ARGV: job_id, finished (1/0), quiet_ms, result prefix, claim prefix
_LEAVE_LUA = """
local function leave(KEYS, ARGV)
  local base, job = KEYS[1], ARGV[1]
  local g = {result = ARGV[4], claim = ARGV[5], deferred = KEYS[4], deferred_jobs = KEYS[5],
             backlog = KEYS[6], waiting = KEYS[2], lines = KEYS[3]}
  if redis.call('GET', base) == job then redis.call('DEL', base) end
  local now = now_ms()
  if ARGV[2] == '1' then
    forget(base, job, g)
  elseif redis.call('ZSCORE', base .. LINE, job) then
    redis.call('HSET', base .. SEEN, job, now)
  end
  return hand_off(base, now, tonumber(ARGV[3]), g)
end
"""
_LEAVE = _COMMON + _LEAVE_LUA + "return leave(KEYS, ARGV)\n"

# A record and the end of its job's turn, in one atomic call (one round trip).
# KEYS: the record write's, then the leave's. ARGV: the record write's, the leave's, then how
# many KEYS and ARGV are the record write's.
_WRITE_AND_LEAVE = (
    WRITE_RECORD_LUA
    + _COMMON
    + _LEAVE_LUA
    + """
local function slice(list, first, last)
  local out = {}
  for i = first, last do table.insert(out, list[i]) end
  return out
end
local nkeys, nargs = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local written = write_record(slice(KEYS, 1, nkeys), slice(ARGV, 1, nargs))
leave(slice(KEYS, nkeys + 1, #KEYS), slice(ARGV, nargs + 1, #ARGV - 2))
return written
"""
)

# KEYS: waiting, lines, deferred, deferred jobs, backlog jobs
# ARGV: quiet_ms, result prefix, claim prefix
_REAP = (
    _COMMON
    + """
local g = {result = ARGV[2], claim = ARGV[3], deferred = KEYS[3], deferred_jobs = KEYS[4],
           backlog = KEYS[5], waiting = KEYS[1], lines = KEYS[2]}
local now, moved = now_ms(), 0
for _, base in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  moved = moved + hand_off(base, now, tonumber(ARGV[1]), g)
end
return moved
"""
)


class TicketLines:
    """The per-ticket holds and lines of one fleet, in the result Redis."""

    def __init__(self, client: redis.Redis, *, quiet_s: float) -> None:
        """Keep lines in `client`; a place whose job shows no sign of life for `quiet_s` is
        skipped (see the module docstring for why that bound)."""
        self._redis = client
        self._quiet_ms = int(quiet_s * 1000)
        self._enter = client.register_script(_ENTER)
        self._leave = client.register_script(_LEAVE)
        self._write_and_leave = client.register_script(_WRITE_AND_LEAVE)
        self._reap = client.register_script(_REAP)

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
