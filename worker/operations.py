"""The worker's public API for operator tools: what `halo-jobs` may read and change of its state.

The operator commands (the `operators` package) reach the worker's Redis state only through
this module: they spell none of the worker's keys and import none of the modules that own them
(`worker.results`, `worker.deadletters`, `worker.fleet`, `worker.governor`, `worker.runtime`,
...). So a key can be renamed, or a store split, without touching an operator command.

- Redis: `result_redis`, `broker_redis`, connected as the workers connect.
- Halo: `halo_clients` (built by the workers' own builder), `rate_limit` (what the fleet
  keeps to on a connection), `tenant_facts` (what the fleet learned of a tenant's batching).
- Failed jobs kept for replay: `kept_for_replay`, `take_for_replay`.
- Dead letters: `dead_letters`, `remove_dead_letter`.
- Work that is not moving: `stalled_work` (the fleet), `check_worker` (this host's worker).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import httpx
import redis

from worker import deadletters, fleet, heartbeat
from worker.connections import Connection
from worker.deadletters import DeadLetter, Stored
from worker.governor import Governor
from worker.halo.client import HaloClients
from worker.heartbeat import Verdict
from worker.keys import failed_job_key, learned_key
from worker.learned import Learned, TenantFacts
from worker.models import QUEUE
from worker.ratelimit import RateLimit
from worker.runtime import halo_clients as build_halo_clients
from worker.runtime import redis_client
from worker.settings import Settings
from worker.sharedcache import RedisCache

__all__ = [
    "DEAD_LETTER_MAX_RAW_BYTES",
    "DeadLetter",
    "KeptJob",
    "Stored",
    "TenantFacts",
    "Verdict",
    "broker_redis",
    "check_worker",
    "dead_letters",
    "halo_clients",
    "kept_for_replay",
    "rate_limit",
    "remove_dead_letter",
    "result_redis",
    "stalled_work",
    "take_for_replay",
    "tenant_facts",
    "tenant_facts_key",
]

# A dead letter's item is kept whole up to this many bytes, and cut beyond.
DEAD_LETTER_MAX_RAW_BYTES: Final = deadletters.MAX_RAW_BYTES

# KEYS: failed job. Counts one more replay and returns {n, job}; nil when no job is kept.
# Checking first keeps HINCRBY from creating a key without a TTL after the original expired.
_TAKE_FOR_REPLAY = """
local job = redis.call('HGET', KEYS[1], 'job')
if not job then return nil end
return {redis.call('HINCRBY', KEYS[1], 'replays', 1), job}
"""


# -- Redis -------------------------------------------------------------------------------------


def result_redis(settings: Settings) -> redis.Redis:
    """A client of the result store (`HALO_RESULT_URL`), connected as the workers connect."""
    return redis_client(settings.results_redis_url, settings)


def broker_redis(settings: Settings) -> redis.Redis:
    """A client of the broker's Redis (`HALO_BROKER_URL`), where the queues and dead letters
    are."""
    return redis_client(settings.broker_url, settings)


# -- Halo --------------------------------------------------------------------------------------


def halo_clients(
    settings: Settings,
    connections: Mapping[str, Connection],
    *,
    store: redis.Redis | None,
    share_cache: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> HaloClients:
    """Halo clients built as the workers build theirs (`worker.runtime.halo_clients`): the
    settings' timeouts, lookup TTL and token refresh margin.

    Args:
        store: the result store. Given, every request takes the connection's shared budget, as
            a worker's would; None (it did not answer): requests are counted nowhere.
        share_cache: with `store`, use the fleet's cached tokens and lookup lists, and leave
            what was read there for the workers. False keeps both in this process (the doctor
            asks for a token of its own, to test the credentials as configured).
        transport: the HTTP transport; None is httpx's own.
    """
    shared = store is not None and share_cache
    return build_halo_clients(
        settings,
        connections,
        cache=RedisCache(store) if shared and store is not None else None,
        budget=Governor(store) if store is not None else None,
        transport=transport,
    )


def rate_limit(store: redis.Redis, connection: Connection) -> RateLimit:
    """The limit the fleet keeps to on `connection`: the configured one, or a lower one Halo
    stated in a 429 (learned for up to a day).

    Raises:
        redis.RedisError: the result store is unreachable.
    """
    return Governor(store).effective_limit(connection)


def tenant_facts(store: redis.Redis, connection: str) -> TenantFacts:
    """What the fleet learned of the tenant behind `connection`: whether its list reads honour
    ticketids, how it pages them, how it answers a POST of several tickets (`worker.learned`).

    Raises:
        redis.RedisError: the result store is unreachable.
    """
    return Learned(store).facts(connection)


def tenant_facts_key(connection: str) -> str:
    """The key holding those facts: deleting it has them looked at again (after an upgrade)."""
    return learned_key(connection)


# -- failed jobs kept for replay ---------------------------------------------------------------


@dataclass(frozen=True)
class KeptJob:
    """What the worker keeps of a failed job for `halo-jobs replay`, for the record's lifetime.

    Attributes:
        connection: the job's connection, None when it was not known (an invalid job).
        replays: how many times the job was taken for replay so far.
        job_kept: whether the job itself is still kept (never for an invalid job).
    """

    connection: str | None
    replays: int
    job_kept: bool


def kept_for_replay(store: redis.Redis, job_ids: Sequence[str]) -> list[KeptJob]:
    """What is kept of each failed job, in the order given; one round trip."""
    with store.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            key = failed_job_key(job_id)
            pipe.hmget(key, ["connection", "replays"])
            pipe.hexists(key, "job")
        answers = pipe.execute()
    kept = []
    for index in range(len(job_ids)):
        connection, replays = answers[2 * index]
        kept.append(KeptJob(connection or None, int(replays or 0), bool(answers[2 * index + 1])))
    return kept


def take_for_replay(store: redis.Redis, job_id: str) -> tuple[int, dict[str, Any]] | None:
    """Count one more replay of a failed job: its number (1 for the first) and the job as it was
    submitted; None when the job is no longer kept (expired, or it was invalid).

    Raises:
        redis.RedisError: the result store is unreachable.
    """
    take = store.register_script(_TAKE_FOR_REPLAY)
    taken = cast(list[Any] | None, take(keys=[failed_job_key(job_id)]))
    if taken is None:
        return None
    job: dict[str, Any] = json.loads(str(taken[1]))
    return int(taken[0]), job


# -- dead letters ------------------------------------------------------------------------------


def dead_letters(broker: redis.Redis, limit: int) -> list[Stored]:
    """The newest `limit` dead letters, newest first (`worker.deadletters`)."""
    return deadletters.read(broker, limit)


def remove_dead_letter(broker: redis.Redis, stored: Stored) -> bool:
    """Remove one dead letter (once its job was submitted); False when it was already gone."""
    return deadletters.remove(broker, stored)


# -- work that is not moving -------------------------------------------------------------------


def stalled_work(settings: Settings, *, max_age_s: float) -> list[str]:
    """Work waiting where nothing moves it, one sentence per finding (`worker.fleet`).

    Raises:
        redis.RedisError: the broker's Redis or the result store is unreachable.
    """
    results = result_redis(settings)
    same = settings.broker_url == settings.results_redis_url
    broker = results if same else broker_redis(settings)
    try:
        return fleet.stalled_work(broker, results, max_age_s=max_age_s)
    finally:
        results.close()
        broker.close()


def check_worker(settings: Settings, *, max_age_s: float) -> Verdict:
    """Whether this host's worker consumed the queue `halo` within `max_age_s`, judged from its
    heartbeat file (`HALO_HEARTBEAT_FILE`); reads no Redis (`worker.heartbeat`)."""
    return heartbeat.check(settings.heartbeat_file, max_age_s, home_queue=QUEUE)
