"""Whether Halo's API answers at a connection's url: what lets a 404 mean "no such ticket".

A 404 on `GET /api/Tickets/{id}` means the ticket is missing only if `/api` really is Halo's
API. When the url leads somewhere else (a host that is not the tenant's API, a proxy that does
not pass `/api` on) every path answers 404, and without this verdict every job would end as a
permanent `ticket_not_found` while the fault is the connection's.

The verdict is learned cheaply: any successful read of the connection's API proves the route
(so a healthy connection never spends a request on it), and only a 404 that arrives without
that proof sends `GET /api/Status` (FACTS, Lookups: an endpoint every tenant has) to decide.
A route that answers is then trusted for `ANSWERS_TTL_S`; one that does not, for
`MISSING_TTL_S`, during which jobs on the connection fail at once without a request.

Verdicts are kept in this process and in the shared cache for the fleet, under
``halo:learned:<connection>:route`` (JSON: the API url checked, the verdict, and until when it
holds, Unix seconds). A verdict for another url (the file was corrected) is ignored.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from worker.connections import Connection
from worker.errors import NoHaloApi
from worker.halo.cache import Cache
from worker.keys import route_key

# Proof from live traffic: renewed by each process's first successful read after it lapses,
# so it costs nothing while the connection works; it bounds how long a route that broke
# later (a proxy change) could still let a 404 read as "no such ticket".
ANSWERS_TTL_S: Final = 3600.0
# Long enough that a burst of jobs on a wrong url fails without each asking Halo again, short
# enough that a fix on the Halo or proxy side (the url unchanged) is seen within a minute.
MISSING_TTL_S: Final = 60.0


@dataclass(frozen=True)
class _Verdict:
    answers: bool
    until_s: float


class ApiRoutes:
    """The route verdicts of one process, backed by a cache the fleet may share."""

    def __init__(self, cache: Cache, clock: Callable[[], float] = time.time) -> None:
        self._cache = cache
        self._clock = clock
        self._memo: dict[str, _Verdict] = {}
        self._guard = threading.Lock()
        self._checks: dict[str, threading.Lock] = {}

    def verdict(self, connection: Connection) -> bool | None:
        """True: Halo's API answers at the url; False: it answered 404; None: not known."""
        now = self._clock()
        memo = self._memo.get(connection.name)
        if memo is not None and memo.until_s > now:
            return memo.answers
        shared = _parse(self._cache.get(_key(connection)), connection)
        if shared is None or shared.until_s <= now:
            return None
        self._memo[connection.name] = shared
        return shared.answers

    def record(self, connection: Connection, *, answers: bool) -> None:
        """Keep a verdict, here and for the fleet."""
        ttl_s = ANSWERS_TTL_S if answers else MISSING_TTL_S
        verdict = _Verdict(answers, self._clock() + ttl_s)
        self._memo[connection.name] = verdict
        value = {"api_url": connection.api_url, "answers": answers, "until_s": verdict.until_s}
        self._cache.set(_key(connection), json.dumps(value), ttl_s)

    def answered(self, connection: Connection) -> None:
        """A read of the connection's API succeeded: proof of the route, kept once per
        `ANSWERS_TTL_S` (a dict look-up the rest of the time)."""
        memo = self._memo.get(connection.name)
        if memo is None or not memo.answers or memo.until_s <= self._clock():
            self.record(connection, answers=True)

    def checking(self, connection: Connection) -> threading.Lock:
        """Held while this process checks the route, so that jobs meeting 404s at once wait
        for one check instead of each sending their own."""
        with self._guard:
            return self._checks.setdefault(connection.name, threading.Lock())


def no_api_error(connection: Connection) -> NoHaloApi:
    """The error every job on a connection whose url does not lead to Halo's API fails with."""
    return NoHaloApi(
        f"connection {connection.name!r}: Halo's API is not at url {connection.url}: GET "
        f"{connection.api_url}/Status answered 404, so a 404 on a ticket cannot mean the ticket "
        "is missing. Set url to Halo's web address or the Resource Server URL from Halo's API "
        "settings (https://<tenant>.halopsa.com/api), restart the workers, and replay the "
        "failed jobs",
        http_status=404,
    )


def _key(connection: Connection) -> str:
    return route_key(connection.name)


def _parse(raw: str | None, connection: Connection) -> _Verdict | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if data["api_url"] != connection.api_url or not isinstance(data["answers"], bool):
            return None
        return _Verdict(data["answers"], float(data["until_s"]))
    except (ValueError, KeyError, TypeError):
        # Written by another version, or damaged: as good as absent.
        return None
