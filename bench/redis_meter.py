"""What Redis did during a measured span: round trips, commands, and its own CPU.

Redis counts, for the whole server, the read events it served (`total_reads_processed`: one per
request or pipeline a client sent, so one per round trip), the calls of every command
(`INFO commandstats`, commands run inside Lua scripts included) and its CPU time (`INFO cpu`).
A delta of these over a span in which only the measured processes and the benchmark's own
polling talk to Redis is what those processes cost it, once the polling (counted by
`RedisMeter`, one round trip and one command per poll) is taken out.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

# The commands shown by name in a report; the rest are summed as "other".
_TOP_COMMANDS = 12


@dataclass(frozen=True)
class RedisSample:
    """Redis's counters at one moment."""

    at_s: float
    reads: int
    commands: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0


class RedisMeter:
    """Samples a Redis server's counters through its own connection, counting its own calls.

    `own_calls(command)` records the benchmark's polling between two samples, so that the
    delta holds only what the measured processes did.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._own: Counter[str] = Counter()

    def own_call(self, command: str) -> None:
        """The benchmark made one round trip of `command` (e.g. ``"xlen"``) to this Redis."""
        self._own[command] += 1

    def sample(self) -> RedisSample:
        """Take a sample (two round trips of INFO, counted as the benchmark's own)."""
        stats = self._redis.info("stats")
        cpu = self._redis.info("cpu")
        commandstats = self._redis.info("commandstats")
        self._own["info"] += 3
        commands = Counter(
            {
                name.removeprefix("cmdstat_"): int(entry["calls"])
                for name, entry in commandstats.items()
                if isinstance(entry, dict)
            }
        )
        return RedisSample(
            at_s=time.monotonic(),
            reads=int(stats["total_reads_processed"]),
            commands=commands,
            cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        )

    def since(self, before: RedisSample, jobs: int) -> dict[str, Any]:
        """What the measured processes cost Redis since `before`, per job and in all.

        The benchmark's own calls since `before` are taken out, then forgotten.
        """
        after = self.sample()
        own = self._own
        self._own = Counter()
        own_trips = sum(own.values())
        reads = after.reads - before.reads - own_trips
        commands = after.commands - before.commands
        commands.subtract(own)
        commands = +commands  # drops what the subtraction left at zero or below
        seconds = max(after.at_s - before.at_s, 1e-9)
        cpu_s = after.cpu_s - before.cpu_s
        top = dict(commands.most_common(_TOP_COMMANDS))
        other = sum(commands.values()) - sum(top.values())
        per_job = {name: round(n / jobs, 2) for name, n in top.items()}
        if other:
            per_job["other"] = round(other / jobs, 2)
        return {
            "round_trips_per_job": round(reads / jobs, 2),
            "commands_per_job": round(sum(commands.values()) / jobs, 2),
            "commands_per_job_by_name": per_job,
            "redis_cpu_ms_per_job": round(cpu_s / jobs * 1000, 3),
            # 1.0: Redis's one main thread was busy all along (its ceiling).
            "redis_cores_busy": round(cpu_s / seconds, 2),
        }
