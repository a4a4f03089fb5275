"""Halo's per-tenant rolling-window rate limit.

Halo counts every request of a tenant, token requests included, over a rolling window and
answers 429 beyond the limit. Refused requests are not counted, so a client that waits gets in
again once the oldest counted request leaves the window.

Not thread-safe on its own: `FakeHalo` holds its lock around every call.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, None: 1}


@dataclass(frozen=True)
class RateLimit:
    """At most `max_requests` in any `window_s` seconds."""

    max_requests: int
    window_s: float

    @classmethod
    def parse(cls, spec: str) -> RateLimit:
        """Parse `"N/Ms"` (also `"N/Mm"`, `"N/Mh"`, or `"N/M"` meaning seconds).

        Raises:
            ValueError: the text is not of that form, or either number is zero.
        """
        match = _SPEC.match(spec)
        if match is None:
            raise ValueError(f"rate limit {spec!r} is not of the form N/Ms, e.g. 300/300s")
        count, amount, unit = match.groups()
        limit = cls(max_requests=int(count), window_s=float(amount) * _UNIT_S[unit])
        if limit.max_requests <= 0 or limit.window_s <= 0:
            raise ValueError(f"rate limit {spec!r} must allow at least one request per window")
        return limit

    def message(self) -> str:
        """The 429 body text, in Halo's words."""
        if self.window_s % 60 == 0:
            window = f"{int(self.window_s // 60)} minute"
        else:
            window = f"{self.window_s:g} second"
        return f"Rate Limit Reached - {self.max_requests} Requests per rolling {window} window"


class RollingWindow:
    """Counts admitted requests over the last `limit.window_s` seconds."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        """Start with an empty window. `clock` is a monotonic time source in seconds."""
        self.limit = limit
        self._clock = clock
        self._admitted: collections.deque[float] = collections.deque()

    def admit(self) -> int | None:
        """Count one request if the window has room.

        Returns:
            None if admitted; otherwise the whole seconds (at least 1) until the oldest counted
            request leaves the window, which is what a `Retry-After` header would carry.
        """
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - self.limit.window_s:
            self._admitted.popleft()
        if len(self._admitted) < self.limit.max_requests:
            self._admitted.append(now)
            return None
        wait_s = self._admitted[0] + self.limit.window_s - now
        return max(1, math.ceil(wait_s))

    def clear(self) -> None:
        """Forget every counted request."""
        self._admitted.clear()
