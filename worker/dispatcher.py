"""Releasing backlogs (`worker.backlog`): in batches, as fast as each connection's budget
allows.

A dispatcher (every worker runs one; a per-connection lock lets one act at a time) releases a
backlog only as fast as the budget allows: for each grant of two requests (one list read, one
POST) it takes up to `batch_max` jobs and publishes them as one batch task, with the grant as a
reservation that the batch spends when it runs (see `Governor.use_reservation`). Only a tenant
that has shown it honours `ticketids` is batched (`worker.learned`), and no more jobs go in a
batch than the tenant puts on one list page; any other backlog (and every backlog of a
connection with ``batching = "off"``) is released one job per grant, still in order. While
a tenant has shown nothing yet, such a release's read is the probe that can show the filter is
honoured, and it is the only release of its dispatch round (nor does the dispatcher release
another for `_PROBE_WAIT_S` while it may be on its way), so the budget is not spent job by
job before the probe has run.

A burst (`worker.burst`) parks its jobs while there is budget, one by one as workers take
them: released as they come, they would go in batches of two or three, each costing a read and
a POST. So a batch smaller than a full one is held back while jobs are still being parked (the
backlog's park counter moved since this dispatcher last looked, a tenth of a second ago), for
at most `_GATHER_MAX_S`; a full batch, or a backlog no job joined since, is released at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from worker.connections import Connection
from worker.governor import Governor
from worker.learned import Learned

if TYPE_CHECKING:
    # `worker.backlog` imports this module, to offer `Dispatcher` where its callers look.
    from worker.backlog import Backlogs, Parked

# A batch costs one list read and one POST, whatever its size.
BATCH_COST: Final = 2
# The longest a partial batch waits for more of a burst's jobs. A storm's jobs reach the
# backlog within a second or two; a second is little beside what batching saves (a read and a
# POST per job, at Halo's latency and out of a 5-minute budget), and caps the wait of a job
# that arrives in a steady trickle.
_GATHER_MAX_S: Final = 1.0
# While a probe released by this dispatcher may still be on its way (a batch task's read takes
# one Halo answer, normally well under a second), no other is released: each would be a job
# run alone. A probe whose answer is not in by then (a slow Halo, a retry) is followed by
# another.
_PROBE_WAIT_S: Final = 2.0


class Dispatcher:
    """Releases backlogs in batches, as fast as each connection's budget allows."""

    def __init__(
        self,
        backlogs: Backlogs,
        governor: Governor,
        connections: Mapping[str, Connection],
        publish_batch: Callable[[str, list[Parked], int, str | None], None],
        *,
        batch_max: int,
        learned: Learned,
    ) -> None:
        self._backlogs = backlogs
        self._governor = governor
        self._connections = connections
        self._publish = publish_batch
        self._batch_max = batch_max
        self._learned = learned
        # Per connection: the park counter at this dispatcher's last look, and since when
        # (time.monotonic()) it holds a partial batch back.
        self._seen: dict[str, int] = {}
        self._gathering_since: dict[str, float] = {}
        self._probed: dict[str, float] = {}  # when this dispatcher last released a probe

    def dispatch(self) -> int:
        """Release what the budgets allow now; returns how many jobs were released."""
        released = 0
        # Connections take turns, one batch each per round, so equal demand gets equal service.
        pending = [name for name in self._backlogs.connections() if name in self._connections]
        locked = [name for name in pending if self._backlogs.dispatch_lock(name)]
        try:
            for name in locked:
                self._backlogs.reap(name)
            # Decided once a round: within it, the counter has not moved since the first look.
            gathering = {name for name in locked if self._gathering(name)}
            while locked:
                for name in list(locked):
                    count, probe = self._release_one(name, hold_partial=name in gathering)
                    # A probe's release is the only one of its round: once it has run, the
                    # next round may batch, instead of spending the budget job by job now.
                    if count == 0 or probe:
                        locked.remove(name)
                        self._backlogs.dispatch_unlock(name)
                    released += count
        finally:
            for name in locked:
                self._backlogs.dispatch_unlock(name)
        return released

    def _gathering(self, name: str) -> bool:
        """Whether jobs are still being parked in this backlog (a burst arriving), and a
        partial batch has waited for them less than `_GATHER_MAX_S`."""
        parked = self._backlogs.parked_total(name)
        seen, self._seen[name] = self._seen.get(name), parked
        if seen is None or parked == seen:
            # Nothing joined since the last look (or there was none): release what waits.
            self._gathering_since.pop(name, None)
            return False
        since_s = self._gathering_since.setdefault(name, time.monotonic())
        if time.monotonic() - since_s >= _GATHER_MAX_S:
            self._gathering_since.pop(name, None)
            return False
        return True

    def _release_one(self, name: str, *, hold_partial: bool = False) -> tuple[int, bool]:
        """Release one batch; how many jobs it held, and whether its read is a probe. With
        `hold_partial`, a batch smaller than a full one is not released (a burst arrives)."""
        # Jobs leased to another dispatcher are not ours to release: asking for budget for
        # them would spend it on nothing until their lease ends.
        waiting = self._backlogs.waiting(name)
        if waiting == 0:
            self._backlogs.take(name, 0)  # clears the connection from halo:backlogs
            return 0, False
        connection = self._connections[name]
        size, probe = self._batch_size(connection)
        if hold_partial and waiting < size:
            return 0, False
        probed_s = self._probed.get(name)
        if probe and probed_s is not None and time.monotonic() - probed_s < _PROBE_WAIT_S:
            # Its probe is on its way: what it shows decides how the rest is released.
            return 0, False
        # A limit below a batch's cost would never grant it: such a tiny budget pays one.
        cost = min(BATCH_COST, connection.rate_limit.requests)
        grant = self._governor.try_acquire(connection, cost)
        if not grant.granted:
            return 0, False
        parked = self._backlogs.take(name, size)
        if parked:
            self._publish(name, parked, cost, grant.reservation)
            self._backlogs.released(name, parked)
            if probe:
                self._probed[name] = time.monotonic()
        return len(parked), probe

    def _batch_size(self, connection: Connection) -> tuple[int, bool]:
        """How many jobs one release of this connection takes (1 unless batching is on), and
        whether that release is a probe (the tenant has not shown what it does)."""
        if connection.batching == "off":
            return 1, False
        facts = self._learned.facts(connection.name)
        if not facts.batches:
            return 1, facts.ticketids is None
        return min(self._batch_max, facts.page_cap or self._batch_max), False
