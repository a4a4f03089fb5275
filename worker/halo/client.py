"""Halo's REST API as the worker uses it: one request choke point, auth, reads, the update.

`HaloClients` lives once per process and owns the one `httpx.Client`; `HaloClient` is one job's
view of one connection and counts the requests that job made. Every request, token requests
included, passes through `HaloClient._send`, which checks the job's deadline, takes rate budget,
counts, and turns transport failures into retryable errors. Auth is done there too, rather than
in an `httpx.Auth` flow, so that a refresh-and-retry is counted and budgeted like any request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

from worker.connections import Connection
from worker.errors import (
    HaloAuthFailed,
    HaloRateLimited,
    HaloUnavailable,
    HaloUnexpectedResponse,
    TicketNotFound,
    UnknownConnection,
)
from worker.halo.auth import AccessToken, TokenSource, token_from_answer
from worker.halo.cache import Cache, MemoryCache
from worker.halo.errors import error_from_response, is_expired_token_answer, summarize_body
from worker.halo.lookups import LookupKind, as_int, unwrap_records

Ticket = dict[str, Any]
_USER_AGENT: Final = "halo-update-worker/0.1"
_LOCAL_LOOKUP_S: Final = 10.0
_LOOKUP_PATHS: Final[dict[str, str]] = {
    "status": "/Status",
    "priority": "/Priority",
    "agent": "/Agent",
    "team": "/Team",
}


class Budget(Protocol):
    """The shared rate governor's face towards the client."""

    def acquire(self, connection: Connection) -> str | None:
        """Take budget for one request; returns the grant's handle for `settle`.

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

    def acquire(self, connection: Connection) -> str | None:
        del connection
        return None

    def spend_prepaid(self, connection: Connection) -> str | None:
        del connection
        return None

    def settle(self, connection: Connection, grant: str | None, elapsed_s: float) -> None:
        del connection, grant, elapsed_s

    def observe_rate_limited(self, connection: Connection, error: HaloRateLimited) -> None:
        del connection, error


@dataclass(frozen=True)
class SentRequest:
    """One request, as an observer (metrics) sees it: no URL, header or body."""

    connection: str
    method: str
    endpoint: str  # "token" (the token request) or "api"
    status: str  # the HTTP status code, or "timeout" / "error" when Halo gave no answer
    duration_s: float


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
        self._tokens = {
            name: TokenSource(
                connection, self.cache, refresh_margin_s=self.timeouts.token_refresh_margin_s
            )
            for name, connection in self.connections.items()
        }
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
        # Called after every request sent (metrics); must be quick and thread-safe.
        self.on_request: Callable[[SentRequest], None] | None = None

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


class HaloClient:
    """One job's requests to one Halo connection. Not shared between threads."""

    def __init__(
        self,
        clients: HaloClients,
        connection: Connection,
        tokens: TokenSource,
        *,
        deadline_s: float | None = None,
        prepaid: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.requests_made = 0
        self._prepaid = prepaid
        self._clients = clients
        self._tokens = tokens
        self._deadline_s = deadline_s
        self._clock = clock

    # -- tickets -----------------------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket:
        """Read one ticket, with its `*_name` labels and details.

        Raises:
            TicketNotFound: Halo answered 404.
            HaloUnexpectedResponse: the answer is not that ticket.
        """
        what = f"GET /api/Tickets/{ticket_id}"
        response = self._call(
            "GET",
            f"/Tickets/{ticket_id}",
            params={"includedetails": "true", "nocache": "true"},
            not_found=lambda: TicketNotFound(
                f"Halo has no ticket {ticket_id} on connection {self.connection.name!r}",
                field="ticket_id",
                http_status=404,
            ),
        )
        ticket = _json(response, what)
        if not isinstance(ticket, dict) or _ticket_id(ticket) != ticket_id:
            raise HaloUnexpectedResponse(
                f"{what} answered another ticket or no ticket: {summarize_body(response.text)}",
                http_status=response.status_code,
            )
        return ticket

    def get_tickets(self, ticket_ids: Sequence[int]) -> dict[int, Ticket]:
        """Read several tickets in one request; ids Halo does not have are absent.

        List reads carry fewer columns than `get_ticket` (no `*_name` labels).
        """
        ids = ",".join(str(i) for i in ticket_ids)
        what = "GET /api/Tickets?ticketids=..."
        response = self._call(
            "GET", "/Tickets", params={"ticketids": ids, "includedetails": "true"}
        )
        tickets = unwrap_records(_json(response, what), "tickets")
        wanted = set(ticket_ids)
        return {tid: ticket for ticket in tickets if (tid := _ticket_id(ticket)) in wanted and tid}

    def update_tickets(self, updates: Sequence[Mapping[str, Any]]) -> dict[int, Ticket]:
        """POST updates of existing tickets; returns the saved tickets by id.

        Every element must carry the positive `id` of a ticket known to exist: Halo creates a
        ticket for an element without one (FACTS, Update).

        Raises:
            ValueError: an element has no positive integer id (a bug, never sent).
            HaloUnexpectedResponse: the answer is for other ticket ids than those sent.
        """
        ids = [_ticket_id(update) for update in updates]
        if not ids or any(tid is None or tid <= 0 for tid in ids):
            raise ValueError("every update must carry the positive id of an existing ticket")
        what = "POST /api/Tickets"
        response = self._call("POST", "/Tickets", body=list(updates))
        if not response.content.strip():
            # Some Halo builds answer 201 with no body: read back what was saved.
            return {tid: self.get_ticket(tid) for tid in ids if tid is not None}
        answered = _json(response, what)
        saved = [answered] if isinstance(answered, dict) and "id" in answered else None
        by_id = {_ticket_id(t): t for t in (saved or unwrap_records(answered, "tickets"))}
        if set(by_id) != set(ids):
            raise HaloUnexpectedResponse(
                f"{what} for ticket(s) {sorted(i for i in ids if i)} was answered for "
                f"ticket(s) {sorted(str(i) for i in by_id)}: the update may have gone elsewhere",
                http_status=response.status_code,
            )
        return {tid: ticket for tid, ticket in by_id.items() if tid is not None}

    # -- lookups -----------------------------------------------------------------------------

    def lookup(
        self, kind: LookupKind, *, sla_id: int | None = None, fresh: bool = False
    ) -> tuple[list[dict[str, Any]], bool]:
        """A lookup list (statuses, priorities of an SLA, agents, teams), cached per connection.

        Args:
            kind: which list.
            sla_id: the SLA whose priorities to list; required for priorities.
            fresh: skip the cache (after a name missed, before failing it).

        Returns:
            The records, and whether they came from the cache.
        """
        key = f"halo:lookup:{self.connection.name}:{kind}"
        params: dict[str, str] = {}
        if kind == "priority":
            key += f":{sla_id}"
            # A ticket without an SLA lists every SLA's priorities; never send "slaid=None".
            params = {"slaid": str(sla_id)} if sla_id is not None else {}
        local = self._clients.local
        if not fresh and (cached := local.get(key) or self._clients.cache.get(key)) is not None:
            local.set(key, cached, _LOCAL_LOOKUP_S)
            records: list[dict[str, Any]] = json.loads(cached)
            return records, True
        path = _LOOKUP_PATHS[kind]
        response = self._call("GET", path, params=params)
        records = unwrap_records(_json(response, f"GET /api{path}"), kind)
        encoded = json.dumps(records)
        self._clients.cache.set(key, encoded, self._clients.timeouts.lookup_ttl_s)
        self._clients.local.set(key, encoded, _LOCAL_LOOKUP_S)
        return records, False

    # -- the choke point ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        not_found: Callable[[], Exception] | None = None,
    ) -> httpx.Response:
        """An authenticated API call; refreshes the token once when Halo says it expired."""
        what = f"{method} /api{path}"
        token = self._tokens.get(self._fetch_token)
        response = self._send(method, self.connection.api_url + path, token, params, body)
        if is_expired_token_answer(response.status_code, response.text):
            token = self._tokens.refresh(self._fetch_token, stale=token)
            response = self._send(method, self.connection.api_url + path, token, params, body)
            if is_expired_token_answer(response.status_code, response.text):
                raise HaloAuthFailed(
                    f"connection {self.connection.name!r}: Halo refused a freshly issued token "
                    f"on {what} ({response.status_code}): check that the API application's "
                    "agent is active and "
                    f"that scope {self.connection.scope!r} covers tickets",
                    http_status=response.status_code,
                )
        if response.is_success:
            return response
        if response.status_code == 404 and not_found is not None:
            raise not_found()
        error = error_from_response(
            response.status_code, response.text, response.headers, what=what, now_s=time.time()
        )
        if isinstance(error, HaloRateLimited):
            self._clients.budget.observe_rate_limited(self.connection, error)
        raise error

    def _fetch_token(self) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.connection.client_id,
            "client_secret": self.connection.client_secret.get_secret_value(),
            "scope": self.connection.scope,
        }
        params = {"tenant": self.connection.tenant} if self.connection.tenant else None
        response = self._send("POST", self.connection.token_url, None, params, None, form=form)
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise error_from_response(
                response.status_code,
                response.text,
                response.headers,
                what="POST /auth/token",
                now_s=time.time(),
            )
        return token_from_answer(response, self.connection)

    def _send(
        self,
        method: str,
        url: str,
        token: str | None,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        form: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one HTTP request: deadline, budget, count, and transport errors as retryable."""
        timeouts = self._clients.timeouts
        remaining_s = timeouts.read_s
        if self._deadline_s is not None:
            remaining_s = min(remaining_s, self._deadline_s - self._clock())
            if remaining_s <= 0:
                raise HaloUnavailable(
                    f"the job's deadline passed before {method} {_path(url)} could be sent"
                )
        budget = self._clients.budget
        asked_s = time.monotonic()
        if self._prepaid > 0:
            self._prepaid -= 1
            grant = budget.spend_prepaid(self.connection)
        else:
            grant = budget.acquire(self.connection)
        self.requests_made += 1
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        sent_s = time.monotonic()
        try:
            response = self._clients.http.request(
                method,
                url,
                params=params,
                json=body,
                data=form,
                headers=headers,
                timeout=httpx.Timeout(remaining_s, connect=min(timeouts.connect_s, remaining_s)),
            )
        except httpx.TimeoutException as exc:
            self._observe(method, token, "timeout", sent_s)
            budget.settle(self.connection, grant, time.monotonic() - asked_s)
            raise HaloUnavailable(
                f"Halo did not answer {method} {_path(url)} in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            self._observe(method, token, "error", sent_s)
            budget.settle(self.connection, grant, time.monotonic() - asked_s)
            raise HaloUnavailable(
                f"could not reach Halo for {method} {_path(url)} ({type(exc).__name__}: {exc})"
            ) from None
        self._observe(method, token, str(response.status_code), sent_s)
        # Halo counted the request somewhere between the grant and now: a late one must not
        # leave the governor's log before it leaves Halo's window (`worker.governor`).
        budget.settle(self.connection, grant, time.monotonic() - asked_s)
        return response

    def _observe(self, method: str, token: str | None, status: str, sent_s: float) -> None:
        if (hook := self._clients.on_request) is not None:
            endpoint = "api" if token else "token"
            duration_s = time.monotonic() - sent_s
            hook(SentRequest(self.connection.name, method, endpoint, status, duration_s))


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        # A 2xx whose body does not parse was cut short on the way (proxy, reset): the same
        # request may well succeed again, and re-sending a read or an update is harmless.
        raise HaloUnavailable(
            f"{what} answered {response.status_code} with a body that is not valid JSON "
            f"(truncated?): {summarize_body(response.text)}",
            http_status=response.status_code,
        ) from None


def _ticket_id(ticket: Mapping[str, Any]) -> int | None:
    return as_int(ticket.get("id"))


def _path(url: str) -> str:
    return httpx.URL(url).path
