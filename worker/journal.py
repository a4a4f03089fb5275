"""The write journal, as an update sees it: what a job was about to POST, noted durably first.

A run that POSTed and died before its record leaves the next run nothing to change on the
ticket: the journal tells that run which fields the POST changed, so its record reports them
(`worker.update.apply_plan`). The note must therefore be durable before the POST goes out.
The worker's journal lives in Redis (`worker.claims.RedisJournal`) and its note goes with the
POST's budget grant, in the same call (`noted_before_post`); a journal in memory (tests, tools)
notes at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from worker.halo.client import HaloClient, Rider


class WriteJournal(Protocol):
    """Remembers that a job POSTed, so a rerun after a crash reports what that POST changed."""

    def recall(self) -> list[str] | None:
        """The `changed_fields` of a POST an earlier run of this job sent, if any."""
        ...

    def note(self, changed_fields: list[str]) -> None:
        """Record the fields about to be POSTed, before sending."""
        ...

    def rider(self, changed_fields: list[str]) -> Rider | None:
        """The note `note` would write, unwritten, for the POST's budget grant to write in the
        same call (`noted_before_post`); None: this journal notes with `note` only."""
        ...


@contextmanager
def noted_before_post(
    journal: WriteJournal | None, client: HaloClient, changed_fields: list[str]
) -> Iterator[None]:
    """Within the block, the client's POST goes out only once `journal` holds `changed_fields`,
    durably: noted with the budget grant of the client's next request when the journal can
    (`JobSession.riding`: one call to Redis for both, and no note for a request refused
    budget), else noted at once."""
    rider = journal.rider(changed_fields) if journal is not None else None
    if rider is None:
        if journal is not None:
            journal.note(changed_fields)
        yield
        return
    with client.riding(rider):
        yield
