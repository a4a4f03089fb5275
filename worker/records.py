"""Result records and the completion feed: one record per job, written once.

Keys (`worker.keys`; the contract names the first two):

    halo:result:<job_id>    the record (string, JSON), expires after HALO_RESULT_TTL_S
    halo:results            the completion feed (stream: job_id, outcome, record)
    halo:notify:<job_id>    a wake-up for producers blocked waiting on the record (list;
                            they wait with `worker.handoff.wait_for_record`)
    halo:failed-job:<job_id>
                            what `halo-jobs replay` needs of a failed job (hash): `connection`,
                            `job` (the payload as submitted; absent when it was invalid) and
                            `replays` (counted by replay); expires with the record

A record and its feed entry are written by one Lua script, so a worker dying between the two
cannot leave one without the other, and a second write for the same job_id is a no-op. The
same call ends everything else the job held while it had no record: its state across runs
and the writer's claim (`worker.claims`: a job with a record is never run again, so the claim
has nothing left to guard), its place in the deferred and unfinished sets (`worker.deferred`);
and it
keeps a failed job's payload for replay: only failed jobs, only for the record's lifetime.
With replica acks (`worker.replication`) the call returns only once the replicas required have
the record, so nothing (an ack, a woken producer) rests on a record a failover could lose. A
payload holds no credential (jobs never do) but does hold email-derived `variables`, `summary`
and `details`, so it is kept no longer than the record it explains.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import redis

from worker.claims import Claims
from worker.errors import ErrorCode
from worker.keys import (
    DEFERRED,
    DEFERRED_JOBS,
    RESULTS_STREAM,
    UNFINISHED,
    UNFINISHED_JOBS,
    claim_key,
    failed_job_key,
    job_state_key,
    notify_key,
    result_key,
)
from worker.models import Outcome, ResultRecord
from worker.replication import ReplicaAcks
from worker.writable import record_json

# A producer that waits for a record finds the wake-up for this long after the write.
_NOTIFY_TTL_S: Final = 300
# Where `write_call`'s ARGV holds the claim token.
_TOKEN_ARG: Final = 8

# The record write as a Lua function, `write_record(KEYS, ARGV)`, so that a script that ends
# more than the job in the same atomic call (its ticket's turn: `worker.tickets`) writes the
# record the same way.
# KEYS: result, stream, state, notify, deferred, deferred jobs, failed job, unfinished,
#       unfinished jobs, claim
# ARGV: record, ttl_s, job_id, outcome, notify ttl_s, keep failed job (1/0), connection, job,
#       the writer's claim token ('' when it holds none)
WRITE_RECORD_LUA: Final = """
local function write_record(KEYS, ARGV)
if ARGV[9] ~= '' and redis.call('GET', KEYS[10]) == ARGV[9] then redis.call('DEL', KEYS[10]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local now = redis.call('TIME')
local oldest_ms = tonumber(now[1]) * 1000 - tonumber(ARGV[2]) * 1000
redis.call('XADD', KEYS[2], 'MINID', '~', tostring(oldest_ms), '*',
           'job_id', ARGV[3], 'outcome', ARGV[4], 'record', ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HDEL', KEYS[6], ARGV[3])
redis.call('ZREM', KEYS[8], ARGV[3])
redis.call('HDEL', KEYS[9], ARGV[3])
redis.call('RPUSH', KEYS[4], '1')
redis.call('EXPIRE', KEYS[4], ARGV[5])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[7], 'connection', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[7], 'job', ARGV[8]) end
  redis.call('EXPIRE', KEYS[7], ARGV[2])
end
return 1
end
"""
_WRITE_RECORD = WRITE_RECORD_LUA + "return write_record(KEYS, ARGV)\n"


class Records:
    """Records and the feed in the result Redis (`HALO_RESULT_URL`)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: int,
        acks: ReplicaAcks | None = None,
        claims: Claims | None = None,
    ) -> None:
        """Keep records in `client` for `ttl_s` (HALO_RESULT_TTL_S); a write returns once the
        replicas `acks` asks for have it, and releases the job's claim when this process
        holds it in `claims`."""
        self.redis = client
        self.ttl_s = ttl_s
        self.acks = acks or ReplicaAcks()
        self.claims = claims
        self._write = client.register_script(_WRITE_RECORD)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's record, or None while it has none."""
        raw = self.redis.get(result_key(job_id))
        return json.loads(raw) if raw else None

    def write(self, record: ResultRecord, job: Any = None) -> bool:
        """Write a record and its feed entry, atomically, once per job_id.

        Args:
            record: the record.
            job: the job's payload as it came off the queue; kept beside a failed record
                for `halo-jobs replay` (see the module docstring), ignored otherwise.

        Returns:
            False when the job already had a record (then nothing was written).

        Raises:
            NotReplicated: the replicas required did not confirm the record in time; it may
                not survive a failover, so the delivery must not be acked on it.
        """
        keys, args = self.write_call(record, job)
        written = self.acks.write(
            self.redis,
            f"the record of job {record.job_id}",
            lambda client: self._write(keys=keys, args=args, client=client),
        )
        self.written(record, args)
        return bool(written)

    def write_call(self, record: ResultRecord, job: Any = None) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of `WRITE_RECORD_LUA`'s `write_record` for `write(record, job)`;
        once the call has run, `written(record, args)`."""
        kept = _kept_for_replay(record, job)
        token = self.claims.held_token(record.job_id) if self.claims is not None else None
        return (
            [
                result_key(record.job_id),
                RESULTS_STREAM,
                job_state_key(record.job_id),
                notify_key(record.job_id),
                DEFERRED,
                DEFERRED_JOBS,
                failed_job_key(record.job_id),
                UNFINISHED,
                UNFINISHED_JOBS,
                claim_key(record.job_id),
            ],
            [
                record_json(record),
                self.ttl_s,
                record.job_id,
                record.outcome.value,
                _NOTIFY_TTL_S,
                "1" if kept else "0",
                *(kept or ("", "")),
                token or "",
            ],
        )

    def written(self, record: ResultRecord, args: list[Any]) -> None:
        """The record write whose ARGV `write_call` gave as `args` ran: the claim it released
        is not released again (`worker.claims`)."""
        token = args[_TOKEN_ARG]
        if token and self.claims is not None:
            self.claims.record_written(record.job_id, token)


def _kept_for_replay(record: ResultRecord, job: Any) -> tuple[str, str] | None:
    """``(connection, job JSON)`` to keep beside a failed record, or None to keep nothing.

    The job JSON is empty when the job was invalid: it cannot be replayed as it was.
    """
    if record.outcome is not Outcome.FAILED or not isinstance(job, Mapping):
        return None
    connection = job.get("connection")
    valid = record.error is not None and record.error.code is not ErrorCode.INVALID_JOB
    return (
        connection if isinstance(connection, str) else "",
        json.dumps(job, separators=(",", ":"), ensure_ascii=False) if valid else "",
    )
