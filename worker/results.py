"""The result store: the result Redis (`HALO_RESULT_URL`), one part per concern.

    records     `worker.records`: result records and the completion feed, written once
    claims      `worker.claims`: who runs a job now, what its earlier runs left (attempts,
                crashes, Halo requests), and its write journal
    deferred    `worker.deferred`: jobs waiting to run again, and the net for jobs the broker
                lost

Each part's atomic steps are one script call each, as before the split: the record write, in
particular, also ends the job's run state and its deferred and unfinished entries in that one
call. Every key is named in `worker.keys`. The writes a failover must not lose (claims, the
write journal, records, tracking entries) wait for replicas as `acks` says
(`worker.replication`).
"""

from __future__ import annotations

import redis

from worker.claims import Claims
from worker.deferred import DeferredJobs
from worker.records import Records
from worker.replication import ReplicaAcks


class ResultStore:
    """The parts of the result store, on one client: what a runner, a task or the mover holds."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, acks: ReplicaAcks | None = None) -> None:
        """Keep records and run state for `ttl_s` (HALO_RESULT_TTL_S) in `client`; claims,
        journals, records and tracking entries wait for the replicas `acks` asks for."""
        self.redis = client
        self.acks = acks or ReplicaAcks()
        self.claims = Claims(client, ttl_s=ttl_s, acks=self.acks)
        self.records = Records(client, ttl_s=ttl_s, acks=self.acks, claims=self.claims)
        self.deferred = DeferredJobs(client, acks=self.acks)
