"""Failed jobs in the result store: list them from the completion feed, resubmit one anew.

Listing reads the completion feed `halo:results` backwards (XREVRANGE, one page at a time)
rather than scanning `halo:result:*`: the feed is already in time order, so the newest come
first, a `since` bound stops the read there, a limit stops it early, and memory holds one page
however large the store. The feed is trimmed to the record TTL, so it covers the same jobs as
the records.

A replay is a new job, never the old one again (a job_id is an idempotency key: resubmitting
it would only return the stored record). Its job_id is `<job_id>:replay-<n>`, n counting the
replays of that job, hashed down to 128 characters when the original is long; its `meta` is
the original's plus `replay_of` (the original job_id) and `replay_count` (n). The job itself
comes from `halo:failed-job:<job_id>`, which the worker keeps beside each failed record for
the record's lifetime (see `worker.records`); a job that was invalid has none, and is listed
as not replayable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import redis

from producers.jobs import Producer
from worker.errors import ErrorCode
from worker.keys import RESULTS_STREAM, failed_job_key, result_key
from worker.models import JOB_ID_PATTERN

# Feed entries per round trip: a few hundred KiB of records, whatever the size of the feed.
_PAGE: Final = 500
# A feed entry's id is Redis's clock, `finished_at` the worker's: the feed is read this much
# beyond `since`/`until`, and `finished_at` is then compared exactly.
_CLOCK_SLACK_MS: Final = 5 * 60 * 1000
_MAX_JOB_ID: Final = 128
# A new replay number is drawn until its job_id has no record; more than a few means a bug.
_MAX_DRAWS: Final = 5

# KEYS: failed job. Counts one more replay and returns {n, job}; nil when no job is kept.
# Checking first keeps HINCRBY from creating a key without a TTL after the original expired.
_TAKE_FOR_REPLAY = """
local job = redis.call('HGET', KEYS[1], 'job')
if not job then return nil end
return {redis.call('HINCRBY', KEYS[1], 'replays', 1), job}
"""


@dataclass
class FailedJob:
    """One failed record as replay lists it, and what became of its replay."""

    job_id: str
    finished_at: str
    connection: str | None
    code: str
    message: str
    replayable: bool
    not_replayable_because: str | None
    replays: int
    replayed_as: str | None = None
    replay_error: str | None = None


@dataclass(frozen=True)
class Filters:
    """Which failed records to list; an empty set matches everything."""

    codes: frozenset[str] = frozenset()
    connections: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def match_record(self, record: dict[str, Any]) -> bool:
        """Whether a record passes the code and time filters."""
        code = (record.get("error") or {}).get("code", "")
        if self.codes and code not in self.codes:
            return False
        if self.since is None and self.until is None:
            return True
        finished = parse_time(str(record.get("finished_at", "")))
        if finished is None:
            return False
        return (self.since is None or finished >= self.since) and (
            self.until is None or finished <= self.until
        )

    def match(self, job: FailedJob) -> bool:
        """Whether a listed job passes the connection filter (unknown connections do not)."""
        return not self.connections or job.connection in self.connections


class ReplayError(Exception):
    """Raised when a chosen job cannot be resubmitted; the message says why."""


def list_failed(client: redis.Redis, filters: Filters, limit: int) -> list[FailedJob]:
    """The newest failed jobs matching `filters`, at most `limit`, read from the feed."""
    newest = "+" if filters.until is None else str(_ms(filters.until) + _CLOCK_SLACK_MS)
    oldest = "-" if filters.since is None else str(max(0, _ms(filters.since) - _CLOCK_SLACK_MS))
    found: list[FailedJob] = []
    while len(found) < limit:
        page = cast(
            list[tuple[str, dict[str, str]]],
            client.xrevrange(RESULTS_STREAM, max=newest, min=oldest, count=_PAGE),
        )
        records = [
            json.loads(fields["record"])
            for _, fields in page
            if fields.get("outcome") == "failed" and "record" in fields
        ]
        matching = [record for record in records if filters.match_record(record)]
        found.extend(job for job in describe(client, matching) if filters.match(job))
        if len(page) < _PAGE:
            break
        newest = f"({page[-1][0]}"  # exclusive: the next page starts below this entry
    return found[:limit]


def find_failed(
    client: redis.Redis, job_ids: Iterable[str], filters: Filters
) -> tuple[list[FailedJob], list[str]]:
    """The failed jobs named by id that match `filters`, and a line for each that is not."""
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    for job_id in dict.fromkeys(job_ids):
        raw = client.get(result_key(job_id))
        record = json.loads(raw) if isinstance(raw, str) else None
        if record is None:
            problems.append(f"{job_id} has no record (never finished, or expired)")
        elif record.get("outcome") != "failed":
            problems.append(f"{job_id} {record.get('outcome')}: only failed jobs are replayed")
        elif not filters.match_record(record):
            problems.append(f"{job_id} does not match the filters given")
        else:
            records.append(record)
    jobs = []
    for job in describe(client, records):
        if filters.match(job):
            jobs.append(job)
        else:
            problems.append(f"{job.job_id} does not match the filters given")
    return jobs, problems


def describe(client: redis.Redis, records: Sequence[dict[str, Any]]) -> list[FailedJob]:
    """Failed records with what replay knows of them: connection, replayable, replays so far."""
    with client.pipeline(transaction=False) as pipe:
        for record in records:
            key = failed_job_key(str(record.get("job_id")))
            pipe.hmget(key, ["connection", "replays"])
            pipe.hexists(key, "job")
        answers = pipe.execute()
    jobs = []
    for index, record in enumerate(records):
        connection, replays = answers[2 * index]
        kept = bool(answers[2 * index + 1])
        error = record.get("error") or {}
        code = str(error.get("code", ""))
        why_not = None
        if code == ErrorCode.INVALID_JOB:
            why_not = "the job was invalid"
        elif not kept:
            why_not = "its job is not kept (expired, or it failed before replay existed)"
        jobs.append(
            FailedJob(
                job_id=str(record.get("job_id")),
                finished_at=str(record.get("finished_at", "")),
                connection=connection or None,
                code=code,
                message=str(error.get("message", "")),
                replayable=why_not is None,
                not_replayable_because=why_not,
                replays=int(replays or 0),
            )
        )
    return jobs


def resubmit(client: redis.Redis, producer: Producer, job_id: str) -> str:
    """Submit a failed job again as a new job; returns the new job_id.

    Raises:
        ReplayError: its job is no longer kept, or no free replay job_id was found.
        InvalidJob: the replay does not validate (e.g. meta pushed it over the size limit).
        SubmitError: the broker is unreachable; nothing was enqueued.
    """
    take = client.register_script(_TAKE_FOR_REPLAY)
    for _ in range(_MAX_DRAWS):
        taken = cast(list[Any] | None, take(keys=[failed_job_key(job_id)]))
        if taken is None:
            raise ReplayError("its job is no longer kept (expired)")
        count, raw = int(taken[0]), str(taken[1])
        new_id = replay_job_id(job_id, count)
        if not client.exists(result_key(new_id)):
            break
    else:
        raise ReplayError(f"every replay job_id tried already has a record (last: {new_id})")
    job: dict[str, Any] = json.loads(raw)
    meta = dict(job.get("meta") or {})
    meta.update(replay_of=job_id, replay_count=count)
    job.update(job_id=new_id, meta=meta)
    return producer.submit(job)


def replay_job_id(job_id: str, count: int) -> str:
    """The job_id of the `count`-th replay of `job_id`: ``<job_id>:replay-<count>``.

    Always a valid job_id (1-128 of ``A-Za-z0-9._:-``): when the original is too long, or
    carries other characters (a task id sent without a job_id), its tail becomes a hash.
    """
    suffix = f":replay-{count}"
    candidate = job_id + suffix
    if JOB_ID_PATTERN.fullmatch(candidate):
        return candidate
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:16]
    keep = _MAX_JOB_ID - len(suffix) - len(digest) - 1
    prefix = re.sub(r"[^A-Za-z0-9._:-]", "_", job_id[:keep])
    return f"{prefix}.{digest}{suffix}"


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time, UTC when it names no offset; None when it is not one."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
