"""Where tokens and lookup lists are kept: one process (`MemoryCache`) or the whole fleet.

The Redis implementation (`worker.sharedcache.RedisCache`) has the same four operations, so
the Halo client neither knows nor cares whether its cache is shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Cache(Protocol):
    """A small string cache with expiry and a named lock, safe to share between threads."""

    def get(self, key: str) -> str | None:
        """The value, or None when absent or expired."""
        ...

    def set(self, key: str, value: str, ttl_s: float) -> None:
        """Store a value that expires after `ttl_s` seconds."""
        ...

    def delete(self, key: str, *, if_value: str | None = None) -> None:
        """Remove a key; with `if_value`, only while it still holds that value."""
        ...

    def lock(self, key: str, *, ttl_s: float, wait_s: float) -> AbstractContextManager[bool]:
        """A context manager yielding whether the lock was taken within `wait_s` seconds.

        The lock expires after `ttl_s` so a holder that dies cannot block others for good.
        """
        ...


class MemoryCache:
    """A `Cache` for one process: a dict with expiry times and per-key locks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, key: str) -> str | None:
        with self._guard:
            entry = self._values.get(key)
            if entry is None or entry[1] <= self._clock():
                self._values.pop(key, None)
                return None
            return entry[0]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._guard:
            self._values[key] = (value, self._clock() + ttl_s)

    def delete(self, key: str, *, if_value: str | None = None) -> None:
        with self._guard:
            entry = self._values.get(key)
            if entry is not None and (if_value is None or entry[0] == if_value):
                del self._values[key]

    @contextmanager
    def lock(self, key: str, *, ttl_s: float, wait_s: float) -> Iterator[bool]:
        # A thread cannot die while holding the lock without its process dying too, so `ttl_s`
        # has no work to do in one process.
        del ttl_s
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        held = lock.acquire(timeout=wait_s) if wait_s > 0 else lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()
