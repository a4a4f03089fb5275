"""Writes that must outlive a failover: wait until a replica has them (Redis ``WAIT``).

Redis replicates asynchronously. A write the primary acknowledged may not have reached the
replica when the primary dies, and Sentinel then promotes a replica without it. For most of
the service's keys that is harmless (a lookup cache refills, the governor's window is
approximate), but four writes carry the exactly-once promise:

- the claim (``halo:claim:<job_id>``): lost, a second worker could run the same job at the
  same time, and both could write to Halo;
- the write journal (``halo:job:<job_id>`` field ``journal``), written before a Halo POST:
  lost, a rerun after a crash would not know the POST was sent;
- the record and its feed entry (``halo:result:<job_id>``), written before the message is
  acked and before a producer waiting for it is woken: lost, the job would have no record
  (the lost-job scan would run it again, minutes later), and a producer may already have
  acted on one that then disappears. (A replica applies writes in order, so an ack that
  survived implies the record did, on a single Redis; with the broker on another Redis
  than the records, only the wait protects it.)
- an accepted job's tracking entry (``halo:unfinished``), written by the producer after the
  queue push: the producer says "accepted" only once a replica has both.

With ``HALO_REDIS_MIN_REPLICAS_ACKED=N`` (N > 0) each of these is sent in one pipeline with
``WAIT N timeout`` on the same connection, and the step that depends on it (the Halo POST,
the ack, telling the producer "accepted") happens only when N replicas confirmed. Fewer
confirmations raise `NotReplicated`, a `redis.RedisError`: the delivery goes back to the broker
and runs again, like any other Redis failure. N = 0 (the default, for a single Redis) sends no
WAIT and costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError


class NotReplicated(redis.RedisError):
    """Raised when fewer replicas than required confirmed a write within the timeout.

    `reply` is what the write answered on the primary, where it did run (None when the
    error was raised without one).
    """

    def __init__(self, message: str, reply: Any = None) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class ReplicaAcks:
    """How many replicas must confirm a write, and how long to wait for them.

    Attributes:
        min_replicas: replicas that must confirm; 0 sends no WAIT at all.
        timeout_s: the longest a write waits for them.
    """

    min_replicas: int = 0
    timeout_s: float = 2.0

    def write(self, client: redis.Redis, what: str, commands: Callable[[redis.Redis], Any]) -> Any:
        """Run `commands` and, when required, wait for the replicas: one round trip.

        Args:
            client: the Redis the write goes to.
            what: the write, named for the error message ("the claim of job j").
            commands: sends the write's commands to the client it is given: `client` itself
                when no replica is required, else a pipeline that ends with the WAIT.

        Returns:
            The reply of the last command `commands` sent.

        Raises:
            NotReplicated: fewer than `min_replicas` replicas confirmed in time; the write may
                or may not survive a failover, so nothing may depend on it yet.
        """
        if not self.min_replicas:
            # Nothing to wait for: the write alone (a script goes as EVALSHA, and is loaded
            # only when the server does not know it).
            return commands(client)
        replies = _with_wait(client, commands, self.min_replicas, self.timeout_s)
        acked = int(replies[-1])
        if acked < self.min_replicas:
            raise NotReplicated(
                f"{what} reached {acked} of the {self.min_replicas} replica(s) required "
                f"(HALO_REDIS_MIN_REPLICAS_ACKED) within {self.timeout_s:g} s; it is not "
                "relied on, and the delivery will run again",
                replies[-2],
            )
        return replies[-2]


@dataclass(frozen=True)
class DurableField:
    """One hash field that must outlive a failover before something else happens (a write
    journal's note, before its POST): written alone by `write`, or carried by another atomic
    call to the same Redis that waits for the same replicas (`worker.governor`, which writes
    it with the request's budget grant).

    Attributes:
        client: the Redis it is written to.
        key, field, value: what is written (HSET key field value).
        acks: the replicas it must reach.
        what: the write, named for the error message.
    """

    client: redis.Redis
    key: str
    field: str
    value: str
    acks: ReplicaAcks
    what: str

    def write(self) -> None:
        """Write it alone; returns once the replicas required have it.

        Raises:
            NotReplicated: too few replicas confirmed in time.
        """
        self.acks.write(self.client, self.what, lambda c: c.hset(self.key, self.field, self.value))


def _with_wait(
    client: redis.Redis, commands: Callable[[redis.Redis], Any], replicas: int, timeout_s: float
) -> list[Any]:
    """`commands` and ``WAIT replicas timeout`` in one pipeline on one connection; the replies.

    transaction=False: scripts and WAIT must share one connection (WAIT counts the replicas
    that have this connection's writes), not one MULTI block. A pipeline would first ask the
    server whether it knows each script (SCRIPT EXISTS, a round trip of its own): it is sent
    without asking, and only if the server had lost a script (a restart, a failover: the
    script then did not run) is it sent again, loading the scripts first.
    """
    wait_ms = max(1, round(timeout_s * 1000))
    with client.pipeline(transaction=False) as pipe:
        commands(pipe)
        pipe.scripts.clear()
        pipe.wait(replicas, wait_ms)
        replies = pipe.execute(raise_on_error=False)
    if not any(isinstance(reply, NoScriptError) for reply in replies):
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies
    with client.pipeline(transaction=False) as pipe:
        commands(pipe)
        pipe.wait(replicas, wait_ms)
        return pipe.execute()
