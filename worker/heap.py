"""The worker process's heap and Python's cyclic garbage collector.

Some of what a delivery leaves behind is freed only by the cyclic garbage collector, not when
its last reference goes. Most of it comes from Celery: a delivery that ends RETRY (deferred,
parked, busy, waiting: `worker.outcomes.JobWaiting`) leaves the raised exception, its
traceback, the tracer's frames and billiard's copy of them (`ExceptionInfo`, a list of code
positions per frame) in one reference cycle, about 45 KiB a delivery (celery 5.7.0,
`celery/app/trace.py`, `handle_retry`). Such garbage outlives the young collections while the
delivery runs, and then waits for a full collection, which CPython (3.11) runs only once the
objects promoted since the last one exceed a quarter of those that survived it: a started
worker holds about 100,000 container objects (modules, classes, Celery, pydantic's schemas),
so thousands of deliveries' garbage piled up first. Measured in one worker: the bytes in
Python's small-object allocator swung between 44 and 80 MiB, and once freed, that garbage
left the allocator's 1 MiB arenas partly used (an arena goes back to the system only when
empty). RSS then kept the high-water mark and rose again after each burst of waiting
deliveries: the jobs parked or deferred while a 429 pauses a connection.

`freeze_startup` moves every object alive once the worker is ready into the collector's
permanent generation (`gc.freeze`): never scanned again, and no longer counted in that
quarter. Full collections then come every few dozen waiting deliveries, scan only what was
made since start-up, and the garbage between two of them stays a few MiB. Objects frozen are
never collected, even once unreachable: only what start-up built is frozen, once.
"""

from __future__ import annotations

import gc


def freeze_startup() -> int:
    """Collect what start-up left as garbage, freeze the rest, and start the count of objects
    that survive a full collection again from what is not frozen.

    Returns:
        How many objects the permanent generation holds.
    """
    gc.collect()
    gc.freeze()
    # The threshold of the next full collection comes from the survivors of the last one,
    # which were all of start-up's objects: one more full collection (of nothing but what was
    # made since) counts the unfrozen ones alone.
    gc.collect()
    return gc.get_freeze_count()
