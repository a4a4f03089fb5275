"""Waiting for the records of many jobs at once, under one deadline.

    waited = wait_for_records(client, job_ids, timeout_s=60)
    waited.records["job-1"]["outcome"]   # the jobs that finished
    waited.missing                       # the ones still without a record at the deadline

How: note where the completion feed (`halo:results`) ends, read the records that already exist
with MGET, then read the feed onward from the noted entry until every job has appeared in it or
the deadline passes. A record and its feed entry are written together by one script, so a
record written before the note is found by MGET and one written after it is in the feed after
the noted entry: no finish is missed, and the cost is one read per round whatever the number of
jobs (not one blocking wait per job). The feed carries every job of the fleet, so a round may
read entries of other producers' jobs; they are skipped.

Reading the feed with XREAD, not a consumer group, leaves the rule runner's groups untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis

from worker.keys import RESULTS_STREAM, result_key

# Keys per MGET: large enough to need few round trips for thousands of jobs, small enough that
# one reply never holds more than a few MB of records.
_MGET_CHUNK: Final = 500
# Feed entries per read: one round catches up with a busy fleet without one huge reply.
_FEED_COUNT: Final = 1000
# The longest one blocking read lasts: progress is reported at least this often, and it stays
# far below the client's socket timeout (10 s in `Producer`).
_ROUND_S: Final = 1.0
# An XREAD BLOCK of 0 ms would block forever: never ask for less than this.
_MIN_BLOCK_MS: Final = 1

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Waited:
    """What a wait found: the records of the jobs that finished, and the ones that did not.

    Attributes:
        records: each finished job's record, by job id.
        missing: the job ids without a record when the wait ended, in the order given.
    """

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def wait_for_records(
    client: redis.Redis,
    job_ids: Iterable[str],
    timeout_s: float,
    *,
    on_progress: Progress | None = None,
) -> Waited:
    """Block until every job has a record, or until `timeout_s` has passed, whichever is first.

    `timeout_s` bounds the whole wait, not each job's. Only reads: safe to run alongside any
    number of other waiters and consumer groups.

    Args:
        client: the result store (`HALO_RESULT_URL`), with decoded responses.
        job_ids: the jobs; a job id given twice is waited for once.
        timeout_s: the whole wait, in seconds; 0 or less only reads the records that exist.
        on_progress: called with (finished, total) after the records that already exist are
            read and then after every round, at least once a second while waiting.

    Raises:
        redis.RedisError: the result store is unreachable.
    """
    deadline = time.monotonic() + timeout_s
    wanted = list(dict.fromkeys(job_ids))
    # Noted before MGET: a record written after this point is in the feed after `last_id`.
    last_id = _feed_end(client)
    records = _existing(client, wanted)
    pending = {job_id for job_id in wanted if job_id not in records}
    _report(on_progress, len(records), len(wanted))
    while pending:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            break
        block_ms = max(_MIN_BLOCK_MS, int(min(remaining_s, _ROUND_S) * 1000))
        answer = client.xread({RESULTS_STREAM: last_id}, count=_FEED_COUNT, block=block_ms)
        for _stream, entries in cast(list[Any], answer or []):
            for entry_id, fields in entries:
                last_id = entry_id
                job_id = fields.get("job_id", "")
                if job_id in pending:
                    pending.discard(job_id)
                    records[job_id] = json.loads(fields["record"])
        _report(on_progress, len(records), len(wanted))
    if pending:
        # A last look at the keys themselves, so the answer never depends on the feed alone
        # (an operator may have trimmed it).
        late = _existing(client, [job_id for job_id in wanted if job_id in pending])
        records.update(late)
        if late:
            _report(on_progress, len(records), len(wanted))
    return Waited(
        records={job_id: records[job_id] for job_id in wanted if job_id in records},
        missing=[job_id for job_id in wanted if job_id not in records],
    )


def _feed_end(client: redis.Redis) -> str:
    """The id of the feed's newest entry, or "0-0" while it is empty."""
    newest = cast(list[Any], client.xrevrange(RESULTS_STREAM, count=1))
    return str(newest[0][0]) if newest else "0-0"


def _existing(client: redis.Redis, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), _MGET_CHUNK):
        chunk = job_ids[start : start + _MGET_CHUNK]
        raws = cast(list[str | None], client.mget([result_key(job_id) for job_id in chunk]))
        found.update(
            {job_id: json.loads(raw) for job_id, raw in zip(chunk, raws, strict=True) if raw}
        )
    return found


def _report(on_progress: Progress | None, finished: int, total: int) -> None:
    if on_progress is not None:
        on_progress(finished, total)
