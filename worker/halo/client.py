"""Halo's REST API as the worker uses it: the process's clients, and one job's `HaloClient`.

`HaloClients` lives once per process and owns the one `httpx.Client`, the token source and
the cache signer of each connection, and the rate budget; `HaloClient` is one job's view of
one connection and counts the requests that job made. A `HaloClient` is its session, the one
request choke point (`worker.halo.session`), with the ticket endpoints (`worker.halo.tickets`)
and the lookup lists (`worker.halo.lists`) on top; what each answer means is
`worker.halo.errors`'s to say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from worker.connections import Connection
from worker.errors import HaloRateLimited, UnknownConnection
from worker.halo.auth import TokenSource
from worker.halo.cache import Cache, MemoryCache
from worker.halo.lists import LookupEndpoints
from worker.halo.route import ApiRoutes
from worker.halo.session import SentRequest
from worker.halo.signing import CacheSigner
from worker.halo.tickets import ListRead, Posted, Ticket, TicketEndpoints

__all__ = [
    "Budget",
    "HaloClient",
    "HaloClients",
    "ListRead",
    "Posted",
    "Rider",
    "SentRequest",
    "Ticket",
    "Timeouts",
    "Unmetered",
]

log = logging.getLogger("halo.client")

_USER_AGENT: Final = "halo-update-worker/0.1"


class Rider(Protocol):
    """A write that must be durable before the next request goes out (a write journal's note
    before its POST: `worker.update.note_before_post`). A budget may write it in the same
    call as the request's grant, only on a grant; otherwise it is written alone first."""

    def write(self) -> None:
        """Write it alone; returns once it is durable."""
        ...


class Budget(Protocol):
    """The shared rate governor's face towards the client."""

    def acquire(self, connection: Connection, riders: Sequence[Rider] = ()) -> str | None:
        """Take budget for one request; returns the grant's handle for `settle`. `riders`
        are written before it returns, on a grant (in the same call when the budget can).

        Raises:
            HaloRateLimited: no budget now; `retry_after_s` says when there will be.
        """
        ...

    def spend_prepaid(self, connection: Connection) -> str | None:
        """A request already paid for (a released batch's) is sent now; returns its handle."""
        ...

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        """The request of `grant` ended `elapsed_s` after its budget was asked for."""
        ...

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        """Learn from a 429: pause the connection and lower its rate if Halo stated one."""
        ...


class Unmetered:
    """A `Budget` that never refuses: for tools and tests that run one job at a time."""

    def acquire(self, connection: Connection, riders: Sequence[Rider] = ()) -> str | None:
        del connection
        for rider in riders:
            rider.write()
        return None

    def spend_prepaid(self, connection: Connection) -> str | None:
        del connection
        return None

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        del connection, grant, elapsed_s

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        del connection, error


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits in seconds; a job's deadline can shorten them further."""

    connect_s: float = 5.0
    read_s: float = 30.0
    lookup_ttl_s: float = 300.0
    token_refresh_margin_s: float = 120.0


class HaloClients:
    """The process's Halo access: one HTTP pool, one token source per connection."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        *,
        timeouts: Timeouts | None = None,
        cache: Cache | None = None,
        budget: Budget | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 300,
    ) -> None:
        self.connections = dict(connections)
        self.timeouts = timeouts or Timeouts()
        self.cache: Cache = cache or MemoryCache()
        # A few seconds' copy of the shared lookup lists in this process, so that each job does
        # not read them from the shared cache again; a miss still refreshes from Halo.
        self.local = MemoryCache()
        self.budget: Budget = budget or Unmetered()
        # Whether each connection's url leads to Halo's API (see `worker.halo.route`).
        self.routes = ApiRoutes(self.cache)
        self._tokens = {
            name: TokenSource(
                connection, self.cache, refresh_margin_s=self.timeouts.token_refresh_margin_s
            )
            for name, connection in self.connections.items()
        }
        self._signers = {name: CacheSigner(c) for name, c in self.connections.items()}
        # Cache keys already reported as holding an entry that fails its check: logged once each.
        self._rejected: set[str] = set()
        # One client for every connection: httpx pools per host, and is safe across threads.
        self.http = httpx.Client(
            transport=transport,
            headers={"User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(self.timeouts.read_s, connect=self.timeouts.connect_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )
        # Per connection, a token Halo refused (401) although it had just been issued: a
        # permission problem, which another token would not cure. A job that meets a 401 with
        # it fails at once instead of asking for yet another token (no refresh loop).
        self.refused_tokens: dict[str, str] = {}
        # Called after every request sent (metrics); must be quick and thread-safe.
        self.on_request: Callable[[SentRequest], None] | None = None

    def signer(self, connection: Connection) -> CacheSigner:
        """The signer binding `connection`'s cached lookup lists to its secret."""
        return self._signers[connection.name]

    def shared(self, connection: Connection, key: str) -> str | None:
        """A lookup list from the shared cache, if present, signed under the connection's
        secret and not past its signed expiry; an entry that fails the check is as good as
        absent (and logged once per key)."""
        stored = self.cache.get(key)
        if stored is None:
            return None
        value = self.signer(connection).verify(key, stored, now_s=time.time())
        if value is None and key not in self._rejected:
            self._rejected.add(key)
            log.warning(
                "shared cache: a lookup list failed its signature check (or is past its signed "
                "expiry) and is fetched again "
                "(expected once after an upgrade or a secret rotation; otherwise something "
                "other than the workers wrote to Redis)",
                extra={"connection": connection.name, "cache_key": key},
            )
        return value

    def for_job(
        self, connection: str, *, deadline_s: float | None = None, prepaid: int = 0
    ) -> HaloClient:
        """A client for one job (or one batch of jobs).

        Args:
            connection: the job's connection name.
            deadline_s: `time.monotonic()` value after which the job sends nothing more.
            prepaid: requests whose budget was already granted (a released batch's).

        Raises:
            UnknownConnection: no connection of that name is configured.
        """
        try:
            conn = self.connections[connection]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise UnknownConnection(
                f"connection {connection!r} is not configured on the workers (configured: {known})",
                field="connection",
            ) from None
        return HaloClient(
            self, conn, self._tokens[connection], deadline_s=deadline_s, prepaid=prepaid
        )

    def close(self) -> None:
        """Close the HTTP pool."""
        self.http.close()


class HaloClient(TicketEndpoints, LookupEndpoints):
    """One job's requests to one Halo connection: tickets and lookup lists, every request
    through the job's session (`worker.halo.session.JobSession`). Not shared between threads."""
