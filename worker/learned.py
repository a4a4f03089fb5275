"""What the fleet has seen each Halo tenant do, where Halo builds and tenants differ.

Batching saves Halo budget only where the tenant answers batched requests the way the worker
reads them, and costs correctness where it does not. So a batch's fast paths are switched on
by what this tenant has been *seen* to do, never assumed:

- ``ticketids``: whether a list read ``GET /api/Tickets?ticketids=...`` answered only the
  tickets named ("honoured"), or unrelated ones too ("ignored": the build does not filter on
  it). Every list read is checked; a tenant that has never shown it honours the filter is not
  batched (`worker.backlog` releases its backlog one job at a time, and such a release reads
  its ticket with a checked list read: the probe, at no extra cost).
- ``post_answer``: whether a POST of several tickets was answered with every ticket sent
  ("every") or fewer ("partial": the first ticket alone, or no body). After a partial answer
  the batch's writes go one POST per job, whose answers are conclusive.
- ``page_cap``: the most tickets the tenant put on one list page while more were due; batches
  are then no larger than one page, so a batch read stays one request.

Facts are kept for a day after they were last seen, like the rate limit learned from a 429
(`worker.governor`): a tenant whose Halo is upgraded is looked at afresh.

Key, per connection:
    halo:learned:<connection>   the facts above, each with the time it was last seen (hash)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import redis

from worker.keys import learned_key

TicketIds = Literal["honoured", "ignored"]
PostAnswer = Literal["every", "partial"]
# A day, as for the learned rate limit: long enough that a busy tenant keeps what it showed,
# short enough that a changed tenant is looked at again.
_KEEP_S: Final = 24 * 3600


@dataclass(frozen=True)
class TenantFacts:
    """What one tenant has been seen to do; None where it has not been seen yet.

    Attributes:
        ticketids: whether list reads honour `ticketids`.
        ticketids_ms: when that was last seen (Unix ms).
        post_answer: how POSTs of several tickets were answered.
        post_answer_ms: when that was last seen (Unix ms).
        page_cap: the most tickets one list page held while more were due.
    """

    ticketids: TicketIds | None = None
    ticketids_ms: int | None = None
    post_answer: PostAnswer | None = None
    post_answer_ms: int | None = None
    page_cap: int | None = None

    @property
    def batches(self) -> bool:
        """Whether backlog jobs may share a list read: the tenant showed it honours
        `ticketids`."""
        return self.ticketids == "honoured"

    @property
    def combined_posts(self) -> bool:
        """Whether a batch may send its changes in one POST: no answer has listed fewer
        tickets than were sent."""
        return self.post_answer != "partial"


class Learned:
    """The learned facts of every connection, in the result Redis (shared by the fleet)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def facts(self, connection: str) -> TenantFacts:
        """What the connection's tenant has shown so far (a fresh one has shown nothing)."""
        raw = cast(dict[str, Any], self._redis.hgetall(learned_key(connection)))
        ticketids = raw.get("ticketids")
        post_answer = raw.get("post_answer")
        return TenantFacts(
            ticketids=ticketids if ticketids in ("honoured", "ignored") else None,
            ticketids_ms=_int(raw.get("ticketids_ms")),
            post_answer=post_answer if post_answer in ("every", "partial") else None,
            post_answer_ms=_int(raw.get("post_answer_ms")),
            page_cap=_int(raw.get("page_cap")),
        )

    def saw_list_read(self, connection: str, *, honoured: bool, page_cap: int | None) -> None:
        """Note a checked list read: whether it answered only the tickets named, and the page
        size the tenant capped it at (None: no cap seen)."""
        fields: dict[str, str | int] = {
            "ticketids": "honoured" if honoured else "ignored",
            "ticketids_ms": _now_ms(),
        }
        if page_cap is not None:
            fields["page_cap"] = page_cap
        self._save(connection, fields)

    def saw_post_answer(self, connection: str, *, every: bool) -> None:
        """Note how a POST of several tickets was answered: with every ticket sent, or not."""
        self._save(
            connection,
            {"post_answer": "every" if every else "partial", "post_answer_ms": _now_ms()},
        )

    def forget(self, connection: str) -> None:
        """Forget everything learned about a connection (it is looked at afresh)."""
        self._redis.delete(learned_key(connection))

    def _save(self, connection: str, fields: dict[str, str | int]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(learned_key(connection), mapping=cast(Any, fields))
        pipe.expire(learned_key(connection), _KEEP_S)
        pipe.execute()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)
