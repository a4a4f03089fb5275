"""The completion feed: one stream entry per finished job, read with a consumer group.

    feed = CompletionFeed(redis_client, group="rule-runner", consumer="runner-1")
    for entry in feed.entries(block_s=5):
        handle(entry.record)
        feed.ack(entry)

An entry read but not acked stays pending for its consumer. A consumer that restarts under the
same name gets its pending entries again first; entries of a consumer that never comes back
are taken over by others once idle for `claim_idle_s`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.keys import RESULTS_STREAM


@dataclass(frozen=True)
class FeedEntry:
    """One finished job."""

    entry_id: str
    job_id: str
    outcome: str
    record: dict[str, Any]


class CompletionFeed:
    """A consumer of `halo:results` in a consumer group (XREADGROUP / XACK)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        consumer: str,
        start_id: str = "0",
        claim_idle_s: float = 60.0,
    ) -> None:
        """Join (and create, if needed) a consumer group.

        Args:
            start_id: where a new group starts: "0" for the whole retained feed, "$" for
                entries added from now on.
            claim_idle_s: take over other consumers' entries pending this long.
        """
        self._redis = client
        self.group = group
        self.consumer = consumer
        self._claim_idle_ms = int(claim_idle_s * 1000)
        try:
            client.xgroup_create(RESULTS_STREAM, group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._replaying = True

    def read(self, *, count: int = 100, block_s: float = 0.0) -> list[FeedEntry]:
        """Entries to process: own pending ones first, then stale ones of dead consumers,
        then new ones (waiting up to `block_s`)."""
        if self._replaying:
            pending = self._read("0", count, None)
            if pending:
                return pending
            self._replaying = False
        claimed = self._claim_stale(count)
        if claimed:
            return claimed
        return self._read(">", count, int(block_s * 1000) if block_s > 0 else None)

    def ack(self, *entries: FeedEntry) -> None:
        """Mark entries processed; they are not delivered to this group again."""
        if entries:
            self._redis.xack(RESULTS_STREAM, self.group, *(e.entry_id for e in entries))

    def entries(self, *, block_s: float = 5.0) -> Iterator[FeedEntry]:
        """Entries forever (ack each one after handling it)."""
        while True:
            yield from self.read(block_s=block_s)

    def _read(self, from_id: str, count: int, block_ms: int | None) -> list[FeedEntry]:
        answer = self._redis.xreadgroup(
            self.group, self.consumer, {RESULTS_STREAM: from_id}, count=count, block=block_ms
        )
        entries: list[FeedEntry] = []
        for _stream, messages in cast(list[Any], answer or []):
            entries.extend(_entry(entry_id, fields) for entry_id, fields in messages if fields)
        return entries

    def _claim_stale(self, count: int) -> list[FeedEntry]:
        answer: list[Any] = self._redis.xautoclaim(
            RESULTS_STREAM,
            self.group,
            self.consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=count,
        )
        return [_entry(entry_id, fields) for entry_id, fields in answer[1] if fields]


def _entry(entry_id: str, fields: dict[str, str]) -> FeedEntry:
    return FeedEntry(
        entry_id=entry_id,
        job_id=fields.get("job_id", ""),
        outcome=fields.get("outcome", ""),
        record=json.loads(fields.get("record", "{}")),
    )
