"""What a rule runner imports to produce Update Halo Ticket jobs: submit, wait, result, and
the completion feed.

Owns: `Producer` (validate, submit, result, wait, wait_many), `CompletionFeed` and the
waiting of many jobs under one deadline (`producers.waiting`).

Imports: the stdlib, celery, kombu and redis, and from the worker only what producer and
worker agree on: the contract (`worker.models`, `worker.errors`: the job, the record, the error
codes; `worker.keys`: the record's key and the feed's stream; `worker.publishing`: the job
message as it goes on the queue; `worker.settings`: the configuration, ``HALO_BROKER_URL`` and
``HALO_RESULT_URL``; `worker.redisconn`: how to connect, Sentinel and TLS included;
`worker.replication`: the replicas an accepted job must reach) and `worker.handoff` (the
safety net and the wake-up the Python producer shares with the workers). It must not import
the worker's Celery tasks, job runner, result store, Halo client or httpx, nor the operator
tools (`operators`), so a rule runner gets no more than it needs;
`tests/unit/test_import_rules.py` holds it to that.
"""

from producers.feed import CompletionFeed, FeedEntry
from producers.jobs import Producer, SubmitError
from producers.waiting import Waited

__all__ = ["CompletionFeed", "FeedEntry", "Producer", "SubmitError", "Waited"]
