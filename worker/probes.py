"""What a metrics scrape reads from Redis, each read bounded whatever the data holds.

The metrics endpoint answers anyone who can reach it, and whoever can write to the broker can
put any message on the queue (the worker refuses oversized ones only when it takes them). So
a scrape never fetches more than `HEAD_MAX_BYTES` of a queue's head message: a Lua script
returns the message only when it is small enough to be one the worker would run, and its
length otherwise. Redis's own copy of the item inside the script is a memory copy on the
server; nothing of that size crosses the network or is decoded in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

import redis

from worker.models import MAX_JOB_BYTES

# A kombu message carrying one job: the job (at most MAX_JOB_BYTES), base64 adds a third, plus
# Celery's headers and the job's redacted view for events. Four times the job bound holds all
# of that with room to spare; a released batch larger than this is not dated (see `QueueHead`).
HEAD_MAX_BYTES: Final = 4 * MAX_JOB_BYTES

# KEYS: the queue. ARGV: the largest item returned whole.
# Returns nil (empty queue), the item, or {its length} when it is longer than ARGV[1].
_HEAD = """
local item = redis.call('LINDEX', KEYS[1], -1)
if not item then return nil end
if string.len(item) > tonumber(ARGV[1]) then return {string.len(item)} end
return item
"""


@dataclass(frozen=True)
class Head:
    """The message at the head of a queue: its text, or only its length when too long."""

    text: str | None
    length: int


class QueueHead:
    """Reads the next message a queue will deliver, within a size bound."""

    def __init__(self, client: redis.Redis, *, max_bytes: int = HEAD_MAX_BYTES) -> None:
        self._script = client.register_script(_HEAD)
        self._max_bytes = max_bytes

    def read(self, queue: str) -> Head | None:
        """The head message of `queue` (publishing is LPUSH, consuming BRPOP: its last item).

        Returns:
            None for an empty queue; a `Head` whose `text` is None when the message is longer
            than the bound, so the caller never decodes it.

        Raises:
            redis.RedisError: Redis is unreachable or refused the script.
        """
        answer = self._script(keys=[queue], args=[self._max_bytes])
        if answer is None:
            return None
        if isinstance(answer, list):
            return Head(None, int(answer[0]))
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        return Head(text, len(text))


@dataclass(frozen=True)
class Memory:
    """A Redis server's memory: what it uses, and its `maxmemory` (0: no limit set)."""

    used_bytes: int
    max_bytes: int


def memory_of(client: redis.Redis) -> Memory | None:
    """`INFO memory`, a constant-cost command; None when the server refuses it (an ACL or a
    managed Redis may), so the rest of a scrape goes on without it.

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis is unreachable.
    """
    try:
        info = cast(dict[str, object], client.info("memory"))
    except redis.ResponseError:
        return None
    return Memory(_int(info.get("used_memory")), _int(info.get("maxmemory")))


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else 0
