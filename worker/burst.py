"""Bursts: when a connection's jobs crowd a worker process, they are batched from the start.

An email storm (a monitoring system mailing two hundred alerts) arrives as a burst. Run one by
one, its jobs spend two or three Halo requests each and can use a connection's whole budget in
seconds; batched, twenty of them share one list read and one POST (`worker.backlog`,
`worker.batch`). Batching used to start only once the budget was spent. Now a job also joins
its connection's backlog when the process already has more than `threshold` jobs of that
connection running or being admitted: the dispatcher (every worker's mover, ten times a
second) releases the backlog in batches as soon as budget allows, which is at once while
there is budget.

The count is this process's own (a lock and a dictionary, no Redis round trip), so a lone job
pays nothing and runs straight through: it only counts itself. A burst spread over several
worker processes crowds each of them; and once one job is parked, every job of the connection
that arrives while the backlog exists joins it behind (`worker.tickets`, `Turn.BACKLOG`),
whichever process takes it.

Counted: single jobs from the start of their delivery to its end, and a released batch's jobs
while the batch runs (a job that arrives while a batch of its connection runs is part of the
same burst, and goes in the next batch).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Bursts:
    """How many jobs of each connection this process is running now; thread-safe."""

    def __init__(self, threshold: int) -> None:
        """`threshold`: the most jobs of one connection a process runs one by one at once;
        beyond it, a job joins its connection's backlog to be batched. 0 turns that off (jobs
        are batched only once the budget is spent)."""
        self.threshold = threshold
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()

    @contextmanager
    def running(self, connection: str | None, jobs: int = 1) -> Iterator[None]:
        """Count `jobs` of `connection` as running while the block runs (None: not counted,
        a job whose connection is not known yet)."""
        if connection is None or jobs <= 0:
            yield
            return
        with self._lock:
            self._running[connection] += jobs
        try:
            yield
        finally:
            with self._lock:
                self._running[connection] -= jobs
                if self._running[connection] <= 0:
                    del self._running[connection]

    def count(self, connection: str) -> int:
        """How many jobs of `connection` run in this process now."""
        with self._lock:
            return self._running[connection]

    def crowded(self, connection: str) -> bool:
        """Whether the connection's jobs in this process (the caller's own included) are more
        than the threshold: a burst, whose jobs are better batched."""
        return self.threshold > 0 and self.count(connection) > self.threshold
