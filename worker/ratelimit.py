"""A rate limit, `requests` per rolling `window_s`, and the one parser of its two spellings.

The connections file writes it ``rate_limit = "300/300s"`` (also ``"300/5m"``, ``"10000/1h"``);
Halo states it in a 429's text, "Rate Limit Reached - 300 Requests per rolling 5 minute
window". Both spell a count and a window with a unit, and both go through the same units and
the same rule: no zero count, no zero window.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

_CONFIGURED: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_STATED: Final = re.compile(
    r"(\d+)\s+requests?\s+per\s+rolling\s+(\d+(?:\.\d+)?)\s*(minute|second|hour)", re.IGNORECASE
)
_UNIT_S: Final = {
    "s": 1.0,
    "second": 1.0,
    "m": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
# Halo's text comes first in a 429 body; a long body (an HTML page) is not searched whole.
_STATED_SEARCH_CHARS: Final = 2000


class RateLimit(NamedTuple):
    """`requests` per rolling `window_s` seconds. A tuple, so ``(requests, window_s)`` unpacks."""

    requests: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse the connections file's ``"300/300s"``, ``"300/5m"`` or ``"10000/1h"``.

        Raises:
            ValueError: the text is not of that form, or a number is zero.
        """
        limit = _limit(_CONFIGURED.match(text))
        if limit is None:
            raise ValueError(f"{text!r} is not a rate like '300/300s' (requests/window, s|m|h)")
        return limit

    @classmethod
    def stated_by_halo(cls, body: str) -> RateLimit | None:
        """The limit a 429's text states ("300 Requests per rolling 5 minute window" is
        ``RateLimit(300, 300.0)``), or None when the text states none."""
        return _limit(_STATED.search(body[:_STATED_SEARCH_CHARS]))

    def __str__(self) -> str:
        return f"{self.requests}/{self.window_s:g}s"


def _limit(match: re.Match[str] | None) -> RateLimit | None:
    if match is None:
        return None
    requests, window_s = int(match[1]), float(match[2]) * _UNIT_S[match[3].lower()]
    if requests == 0 or window_s == 0:
        return None
    return RateLimit(requests, window_s)
