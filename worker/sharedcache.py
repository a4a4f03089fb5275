"""A `worker.halo.cache.Cache` in Redis, so the fleet shares one token and one set of lookup
lists per connection: one token request per connection per token lifetime, not per process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import redis

from worker.keys import lock_key as _lock_key

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DELETE_IF = _RELEASE
# How often a worker waiting for another's lock looks again.
_LOCK_POLL_S: Final = 0.05


class RedisCache:
    """Strings with expiry and named locks in Redis (SET NX PX)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._release = client.register_script(_RELEASE)
        self._delete_if = client.register_script(_DELETE_IF)

    def get(self, key: str) -> str | None:
        value = self._redis.get(key)
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl_s: float) -> None:
        self._redis.set(key, value, px=max(1, int(ttl_s * 1000)))

    def delete(self, key: str, *, if_value: str | None = None) -> None:
        if if_value is None:
            self._redis.delete(key)
        else:
            self._delete_if(keys=[key], args=[if_value])

    @contextmanager
    def lock(self, key: str, *, ttl_s: float, wait_s: float) -> Iterator[bool]:
        lock_key = _lock_key(key)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        held = bool(self._redis.set(lock_key, token, nx=True, px=int(ttl_s * 1000)))
        while not held and time.monotonic() < deadline:
            time.sleep(_LOCK_POLL_S)
            held = bool(self._redis.set(lock_key, token, nx=True, px=int(ttl_s * 1000)))
        try:
            yield held
        finally:
            if held:
                self._release(keys=[lock_key], args=[token])
