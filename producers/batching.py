"""The doctor's `batching` line: whether a connection's backlog is batched, and why.

Reads what the fleet learned about the tenant (`worker.learned`, in the result Redis) and the
connection's ``batching`` setting; sends nothing to Halo.
"""

from __future__ import annotations

import time

import redis

from producers.diagnosis import Check
from worker.connections import Connection
from worker.keys import learned_key
from worker.learned import Learned, TenantFacts


def batching_check(connection: Connection, client: redis.Redis | None) -> Check:
    """The `batching` line of `halo-jobs doctor` for `connection` (`client`: the result
    Redis, or None when it did not answer)."""
    table = f"[connections.{connection.name}]"
    if connection.batching == "off":
        detail = f'off (batching = "off" in {table}): a backlog is released one job at a time'
        return Check("ok", "batching", detail)
    if client is None:
        return Check("warn", "batching", "unknown: Redis unreachable, where the fleet keeps it")
    try:
        facts = Learned(client).facts(connection.name)
    except redis.RedisError as exc:
        return Check("warn", "batching", f"unknown: Redis failed ({type(exc).__name__})")
    return _auto(connection, facts, int(time.time() * 1000))


def _auto(connection: Connection, facts: TenantFacts, now_ms: int) -> Check:
    if facts.ticketids is None:
        detail = (
            "auto, not on yet: Halo has not shown that its list reads honour ticketids; a "
            "backlog is released one job at a time until a release's checked read shows it"
        )
        return Check("ok", "batching", detail)
    seen = _ago(facts.ticketids_ms, now_ms)
    if facts.ticketids == "ignored":
        detail = (
            f"auto, off: a list read answered tickets it was not asked for ({seen}), so Halo "
            "ignores ticketids here; a backlog is released one job at a time"
        )
        fix = (
            f"nothing to do; after a Halo upgrade, delete {learned_key(connection.name)} in "
            "Redis to have it looked at again (it is forgotten a day after it was last seen)"
        )
        return Check("warn", "batching", detail, fix=fix)
    parts = [f"on: list reads honour ticketids ({seen})"]
    if facts.page_cap is not None:
        parts.append(f"Halo cuts list pages to {facts.page_cap}, so batches hold no more")
    if facts.post_answer == "partial":
        seen_post = _ago(facts.post_answer_ms, now_ms)
        parts.append(
            f"a POST of several tickets was answered with fewer ({seen_post}), so batches "
            "POST job by job"
        )
    elif facts.post_answer == "every":
        parts.append(
            f"POSTs of several tickets answer every ticket ({_ago(facts.post_answer_ms, now_ms)})"
        )
    else:
        parts.append("no POST of several tickets seen yet")
    return Check("ok", "batching", "; ".join(parts))


def _ago(then_ms: int | None, now_ms: int) -> str:
    if then_ms is None:
        return "when is not known"
    seconds = max(0, (now_ms - then_ms) // 1000)
    if seconds < 120:
        return f"seen {seconds} s ago"
    if seconds < 7200:
        return f"seen {seconds // 60} min ago"
    return f"seen {seconds // 3600} h ago"
